/**
 * `dagsync serve`: a validator serving its store over StateSync and Admin until SIGINT/SIGTERM;
 * optionally with the live channel (`--gossip-listen`) and, on a devnet, producing new rounds in
 * real time (`--live`): it continues the deterministic devnet generator from the store's tip,
 * signs and broadcasts its own blocks, gossips transactions, forms commits by the generator's
 * rule, applies them, serves them and PushCommits to followers.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { PeerClient } from "../client/index.js";
import { bytesEqual, type CommitteeView, sha256, toHex } from "../core/index.js";
import { createVerifier, readKeyFile } from "../crypto/index.js";
import { DevnetChain, type DevnetSnapshot } from "../devnet/chain.js";
import { CommitRefSchema } from "../gen/dagsync/v1/types_pb.js";
import { GossipMetrics, GossipNode } from "../gossip/index.js";
import { SyncServer } from "../server/index.js";
import type { ServerOptionsInput } from "../server/options.js";
import { type ApplyUnit, Store, SubDagFeed } from "../store/index.js";
import { startGossipServer, type TlsFiles } from "./gossip-server.js";
import { startMetricsServer } from "./metrics-http.js";

export interface LiveConfig {
  /** The devnet folder (holds devnet-state.json). */
  readonly devnetDir: string;
  /** This validator's author index. */
  readonly index: number;
  /** Round interval, ms. */
  readonly roundMs: number;
  /** Transactions gossiped per round on MEMPOOL. */
  readonly txsPerRound: number;
  /** Sync addresses to PushCommit to after each new commit. */
  readonly followers: readonly string[];
}

export interface ServeConfig {
  readonly store: string;
  readonly listen: string;
  readonly metrics?: string | undefined;
  readonly log: Logger;
  readonly gossipListen?: string | undefined;
  readonly networkKeyFile?: string | undefined;
  /** Network keys admitted on the gossip port beyond the committee (full nodes). */
  readonly allowKeys?: readonly Uint8Array[] | undefined;
  readonly live?: LiveConfig | undefined;
  readonly tls?: TlsFiles | undefined;
  /** Server limits (admission caps etc.); unset ones keep DEFAULT_SERVER_OPTIONS. */
  readonly serverOptions?: ServerOptionsInput | undefined;
}

export interface RunningService {
  readonly port: number;
  readonly gossipPort: number | undefined;
  stop(): Promise<void>;
}

