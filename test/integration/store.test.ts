/**
 * The LevelDB store (DESIGN.md §6) on a real LevelDB in temporary directories: applied units read
 * back byte for byte, out-of-order units change nothing, pruning, open failures (another chain, no
 * store, a store held by another process) and starting from a trusted checkpoint. Every state is
 * checked again after closing and reopening the store.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { toBinary } from "@bufbuild/protobuf";
import { DevnetChain, type GeneratedCommit } from "../../src/devnet/chain.js";
import { type BlockRef, type Committee, CommitteeSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import {
  type ApplyUnit,
  Store,
  StoreError,
  type StoreErrorCode,
  type Watermarks,
} from "../../src/store/index.js";
import { spawnTs } from "../fixtures/child-process.js";

const HOLD_STORE = fileURLToPath(new URL("../fixtures/hold-store.ts", import.meta.url));

const chain = new DevnetChain({
  validators: 4,
  epochs: 2,
  commitsPerEpoch: 20,
  txsPerBlock: 2,
  txBytes: 64,
  seed: 3,
});
const all = [...chain.commits()];
const genesis = chain.genesis.bytes;

/** Generated commit by index (indices start at 1). */
function at(index: number): GeneratedCommit {
  const c = all[index - 1];
  assert.ok(c !== undefined && c.index === index, `no generated commit ${index}`);
  return c;
}

/** Generated commits first..last, inclusive. */
function range(first: number, last: number): GeneratedCommit[] {
  return Array.from({ length: last - first + 1 }, (_, i) => at(first + i));
}

const hex = (b: Uint8Array | undefined) => (b === undefined ? "(none)" : Buffer.from(b).toString("hex"));
const hexAll = (bs: readonly (Uint8Array | undefined)[]) => bs.map(hex);
const committeeHex = (c: Committee | undefined) =>
  c === undefined ? "(none)" : hex(toBinary(CommitteeSchema, c));

/** Commit bytes of generated commits first..last, as hex. */
const commitsHex = (first: number, last: number) => range(first, last).map((c) => hex(c.commitBytes));

/** A unit without certifier blocks, as a commit in the middle of a verified batch is applied. */
const uncertified = (c: GeneratedCommit): ApplyUnit => ({ ...c, certifierBlocks: undefined });

function isStoreError(code: StoreErrorCode, ...fragments: string[]) {
  return (e: unknown) => {
    assert.ok(e instanceof StoreError, `expected a StoreError, got ${String(e)}`);
    assert.equal(e.code, code, `code of "${e.message}"`);
    for (const f of fragments) assert.ok(e.message.includes(f), `"${e.message}" should mention ${f}`);
    return true;
  };
}

/** Everything a reader can observe about commits 1..40 of the chain. */
async function snapshot(store: Store) {
  const blocksOf = async (i: number) => hexAll(await store.getBlocks(at(i).blocks.map((b) => b.ref)));
  const commits = [];
  for (let i = 1; i <= all.length; i++)
    commits.push({
      commit: hex(await store.getCommit(i)),
      blocks: await blocksOf(i),
      certifiers: hexAll((await store.getCertifiers(i)) ?? []),
    });
  return {
    watermarks: { ...store.watermarks, highestSyncedDigest: hex(store.watermarks.highestSyncedDigest) },
    commits,
    committee0: committeeHex((await store.getCommittee(0))?.committee),
    committee1: committeeHex((await store.getCommittee(1))?.committee),
    epochEnd0: await store.epochEnd(0),
  };
}

function expectMarks(
  actual: Watermarks,
  expected: Omit<Watermarks, "highestSyncedDigest">,
  digest: Uint8Array,
) {
  assert.deepEqual(
    { ...actual, highestSyncedDigest: hex(actual.highestSyncedDigest) },
    { ...expected, highestSyncedDigest: hex(digest) },
  );
}

let root: string;
let dirs = 0;
/** A fresh directory for one store. */
const newDir = () => join(root, `store-${++dirs}`);

