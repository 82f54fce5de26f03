/**
 * Store-side helpers for the multi-process end-to-end tests: run only while no process holds the
 * store. A content comparison against a reference store (commit and block bytes over an index
 * range), an integrity check of a store left behind by a killed process (every commit from the
 * lowest contiguous, linked, with all its blocks, and nothing at all past the watermark, read from
 * LevelDB directly), and a prefix copy that makes a store "at index N" out of a full one.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { bytesEqual, parseCommit, sha256, toHex } from "../../src/core/index.js";
import type { BlockRef } from "../../src/gen/dagsync/v1/types_pb.js";
import { type ApplyUnit, Store } from "../../src/store/index.js";
import { withRawStore } from "./raw-store.js";

const hex = (b: Uint8Array | undefined) => (b === undefined ? "(none)" : toHex(b));

export async function readGenesisBytes(file: string): Promise<Uint8Array> {
  return new Uint8Array(await readFile(file));
}

/** Opens an existing store (never creates one), runs `f`, closes it. */
export async function withStore<T>(path: string, f: (store: Store) => Promise<T>): Promise<T> {
  const store = await Store.open(path, { mustExist: true });
  try {
    return await f(store);
  } finally {
    await store.close();
  }
}

/**
 * Asserts that `path` holds commits `from..to` byte for byte as `reference` does, with every block
 * they reference (same bytes, digest equal to the ref), and that its highest synced commit is `to`
 * with the reference's digest. Returns the number of blocks compared.
 */
export async function assertSameChain(
  reference: string,
  path: string,
  from: number,
  to: number,
): Promise<{ commits: number; blocks: number }> {
  return withStore(reference, (ref) =>
    withStore(path, async (got) => {
      assert.equal(got.watermarks.highestSynced, to, `${path}: highest synced commit`);
      const want = await ref.getCommits(from, to);
      assert.equal(want.length, to - from + 1, `reference ${reference} holds ${from}..${to}`);
      const have = await got.getCommits(from, to);
      assert.equal(have.length, to - from + 1, `${path} holds every commit ${from}..${to}`);
      let blocks = 0;
      for (let k = 0; k < want.length; k++) {
        const index = from + k;
        assert.equal(hex(sha256(have[k]!)), hex(sha256(want[k]!)), `${path}: digest of commit ${index}`);
        assert.ok(bytesEqual(have[k]!, want[k]!), `${path}: bytes of commit ${index}`);
        const refs = parseCommit(want[k]!).commit.blocks;
        const [theirs, ours] = [await ref.getBlocks(refs), await got.getBlocks(refs)];
        refs.forEach((r, j) => {
          const what = `${path}: block (${r.round}, ${r.author}) of commit ${index}`;
          assert.ok(theirs[j] !== undefined, `reference lacks ${what}`);
          assert.ok(ours[j] !== undefined, `missing ${what}`);
          assert.equal(hex(sha256(ours[j]!)), hex(r.digest), `digest of ${what}`);
          assert.ok(bytesEqual(ours[j]!, theirs[j]!), `bytes of ${what}`);
        });
        blocks += refs.length;
      }
      assert.equal(
        hex(got.watermarks.highestSyncedDigest),
        hex(sha256(want.at(-1)!)),
        `${path}: highest synced digest`,
      );
      return { commits: want.length, blocks };
    }),
  );
}

export interface Integrity {
  readonly lowest: number;
  readonly highest: number;
  readonly epoch: number;
  readonly blocks: number;
}

const VIEW = { keyEncoding: "view", valueEncoding: "view" } as const;
const u32 = (key: Uint8Array, at: number) => new DataView(key.buffer, key.byteOffset).getUint32(at);
const u64 = (key: Uint8Array) => Number(new DataView(key.buffer, key.byteOffset, 8).getBigUint64(0));

/**
 * A store left by a process (killed or not): it opens with this genesis; every commit from the
 * lowest available to the highest synced is there, in order, linked by previous_digest (to the
 * genesis digest from commit 1, or to `anchor` when given for a store started from a checkpoint),
 * the last one's digest is the watermark's, and every block it references is there with the right
 * digest. Then, reading LevelDB directly: no commit, certifier or epoch end beyond what those
 * commits account for — no trace of a partial unit — and no block but theirs and, when the
 * process was killed mid-apply, whole blocks written ahead of their commits (Store's doc): each
 * such extra block's bytes hash to the digest in its key.
 */
