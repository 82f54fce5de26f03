/**
 * Shared pieces of the sync engine tests: the in-memory devnet chain, a real LevelDB store in a
 * temporary directory (from genesis or a trusted checkpoint), an engine with small limits, timeout
 * guards, and checks that a store holds exactly a run of the chain and nothing else.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import { sha256, toHex } from "../../src/core/index.js";
import { NativeVerifier } from "../../src/crypto/index.js";
import { DevnetChain, type GeneratedCommit } from "../../src/devnet/chain.js";
import { type Committee, CommitteeSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import { silentLogger } from "../../src/node/logger.js";
import { Store, type TrustedCheckpoint } from "../../src/store/index.js";
import { SyncEngine, type SyncEngineConfig } from "../../src/sync/engine.js";
import type { SyncNetwork } from "../../src/sync/network.js";
import type { SyncOptions } from "../../src/sync/options.js";
import { splitTableKey, withRawStore } from "./raw-store.js";

export interface TestChain {
  readonly chain: DevnetChain;
  readonly commits: GeneratedCommit[];
}

let cached: TestChain | undefined;

/** The 3-epoch devnet chain of the sync tests (120 commits, 40 per epoch), built once. */
export function testChain(): TestChain {
  if (cached === undefined) {
    const chain = new DevnetChain({
      validators: 4,
      epochs: 3,
      commitsPerEpoch: 40,
      txsPerBlock: 2,
      txBytes: 32,
      seed: 11,
    });
    cached = { chain, commits: [...chain.commits()] };
  }
  return cached;
}

export interface TempStore {
  readonly store: Store;
  readonly dir: string;
  /** Closes the store and removes its directory. */
  cleanup(): Promise<void>;
}

/**
 * An empty store of the chain's genesis in a fresh temporary directory, starting from genesis or
 * from a trusted checkpoint.
 */