before(async () => {
  root = await mkdtemp(join(tmpdir(), "dagsync-store-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("store", () => {
  test("applied units read back byte for byte, with committees, certifiers and watermarks, across reopen", async () => {
    const dir = newDir();
    let store = await Store.open(dir, { genesis });
    try {
      expectMarks(
        store.watermarks,
        { highestVerified: 0, highestSynced: 0, epoch: 0, lowestAvailable: 1 },
        chain.genesis.digest,
      );
      assert.equal(
        committeeHex((await store.getCommittee(0))?.committee),
        committeeHex(chain.genesis.genesis.committee),
      );
      assert.deepEqual(await store.getCommits(1, 10), []);

      // One unit alone, then a batch whose certifier blocks certify its last commit only.
      await store.apply([at(1)]);
      expectMarks(
        store.watermarks,
        { highestVerified: 1, highestSynced: 1, epoch: 0, lowestAvailable: 1 },
        at(1).commitDigest,
      );
      await store.apply([uncertified(at(2)), uncertified(at(3)), uncertified(at(4)), at(5)]);
      expectMarks(
        store.watermarks,
        { highestVerified: 5, highestSynced: 5, epoch: 0, lowestAvailable: 1 },
        at(5).commitDigest,
      );

      // Up to and across the end of epoch 0 (commit 20), in batches of several sizes.
      await store.apply(
        range(6, 12)
          .map(uncertified)
          .concat([at(13)]),
      );
      await store.apply([at(14)]);
      await store.apply(range(15, 19));
      assert.equal(store.watermarks.epoch, 0);
      assert.equal(await store.epochEnd(0), undefined);
      assert.equal(await store.getCommittee(1), undefined);
      await store.apply([at(20)]);
      expectMarks(
        store.watermarks,
        { highestVerified: 20, highestSynced: 20, epoch: 1, lowestAvailable: 1 },
        at(20).commitDigest,
      );
      await store.apply(
        range(21, 24)
          .map(uncertified)
          .concat([at(25)]),
      );
      expectMarks(
        store.watermarks,
        { highestVerified: 25, highestSynced: 25, epoch: 1, lowestAvailable: 1 },
        at(25).commitDigest,
      );

      const check = async (s: Store) => {
        assert.deepEqual(hexAll(await s.getCommits(1, 25)), commitsHex(1, 25));
        assert.deepEqual(hexAll(await s.getCommits(7, 11)), commitsHex(7, 11));
        assert.deepEqual(hexAll(await s.getCommits(18, 23)), commitsHex(18, 23), "across the epoch end");
        assert.deepEqual(hexAll(await s.getCommits(22, 60)), commitsHex(22, 25), "stops at the highest");
        assert.deepEqual(hexAll(await s.getCommits(3, 25, 4)), commitsHex(3, 6), "limit");
        assert.deepEqual(await s.getCommits(26, 40), []);
        assert.equal(hex(await s.getCommit(17)), hex(at(17).commitBytes));
        assert.equal(await s.getCommit(26), undefined);

        // Blocks in request order (reversed, from several commits), undefined for an unknown ref.
        const wanted = [...at(2).blocks, ...at(20).blocks, ...at(25).blocks].reverse();
        const known = wanted[1]!.ref;
        const unknown: BlockRef = { ...known, digest: known.digest.map((x) => x ^ 0xff) };
        const notYet = at(26).blocks[0]!.ref;
        const refs = [wanted[0]!.ref, unknown, ...wanted.slice(1).map((b) => b.ref), notYet];
        const expected = [
          hex(wanted[0]!.bytes),
          "(none)",
          ...wanted.slice(1).map((b) => hex(b.bytes)),
          "(none)",
        ];
        assert.deepEqual(hexAll(await s.getBlocks(refs)), expected);
        assert.deepEqual(await s.getBlocks([]), []);
        for (const c of range(1, 25))
          assert.deepEqual(
            hexAll(await s.getBlocks(c.blocks.map((b) => b.ref))),
            hexAll(c.blocks.map((b) => b.bytes)),
            `blocks of commit ${c.index}`,
          );
        assert.equal(await s.hasBlock(known), true);
        assert.equal(await s.hasBlock(unknown), false);

        // Certifier blocks were stored for the units that carried them, and only those.
        for (const i of [1, 5, 13, 14, 15, 19, 20, 25])
          assert.deepEqual(
            hexAll((await s.getCertifiers(i)) ?? []),
            hexAll(at(i).certifierBlocks),
            `certifiers of ${i}`,
          );
        for (const i of [2, 3, 4, 6, 12, 21, 24, 26])
          assert.equal(await s.getCertifiers(i), undefined, `certifiers of ${i}`);
        assert.equal(await s.highestCertifiedIn(1, 4), 1);
        assert.equal(await s.highestCertifiedIn(2, 4), undefined);
        assert.equal(await s.highestCertifiedIn(1, 12), 5);
        assert.equal(await s.highestCertifiedIn(6, 13), 13);
        assert.equal(await s.highestCertifiedIn(21, 40), 25);
        assert.equal(await s.highestCertifiedIn(26, 40), undefined);

        // The epoch change: epoch 0 ends at 20, epoch 1's committee is the one commit 20 carried.
        assert.equal(await s.epochEnd(0), 20);
        assert.equal(await s.epochEnd(1), undefined);
        assert.equal(committeeHex((await s.getCommittee(1))?.committee), committeeHex(at(20).nextCommittee));
        assert.equal((await s.getCommittee(1))?.epoch, 1);
        assert.equal(await s.getCommittee(2), undefined);
        assert.deepEqual(s.epochBoundsOf(7), { epoch: 0, end: 20 });
        assert.deepEqual(s.epochBoundsOf(20), { epoch: 0, end: 20 });
        assert.deepEqual(s.epochBoundsOf(21), { epoch: 1, end: undefined });
        expectMarks(
          s.watermarks,
          { highestVerified: 25, highestSynced: 25, epoch: 1, lowestAvailable: 1 },
          at(25).commitDigest,
        );
      };
      await check(store);

      await store.close();
      store = await Store.open(dir);
      await check(store);
      assert.equal(store.genesis.genesis.chainId, chain.chainId);
      await store.close();
      store = await Store.open(dir, { genesis });
      await check(store);

      // The reopened store continues the chain.
      await store.apply(range(26, 40));
      expectMarks(
        store.watermarks,
        { highestVerified: 40, highestSynced: 40, epoch: 2, lowestAvailable: 1 },
        at(40).commitDigest,
      );
      assert.equal(await store.epochEnd(1), 40);
      assert.deepEqual(hexAll(await store.getCommits(1, 40)), commitsHex(1, 40));
    } finally {
      await store.close();
    }
  });

  test("an out-of-order unit throws out_of_order and changes nothing, also after reopen", async () => {
    const dir = newDir();
    let store = await Store.open(dir, { genesis });
    try {
      await store.apply(range(1, 5));
      const before = await snapshot(store);
      assert.equal(before.watermarks.highestSynced, 5);

      await assert.rejects(store.apply([at(7)]), isStoreError("out_of_order", "7", "5"));
      await assert.rejects(store.apply([at(5)]), isStoreError("out_of_order"), "an applied commit again");
      await assert.rejects(store.apply([at(1)]), isStoreError("out_of_order"));
      // A gap inside one call: commit 6 is in order but must not be written without the rest.
      await assert.rejects(store.apply([at(6), at(8)]), isStoreError("out_of_order", "8"));
      await assert.rejects(store.apply([at(6), at(7), at(7)]), isStoreError("out_of_order"));
      await store.apply([]);

      assert.deepEqual(await snapshot(store), before);
      assert.equal(await store.getCommit(6), undefined);
      assert.deepEqual(
        hexAll(await store.getBlocks(at(6).blocks.map((b) => b.ref))),
        at(6).blocks.map(() => "(none)"),
      );
      assert.deepEqual(hexAll(await store.getCommits(1, 100)), commitsHex(1, 5));

      await store.close();
      store = await Store.open(dir, { genesis });
      assert.deepEqual(await snapshot(store), before);

      // The store still takes the next commit.
      await store.apply([at(6), at(7)]);
      assert.equal(store.watermarks.highestSynced, 7);
      assert.deepEqual(hexAll(await store.getCommits(1, 100)), commitsHex(1, 7));
    } finally {
      await store.close();
    }
  });

  test("prune deletes commits, blocks and certifiers below keepFrom, keeps the rest, and survives reopen", async () => {
    const dir = newDir();
    let store = await Store.open(dir, { genesis });
    try {
      await store.apply(range(1, 30));
      const expectPruned = async (s: Store, lowest: number) => {
        assert.equal(s.watermarks.lowestAvailable, lowest);
        assert.equal(s.watermarks.highestSynced, 30);
        assert.equal(hex(s.watermarks.highestSyncedDigest), hex(at(30).commitDigest));
        assert.equal(s.watermarks.epoch, 1);
        for (const c of range(1, lowest - 1)) {
          assert.equal(await s.getCommit(c.index), undefined, `commit ${c.index} pruned`);
          assert.equal(await s.getCertifiers(c.index), undefined, `certifiers of ${c.index} pruned`);
          const blocks = await s.getBlocks(c.blocks.map((b) => b.ref));
          assert.ok(
            blocks.every((b) => b === undefined),
            `blocks of ${c.index} pruned`,
          );
        }
        assert.deepEqual(await s.getCommits(1, lowest - 1), []);
        assert.deepEqual(hexAll(await s.getCommits(lowest, 30)), commitsHex(lowest, 30));
        for (const c of range(lowest, 30)) {
          assert.deepEqual(
            hexAll(await s.getBlocks(c.blocks.map((b) => b.ref))),
            hexAll(c.blocks.map((b) => b.bytes)),
          );
          assert.deepEqual(hexAll((await s.getCertifiers(c.index)) ?? []), hexAll(c.certifierBlocks));
        }
        // Epoch metadata is not pruned.
        assert.equal(await s.epochEnd(0), 20);
        assert.equal(committeeHex((await s.getCommittee(1))?.committee), committeeHex(at(20).nextCommittee));
      };

      assert.equal(await store.prune(11), 10);
      await expectPruned(store, 11);
      assert.equal(await store.prune(11), 0, "nothing more to prune");
      assert.equal(await store.prune(4), 0, "below the lowest available");
      await expectPruned(store, 11);

      await store.close();
      store = await Store.open(dir, { genesis });
      await expectPruned(store, 11);

      // In small batches (bounded memory), the result is the same.
      assert.equal(await store.prune(18, { commitsPerBatch: 3 }), 7);
      await expectPruned(store, 18);

      // keepFrom past the highest never prunes the highest synced commit.
      assert.equal(await store.prune(1000, { commitsPerBatch: 4 }), 12);
      await expectPruned(store, 30);
      await store.close();
      store = await Store.open(dir);
      await expectPruned(store, 30);

      // A pruned store continues the chain.
      await store.apply(range(31, 33));
      assert.deepEqual(hexAll(await store.getCommits(30, 40)), commitsHex(30, 33));
      assert.equal(store.watermarks.lowestAvailable, 30);
    } finally {
      await store.close();
    }
  });

  test("opening with another chain's genesis fails with foreign_genesis naming both chains", async () => {
    const dir = newDir();
    const other = new DevnetChain({ ...chain.options, seed: 4 });
    assert.notEqual(other.chainId, chain.chainId);
    const store = await Store.open(dir, { genesis });
    await store.apply(range(1, 3));
    await store.close();

    await assert.rejects(
      Store.open(dir, { genesis: other.genesis.bytes }),
      isStoreError("foreign_genesis", dir, `"${chain.chainId}"`, `"${other.chainId}"`),
    );
    // The failed open released the database: the right genesis opens it, unchanged.
    const again = await Store.open(dir, { genesis });
    try {
      assert.equal(again.watermarks.highestSynced, 3);
      assert.deepEqual(hexAll(await again.getCommits(1, 3)), commitsHex(1, 3));
    } finally {
      await again.close();
    }
  });

  test("opening a path with no store and no genesis fails with a clear message and creates nothing", async () => {
    const dir = newDir();
    await assert.rejects(Store.open(dir), (e: unknown) => {
      assert.ok(e instanceof StoreError, `expected a StoreError, got ${String(e)}`);
      assert.ok(e.code === "not_found" || e.code === "not_initialized", `code ${e.code}`);
      assert.ok(e.message.includes(dir), `"${e.message}" should name the path`);
      assert.match(e.message, /does not exist|never initialized/);
      return true;
    });
    assert.equal(existsSync(dir), false, "a failed open must not create the directory");
    await assert.rejects(
      Store.open(dir, { mustExist: true }),
      isStoreError("not_found", dir, "does not exist"),
    );
    assert.equal(existsSync(dir), false);
    // Under a missing parent directory too (LevelDB itself reports that as an I/O error).
    const deep = join(dir, "a", "b");
    await assert.rejects(Store.open(deep), isStoreError("not_found", deep, "does not exist"));
    assert.equal(existsSync(dir), false);
    // Allowed to create, but without a genesis there is nothing to initialize it with.
    await assert.rejects(Store.open(dir, { mustExist: false }), isStoreError("not_initialized", dir));
  });

  test("opening a store held by another process fails with in_use", async () => {
    const dir = newDir();
    const store = await Store.open(dir, { genesis });
    await store.apply(range(1, 2));
    await store.close();

    const child = spawnTs(HOLD_STORE, [dir]);
    try {
      assert.equal(await child.waitForLine((l) => l.startsWith("ready")), "ready 2");
      await assert.rejects(Store.open(dir), isStoreError("in_use", dir, "in use by another process"));
      await assert.rejects(Store.open(dir, { genesis }), isStoreError("in_use", "in use by another process"));
    } finally {
      child.process.kill("SIGKILL");
      await child.exited;
    }
    // Once the holder is gone, the store opens again.
    const reopened = await Store.open(dir, { genesis });
    try {
      assert.equal(reopened.watermarks.highestSynced, 2);
    } finally {
      await reopened.close();
    }
  });

  test("a store started from a trusted checkpoint continues from it", async () => {
    // Checkpoint at the end of epoch 0: the next commit is epoch 1's, under commit 20's committee.
    const dir = newDir();
    const cp = { index: 20, digest: at(20).commitDigest, committee: at(20).nextCommittee! };
    let store = await Store.open(dir, { genesis, checkpoint: cp });
    try {
      const expectCheckpointed = async (s: Store) => {
        expectMarks(
          s.watermarks,
          { highestVerified: 20, highestSynced: 20, epoch: 1, lowestAvailable: 21 },
          cp.digest,
        );
        assert.equal(committeeHex((await s.getCommittee(1))?.committee), committeeHex(cp.committee));
        assert.deepEqual(await s.getCommits(1, 40), []);
        assert.equal(await s.getCommit(20), undefined);
      };
      await expectCheckpointed(store);
      await assert.rejects(store.apply([at(22)]), isStoreError("out_of_order"));
      await assert.rejects(store.apply([at(20)]), isStoreError("out_of_order"));
      await store.close();
      store = await Store.open(dir);
      await expectCheckpointed(store);

      await store.apply([at(21)]);
      await store.apply(range(22, 40));
      expectMarks(
        store.watermarks,
        { highestVerified: 40, highestSynced: 40, epoch: 2, lowestAvailable: 21 },
        at(40).commitDigest,
      );
      assert.deepEqual(hexAll(await store.getCommits(21, 40)), commitsHex(21, 40));
      assert.equal(await store.epochEnd(1), 40);
    } finally {
      await store.close();
    }

    // A checkpoint in the middle of epoch 0, with the genesis committee.
    const mid = newDir();
    const cp2 = { index: 9, digest: at(9).commitDigest, committee: chain.genesis.genesis.committee! };
    store = await Store.open(mid, { genesis, checkpoint: cp2 });
    try {
      expectMarks(
        store.watermarks,
        { highestVerified: 9, highestSynced: 9, epoch: 0, lowestAvailable: 10 },
        cp2.digest,
      );
      await store.apply(range(10, 21));
      expectMarks(
        store.watermarks,
        { highestVerified: 21, highestSynced: 21, epoch: 1, lowestAvailable: 10 },
        at(21).commitDigest,
      );
      assert.deepEqual(hexAll(await store.getCommits(10, 21)), commitsHex(10, 21));
    } finally {
      await store.close();
    }
  });
});