export async function checkStoreIntegrity(
  path: string,
  genesis: Uint8Array,
  anchor?: { index: number; digest: Uint8Array },
): Promise<Integrity> {
  const store = await Store.open(path, { genesis, mustExist: true });
  let result: Integrity;
  const refs = new Map<string, BlockRef>();
  try {
    const marks = store.watermarks;
    const { lowestAvailable: lowest, highestSynced: highest } = marks;
    let prev: Uint8Array | undefined = lowest === 1 ? store.genesis.digest : undefined;
    if (anchor !== undefined) {
      assert.equal(lowest, anchor.index + 1, `${path}: lowest available is right after the checkpoint`);
      prev = anchor.digest;
    }
    if (highest < lowest) {
      assert.equal(highest, lowest - 1, `${path}: an empty store sits just below its lowest`);
      if (prev !== undefined)
        assert.equal(hex(marks.highestSyncedDigest), hex(prev), `${path}: empty digest`);
    }
    const commits = highest >= lowest ? await store.getCommits(lowest, highest) : [];
    assert.equal(commits.length, Math.max(0, highest - lowest + 1), `${path}: commits ${lowest}..${highest}`);
    let epoch = lowest === 1 ? 0 : undefined;
    for (let k = 0; k < commits.length; k++) {
      const index = lowest + k;
      const entry = parseCommit(commits[k]!);
      assert.equal(entry.index, index, `${path}: commit stored under ${index}`);
      if (prev !== undefined)
        assert.equal(
          hex(entry.commit.previousDigest),
          hex(prev),
          `${path}: commit ${index} links to ${index - 1}`,
        );
      if (epoch !== undefined) assert.equal(entry.epoch, epoch, `${path}: epoch of commit ${index}`);
      epoch = entry.epoch + (entry.commit.endOfEpoch !== undefined ? 1 : 0);
      prev = entry.digest;
      for (const r of entry.commit.blocks) refs.set(`${r.round}/${r.author}/${hex(r.digest)}`, r);
      const blocks = await store.getBlocks(entry.commit.blocks);
      entry.commit.blocks.forEach((r, j) => {
        const b = blocks[j];
        assert.ok(b !== undefined, `${path}: block (${r.round}, ${r.author}) of commit ${index} is missing`);
        assert.equal(hex(sha256(b)), hex(r.digest), `${path}: block (${r.round}, ${r.author}) digest`);
      });
    }
    if (commits.length > 0) {
      assert.equal(hex(marks.highestSyncedDigest), hex(prev), `${path}: watermark digest = last commit's`);
      assert.equal(marks.epoch, epoch, `${path}: watermark epoch`);
    }
    assert.ok(
      (await store.getCommittee(marks.epoch)) !== undefined,
      `${path}: committee of epoch ${marks.epoch}`,
    );
    result = { lowest, highest, epoch: marks.epoch, blocks: refs.size };
  } finally {
    await store.close();
  }

  // Raw tables: nothing past the watermark, no orphan block.
  await withRawStore(path, async ({ chain, blocks }) => {
    const table = (name: string) => chain.sublevel<Uint8Array, Uint8Array>(name, VIEW);
    const commitKeys = (await table("commits").keys().all()).map(u64);
    assert.equal(commitKeys.length, Math.max(0, result.highest - result.lowest + 1), `${path}: commit rows`);
    if (commitKeys.length > 0) {
      assert.equal(commitKeys[0], result.lowest, `${path}: lowest commit row`);
      assert.equal(commitKeys.at(-1), result.highest, `${path}: no commit row past the watermark`);
    }
    let referenced = 0;
    for await (const [key, value] of blocks.iterator()) {
      const digest = key.subarray(8);
      const ref = refs.get(`${u32(key, 0)}/${u32(key, 4)}/${hex(digest)}`);
      if (ref !== undefined) referenced++;
      else assert.equal(hex(sha256(value)), hex(digest), `${path}: an extra block row is not a whole block`);
    }
    assert.equal(referenced, refs.size, `${path}: block rows of the stored commits`);
    for (const key of await table("certifiers").keys().all()) {
      const i = u64(key);
      assert.ok(
        i >= result.lowest && i <= result.highest,
        `${path}: certifiers of commit ${i} outside the store`,
      );
    }
    for (const value of await table("epoch_ends").values().all())
      assert.ok(u64(value) <= result.highest, `${path}: an epoch end (${u64(value)}) past the watermark`);
    for (const key of await table("committees").keys().all())
      assert.ok(u64(key) <= result.epoch, `${path}: a committee of epoch ${u64(key)} past the watermark`);
  });
  return result;
}

/**
 * Writes commits 1..upTo of the store at `source` (with their blocks, certifiers and committee
 * changes) into a new store at `target`: a node that is at `upTo`. Returns the target's watermarks.
 */
export async function copyPrefix(source: string, target: string, genesis: Uint8Array, upTo: number) {
  return withStore(source, async (src) => {
    const dst = await Store.open(target, { genesis });
    try {
      for (let start = 1; start <= upTo; start += 25) {
        const end = Math.min(upTo, start + 24);
        const units: ApplyUnit[] = [];
        for (const bytes of await src.getCommits(start, end)) {
          const entry = parseCommit(bytes);
          const blocks = await src.getBlocks(entry.commit.blocks);
          units.push({
            index: entry.index,
            epoch: entry.epoch,
            commitBytes: bytes,
            commitDigest: entry.digest,
            blocks: entry.commit.blocks.map((ref, j) => ({ ref, bytes: blocks[j]! })),
            certifierBlocks: await src.getCertifiers(entry.index),
            nextCommittee: entry.commit.endOfEpoch?.nextCommittee,
          });
        }
        assert.equal(units.length, end - start + 1, `${source} holds commits ${start}..${end}`);
        await dst.apply(units);
      }
      return dst.watermarks;
    } finally {
      await dst.close();
    }
  });
}
