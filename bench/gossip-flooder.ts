/**
 * The MEMPOOL flooder of bench/gossip.ts, in its own process: an allowed full node that dials the
 * address in argv[2] and publishes distinct 256-byte transactions at FLOOD_FACTOR × the MEMPOOL
 * quota until it is killed. Its own outbound backlog sheds what the stream cannot carry.
 */
import { randomFillSync } from "node:crypto";
import { Ed25519Signer, NativeVerifier } from "../src/crypto/index.js";
import { GossipNode } from "../src/gossip/index.js";
import { silentLogger } from "../src/node/logger.js";
import { benchCommittee, FLOOD_FACTOR, FLOODER_SEED, MEMPOOL_QUOTA_PER_SECOND } from "./gossip.js";

const target = process.argv[2];
if (target === undefined) throw new Error("usage: gossip-flooder.ts HOST:PORT");
const { chain, committee } = benchCommittee();
const node = new GossipNode({
  chainId: chain.chainId,
  networkKey: new Ed25519Signer(FLOODER_SEED),
  committee: () => committee,
  verifier: new NativeVerifier(),
  log: silentLogger(),
});
node.dial(target);

const perSecond = FLOOD_FACTOR * MEMPOOL_QUOTA_PER_SECOND;
const tickMs = 10;
const perTick = Math.ceil((perSecond * tickMs) / 1000);
const tx = new Uint8Array(256);
const timer = setInterval(() => {
  for (let i = 0; i < perTick; i++) node.publishTransaction(randomFillSync(tx).slice());
}, tickMs);

process.once("SIGTERM", () => {
  clearInterval(timer);
  node.stop();
  process.exit(0);
});
