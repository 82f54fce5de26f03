/**
 * Pruning gives the disk back (issue 14 item 7): LevelDB reclaims deleted keys only when it
 * compacts them, and nothing is written below the lowest kept commit again, so `Store.prune`
 * compacts each step's deleted ranges. A real store of 2,000 commits with a few KB per block,
 * pruned to its last 10 %: with compaction the directory shrinks to a fraction, without it it
 * keeps its size; the kept commits, blocks and certifiers read back byte for byte against an
 * unpruned copy, and the pruned store reopens and serves verifiable batches.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { PeerClient } from "../../src/client/index.js";
import { parseCommit } from "../../src/core/index.js";
import { diskBytes, Store } from "../../src/store/index.js";
import { assertBatchVerifies, type DevnetFixture, makeDevnet, serveStoreDir } from "../helpers/server.js";

const HIGHEST = 2000;
const KEEP_FROM = 1801;

function hex(bytes: Uint8Array | undefined): string {
  return bytes === undefined ? "(none)" : Buffer.from(bytes).toString("hex");
}

describe("prune compacts what it deletes", () => {
  let fx: DevnetFixture;
  let sizeBefore: number;

  before(async () => {
    fx = await makeDevnet({
      validators: 4,
      epochs: 2,
      commitsPerEpoch: HIGHEST / 2,
      txsPerBlock: 8,
      txBytes: 256,
      seed: 14,
    });
    sizeBefore = await diskBytes(fx.storePath(0));
    assert.equal(sizeBefore, await diskBytes(fx.storePath(1)), "validator stores are copies");
  });

  after(async () => {
    await fx?.remove();
  });

  test("without compaction the directory keeps its size (the problem)", async () => {
    const store = await Store.open(fx.storePath(1));
    try {
      assert.equal(await store.prune(KEEP_FROM, { compact: false }), KEEP_FROM - 1);
    } finally {
      await store.close();
    }
    const after = await diskBytes(fx.storePath(1));
    assert.ok(after > sizeBefore * 0.9, `${after} of ${sizeBefore} bytes left without compaction`);
  });

  test("with compaction (the default) the directory shrinks to a fraction; the rest reads back and serves", async () => {
    let store = await Store.open(fx.storePath(0));
    try {
      // Steps of 256 commits: several compaction steps over each table.
      assert.equal(await store.prune(KEEP_FROM, { commitsPerBatch: 256 }), KEEP_FROM - 1);
    } finally {
      await store.close();
    }
    const sizeAfter = await diskBytes(fx.storePath(0));
    // 10 % of the commits are kept; allow for table files straddling the boundary, the log and
    // manifests.
    assert.ok(
      sizeAfter < sizeBefore * 0.25,
      `store ${sizeBefore} → ${sizeAfter} bytes: expected under a quarter`,
    );

    const reference = await Store.open(fx.storePath(2));
    store = await Store.open(fx.storePath(0));
    try {
      assert.equal(store.watermarks.lowestAvailable, KEEP_FROM);
      assert.equal(store.watermarks.highestSynced, HIGHEST);
      assert.deepEqual(await store.getCommits(1, KEEP_FROM - 1), []);
      const prunedRefs = parseCommit((await reference.getCommit(KEEP_FROM - 1))!).commit.blocks;
      assert.ok(
        (await store.getBlocks(prunedRefs)).every((b) => b === undefined),
        "pruned blocks are gone",
      );

      const kept = await store.getCommits(KEEP_FROM, HIGHEST);
      const expected = await reference.getCommits(KEEP_FROM, HIGHEST);
      assert.equal(kept.length, HIGHEST - KEEP_FROM + 1);
      assert.deepEqual(kept.map(hex), expected.map(hex));
      let blocks = 0;
      for (const bytes of kept) {
        const entry = parseCommit(bytes);
        const refs = entry.commit.blocks;
        const ours = await store.getBlocks(refs);
        assert.ok(
          ours.every((b) => b !== undefined),
          `commit ${entry.index} has all its blocks`,
        );
        assert.deepEqual(ours.map(hex), (await reference.getBlocks(refs)).map(hex));
        assert.deepEqual(
          ((await store.getCertifiers(entry.index)) ?? []).map(hex),
          ((await reference.getCertifiers(entry.index)) ?? []).map(hex),
        );
        blocks += refs.length;
      }
      assert.ok(blocks > 0);
    } finally {
      await store.close();
      await reference.close();
    }

    // The pruned store opens and serves batches that verify, from its lowest commit on.
    const srv = await serveStoreDir(fx.storePath(0));
    const c = new PeerClient(srv.address);
    const reference2 = await Store.open(fx.storePath(2));
    try {
      const res = await c.fetchCommits(KEEP_FROM, HIGHEST);
      const entries = await assertBatchVerifies(reference2, KEEP_FROM, res);
      assert.equal(entries[0]!.index, KEEP_FROM);
      const refs = entries.at(-1)!.commit.blocks;
      const got = await c.fetchBlocks(refs);
      assert.deepEqual(got.blocks.map(hex), (await reference2.getBlocks(refs)).map(hex));
    } finally {
      c.close();
      await srv.stop();
      await reference2.close();
    }
  });
});
