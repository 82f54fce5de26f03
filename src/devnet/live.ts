/**
 * The live devnet producer (`dagsync serve --live`): continues the deterministic devnet generator
 * from the store's tip in real time, signs and broadcasts its own blocks, gossips transactions,
 * forms commits by the generator's rule, applies them (the server serves them) and PushCommits to
 * followers. Plugged into `serve` as its producer hook (src/node/serve.ts), so that the node layer
 * never imports the devnet.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { PeerClient } from "../client/index.js";
import { bytesEqual, sha256 } from "../core/index.js";
import { CommitRefSchema } from "../gen/dagsync/v1/types_pb.js";
import type { Producer, ProducerContext, RunningProducer } from "../node/serve.js";
import type { ApplyUnit } from "../store/index.js";
import { DevnetChain, type DevnetSnapshot } from "./chain.js";

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
  /** Source address of the PushCommit connections (default: the OS's choice). */
  readonly localAddress?: string;
}

/** The live devnet producer of one validator, as a `serve` producer hook. */
export function devnetProducer(live: LiveConfig): Producer {
  return (context) => startLiveProducer(live, context);
}

async function startLiveProducer(
  live: LiveConfig,
  { store, log, gossip, onApplied }: ProducerContext,
): Promise<RunningProducer> {
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
  const followers = live.followers.map(
    (a) =>
      new PeerClient(a, {
        smallCallTimeoutMs: 1000,
        ...(live.localAddress === undefined ? {} : { localAddress: live.localAddress }),
      }),
  );
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