export async function tempStore(chain: DevnetChain, checkpoint?: TrustedCheckpoint): Promise<TempStore> {
  const dir = await mkdtemp(join(tmpdir(), "dagsync-sync-"));
  const store = await Store.open(join(dir, "store"), { genesis: chain.genesis.bytes, checkpoint });
  return {
    store,
    dir,
    async cleanup() {
      await store.close().catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Small limits, so that the tests exercise many segments, retries and bans quickly. */
export const SMALL_OPTIONS: Partial<SyncOptions> = {
  peerQueryIntervalMs: 50,
  backoffBaseMs: 5,
  backoffMaxMs: 200,
  banDurationMs: 10_000,
  commitsPerRequest: 25,
};

export function makeEngine(
  store: Store,
  network: SyncNetwork,
  peers: SyncEngineConfig["peers"],
  options: Partial<SyncOptions> = {},
  random?: () => number,
  extra: Partial<
    Pick<SyncEngineConfig, "metrics" | "nearTipBlocks" | "now" | "onNeedPeers" | "verifySignatures">
  > = {},
): SyncEngine {
  return new SyncEngine({
    store,
    network,
    peers,
    verifier: new NativeVerifier(),
    log: silentLogger(),
    options: { ...SMALL_OPTIONS, ...options },
    random,
    ...extra,
  });
}

/** A small deterministic PRNG (mulberry32) in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Rejects when `promise` takes longer than `ms`, so that a failing test does not hang. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every few ms until it holds, or fails after `ms`. */
export async function waitFor(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Byte-identical (Buffer or Uint8Array alike), with a readable diff when not. */
export function assertBytes(actual: Uint8Array | undefined, expected: Uint8Array, what: string): void {
  assert.ok(actual !== undefined, `${what}: missing`);
  assert.equal(toHex(actual), toHex(expected), what);
}

/**
 * Same committee, compared by canonical encoding: a committee read back from LevelDB holds Buffers
 * where a generated one holds Uint8Arrays, which deepStrictEqual tells apart.
 */
export function assertSameCommittee(actual: Committee | undefined, expected: Committee, what: string): void {
  assert.ok(actual !== undefined, `${what}: missing`);
  assertBytes(toBinary(CommitteeSchema, actual), toBinary(CommitteeSchema, expected), what);
}

/**
 * The store holds exactly `commits`, a contiguous run of the chain (from 1, or from just after a
 * checkpoint): byte-identical commits with their digests, every block, each epoch's end and next
 * committee, watermarks at the last, and nothing stored below the first. Certifier blocks are
 * stored for the last commit, and wherever stored they are genuine ones of that commit. Returns
 * the number of commits with stored certifier blocks.
 */
export async function assertStoreHoldsChain(
  store: Store,
  commits: readonly GeneratedCommit[],
): Promise<number> {
  const first = commits[0]!;
  const last = commits.at(-1)!;
  assert.equal(store.watermarks.highestSynced, last.index, "highestSynced");
  assertBytes(store.watermarks.highestSyncedDigest, last.commitDigest, "highestSyncedDigest");
  assert.equal(store.watermarks.lowestAvailable, first.index, "lowestAvailable");
  if (first.index > 1)
    assert.equal(await store.getCommit(first.index - 1), undefined, "a commit below the run");
  assert.equal(await store.getCommit(last.index + 1), undefined, "a commit above the run");
  const stored = await store.getCommits(first.index, last.index);
  assert.equal(stored.length, commits.length, "stored commit count");
  let certified = 0;
  for (const c of commits) {
    const bytes = stored[c.index - first.index]!;
    assertBytes(bytes, c.commitBytes, `commit ${c.index} bytes`);
    assertBytes(sha256(bytes), c.commitDigest, `commit ${c.index} digest`);
    const blocks = await store.getBlocks(c.blocks.map((b) => b.ref));
    assert.equal(blocks.length, c.blocks.length);
    for (const [k, b] of c.blocks.entries()) assertBytes(blocks[k], b.bytes, `commit ${c.index} block ${k}`);
    if (c.nextCommittee !== undefined) {
      assert.equal(await store.epochEnd(c.epoch), c.index, `end of epoch ${c.epoch}`);
      const committee = await store.getCommittee(c.epoch + 1);
      assert.ok(committee !== undefined, `committee of epoch ${c.epoch + 1}`);
      assertSameCommittee(committee.committee, c.nextCommittee, `committee of epoch ${c.epoch + 1}`);
    }
    const certifiers = await store.getCertifiers(c.index);
    if (certifiers !== undefined) {
      certified++;
      assert.ok(certifiers.length > 0, `commit ${c.index}: an empty certifier entry`);
      const genuine = new Set(c.certifierBlocks.map(toHex));
      for (const b of certifiers)
        assert.ok(genuine.has(toHex(b)), `commit ${c.index}: a stored certifier block is not a genuine one`);
    }
  }
  assert.ok((await store.getCertifiers(last.index)) !== undefined, "certifiers of the last commit");
  return certified;
}

/** Entries per table (sublevel, and the blocks database) of a closed store, read with LevelDB directly. */
export async function rawTableCounts(path: string): Promise<Record<string, number>> {
  return withRawStore(path, async ({ chain, blocks }) => {
    const counts: Record<string, number> = {};
    const blockRows = (await blocks.keys().all()).length;
    if (blockRows > 0) counts.blocks = blockRows;
    for await (const key of chain.keys()) {
      const name = splitTableKey(key)?.table ?? "(root)";
      counts[name] = (counts[name] ?? 0) + 1;
    }
    return counts;
  });
}

/**
 * The store holds exactly `commits` (assertStoreHoldsChain) and nothing else: it is closed (so it
 * must not be used afterwards), then
 * every table is counted. `committeeEpochs` is the number of committees it must hold (the start
 * epoch's and one per ended epoch).
 */
export async function assertStoreExact(
  store: Store,
  commits: readonly GeneratedCommit[],
  committeeEpochs: number,
): Promise<void> {
  const certified = await assertStoreHoldsChain(store, commits);
  await store.close();
  const counts = await rawTableCounts(store.path);
  const blocks = commits.reduce((n, c) => n + c.blocks.length, 0);
  const ends = commits.filter((c) => c.nextCommittee !== undefined).length;
  assert.deepEqual(
    counts,
    {
      commits: commits.length,
      blocks,
      certifiers: certified,
      committees: committeeEpochs,
      ...(ends > 0 ? { epoch_ends: ends } : {}),
      meta: 2,
    },
    "table sizes: exactly the chain, nothing else",
  );
}

/** Committee of epoch `e` as a generated chain defines it (genesis, or the previous epoch's last commit). */
export function committeeOfEpoch(
  chain: DevnetChain,
  commits: readonly GeneratedCommit[],
  epoch: number,
): Committee {
  if (epoch === 0) return chain.genesis.committee.committee;
  const end = commits.find((c) => c.epoch === epoch - 1 && c.nextCommittee !== undefined);
  assert.ok(end !== undefined, `the chain has no end of epoch ${epoch - 1}`);
  return end.nextCommittee!;
}

/** A trusted checkpoint at commit `index` of a generated chain, with the committee that certifies what follows. */
export function checkpointAt(
  chain: DevnetChain,
  commits: readonly GeneratedCommit[],
  index: number,
): TrustedCheckpoint {
  const c = commits[index - 1];
  assert.ok(c !== undefined && c.index === index, `no commit ${index}`);
  const epoch = c.nextCommittee !== undefined ? c.epoch + 1 : c.epoch;
  return { index, digest: c.commitDigest, committee: committeeOfEpoch(chain, commits, epoch) };
}

/** Committees a store that starts after `from` (0: genesis) must hold once it holds `run`. */
export function committeesHeld(run: readonly GeneratedCommit[]): number {
  return 1 + run.filter((c) => c.nextCommittee !== undefined).length;
}