export async function startServe(config: ServeConfig): Promise<RunningService> {
  const { log } = config;
  const store = await Store.open(config.store, { mustExist: true });
  const cleanup: (() => Promise<void>)[] = [async () => store.close()];
  const stopAll = async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  };
  try {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    // The live producer publishes each applied batch: caught-up subscribers get it from memory.
    // (The server applies its own subscriber limits to each stream.)
    const feed = new SubDagFeed(store);
    const server = new SyncServer({
      store,
      log,
      registry,
      feed,
      tls: config.tls,
      options: config.serverOptions,
    });
    const port = await server.start(config.listen);
    cleanup.push(() => server.stop());
    if (config.metrics !== undefined) {
      const m = await startMetricsServer(registry, config.metrics);
      cleanup.push(m.close);
    }

    let committee: CommitteeView = (await store.getCommittee(store.watermarks.epoch))!;
    let gossip: GossipNode | undefined;
    let gossipPort: number | undefined;
    if (config.gossipListen !== undefined) {
      if (config.networkKeyFile === undefined) throw new Error("--gossip-listen needs --network-key FILE");
      const networkKey = await readKeyFile(config.networkKeyFile);
      gossip = new GossipNode({
        chainId: store.genesis.genesis.chainId,
        networkKey,
        committee: () => committee,
        extraKeys: config.allowKeys,
        verifier: createVerifier("native"),
        log,
        metrics: new GossipMetrics(registry),
        tlsCa: config.tls?.ca,
      });
      const g = await startGossipServer(gossip, config.gossipListen, config.tls);
      gossipPort = g.port;
      cleanup.push(g.stop);
      // Validators dial the members whose key sorts after theirs; the others dial them.
      const mine = toHex(networkKey.publicKey);
      for (const v of committee.validators)
        if (toHex(v.networkKey) > mine && v.gossipAddress !== "") gossip.dial(v.gossipAddress, v.networkKey);
    }

    if (config.live !== undefined) {
      const producer = await startLiveProducer(store, config.live, log, gossip, (units) => {
        feed.publish(units);
      });
      committee = producer.committee;
      cleanup.push(producer.stop);
    }

    const marks = store.watermarks;
    log.info(
      {
        listen: config.listen,
        port,
        gossipPort,
        metrics: config.metrics,
        chain: store.genesis.genesis.chainId,
        commits: `${marks.lowestAvailable}..${marks.highestSynced}`,
        live: config.live !== undefined,
      },
      "serving",
    );
    return {
      port,
      gossipPort,
      async stop() {
        log.info("draining");
        await stopAll();
        log.info("stopped");
      },
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/** The live devnet producer of one validator. */
async function startLiveProducer(
  store: Store,
  live: LiveConfig,
  log: Logger,
  gossip: GossipNode | undefined,
  onApplied: (units: readonly ApplyUnit[]) => void,
): Promise<{ committee: CommitteeView; stop: () => Promise<void> }> {
  let snapshot: DevnetSnapshot;
  const file = join(live.devnetDir, "devnet-state.json");
  try {
    snapshot = JSON.parse(await readFile(file, "utf8")) as DevnetSnapshot;
  } catch {
    throw new Error(
      `--live ${live.devnetDir}: cannot read ${file} (generate the devnet with \`dagsync devnet\`)`,
    );
  }
  const chain = DevnetChain.restore(snapshot);
  chain.freezeEpoch();
  if (!bytesEqual(chain.genesis.digest, store.genesis.digest))
    throw new Error(`--live ${live.devnetDir}: not the devnet of this store`);
  // Replay deterministically up to the store's tip (earlier live runs), checking every digest.
  const tip = store.watermarks.highestSynced;
  let pending: ApplyUnit[] = [];
  while (chain.nextCommitIndex <= tip + 1 && pending.length === 0) {
    for (const c of chain.produceRound()) {
      if (c.index <= tip) {
        const stored = await store.getCommit(c.index);
        if (stored === undefined || !bytesEqual(sha256(stored), c.commitDigest))
          throw new Error(
            `--live: commit ${c.index} in the store differs from the devnet's; regenerate the devnet`,
          );
      } else pending.push(c);
    }
  }
  const followers = live.followers.map((a) => new PeerClient(a, { smallCallTimeoutMs: 1000 }));
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      const certified = [...pending, ...chain.produceRound()];
      pending = [];
      const own = chain.lastRoundBlocks.find((b) => b.author === live.index);
      if (own !== undefined) gossip?.publishBlock(own.bytes);
      for (let i = 0; i < live.txsPerRound; i++) gossip?.publishTransaction(new Uint8Array(randomBytes(128)));
      const fresh = certified.filter((c) => c.index > store.watermarks.highestSynced);
      if (fresh.length > 0) {
        await store.apply(fresh);
        const marks = store.watermarks;
        onApplied(fresh);
        const ref = create(CommitRefSchema, {
          index: BigInt(marks.highestSynced),
          digest: marks.highestSyncedDigest,
        });
        for (const f of followers) f.pushCommit(ref, marks.highestSynced).catch(() => {});
      }
    } catch (e) {
      log.error({ err: e }, "live producer failed a round");
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void tick(), live.roundMs);
  log.info(
    { round: chain.currentRound, next: chain.nextCommitIndex, roundMs: live.roundMs },
    "live devnet producer running",
  );
  return {
    committee: chain.currentCommittee,
    stop: async () => {
      clearInterval(timer);
      while (busy) await new Promise((r) => setTimeout(r, 10));
      for (const f of followers) f.close();
    },
  };
}

/** Runs until SIGINT/SIGTERM, then stops gracefully. A second signal exits at once. */
export function untilSignal(stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const handler = () => {
      if (stopping) process.exit(130);
      stopping = true;
      stop().then(resolve, resolve);
    };
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
  });
}
