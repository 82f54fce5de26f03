/**
 * Shared pieces of the sync engine tests: the in-memory devnet chain, a real LevelDB store in a
 * temporary directory, an engine with small limits, timeout guards, and a check that a store
 * holds exactly the chain.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sha256, toHex } from "../../src/core/index.js";
import { NativeVerifier } from "../../src/crypto/index.js";
import { DevnetChain, type GeneratedCommit } from "../../src/devnet/chain.js";
import { silentLogger } from "../../src/node/logger.js";
import { Store } from "../../src/store/index.js";
import { SyncEngine } from "../../src/sync/engine.js";
import type { SyncNetwork } from "../../src/sync/network.js";
import type { SyncOptions } from "../../src/sync/options.js";

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

/** An empty store of the chain's genesis in a fresh temporary directory. */
export async function tempStore(chain: DevnetChain): Promise<TempStore> {
  const dir = await mkdtemp(join(tmpdir(), "dagsync-sync-"));
  const store = await Store.open(join(dir, "store"), { genesis: chain.genesis.bytes });
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
  peers: readonly string[],
  options: Partial<SyncOptions> = {},
  random?: () => number,
): SyncEngine {
  return new SyncEngine({
    store,
    network,
    peers,
    verifier: new NativeVerifier(),
    log: silentLogger(),
    options: { ...SMALL_OPTIONS, ...options },
    random,
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
 * The store holds exactly `commits` (byte-identical commits with their digests, every block,
 * certifiers of the last commit, each epoch's next committee) and its watermarks are at the last.
 */
export async function assertStoreHoldsChain(
  store: Store,
  commits: readonly GeneratedCommit[],
): Promise<void> {
  const last = commits.at(-1)!;
  assert.equal(store.watermarks.highestSynced, last.index, "highestSynced");
  assertBytes(store.watermarks.highestSyncedDigest, last.commitDigest, "highestSyncedDigest");
  const stored = await store.getCommits(1, last.index);
  assert.equal(stored.length, commits.length, "stored commit count");
  for (const c of commits) {
    const bytes = stored[c.index - 1]!;
    assertBytes(bytes, c.commitBytes, `commit ${c.index} bytes`);
    assertBytes(sha256(bytes), c.commitDigest, `commit ${c.index} digest`);
    const blocks = await store.getBlocks(c.blocks.map((b) => b.ref));
    assert.equal(blocks.length, c.blocks.length);
    for (const [k, b] of c.blocks.entries()) assertBytes(blocks[k], b.bytes, `commit ${c.index} block ${k}`);
    if (c.nextCommittee !== undefined) {
      assert.equal(await store.epochEnd(c.epoch), c.index, `end of epoch ${c.epoch}`);
      const committee = await store.getCommittee(c.epoch + 1);
      assert.ok(committee !== undefined, `committee of epoch ${c.epoch + 1}`);
      assert.deepEqual(committee.committee, c.nextCommittee, `committee of epoch ${c.epoch + 1}`);
    }
  }
  assert.ok((await store.getCertifiers(last.index)) !== undefined, "certifiers of the last commit");
}
