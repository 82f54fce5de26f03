/** The near-tip block cache: bounded by bytes and count, emptied as commits are applied, orphans aged out. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { sha256 } from "../../src/core/index.js";
import {
  DEFAULT_NEAR_TIP_CACHE_OPTIONS,
  type NearTipBlock,
  NearTipCache,
} from "../../src/node/near-tip-cache.js";

function block(i: number, size: number, round = i, epoch = 0): NearTipBlock {
  const bytes = new Uint8Array(size).fill(i & 0xff);
  bytes[0] = i >> 8;
  return { digest: sha256(bytes), bytes, round, epoch };
}

test("near-tip cache: bytes bound it (oldest evicted first), whatever the count", () => {
  const cache = new NearTipCache({ maxBytes: 10_000, maxBlocks: 1_000 });
  const blocks = Array.from({ length: 50 }, (_, i) => block(i, 1_000));
  for (const b of blocks) cache.add(b);
  assert.equal(cache.size, 10);
  assert.ok(cache.bytes <= 10_000);
  assert.equal(cache.get(blocks[39]!.digest), undefined, "an old block was evicted");
  assert.deepEqual(cache.get(blocks[49]!.digest), blocks[49]!.bytes, "the newest stays");
});

test("near-tip cache: the count bounds it too, and a block over the byte bound is not kept", () => {
  const cache = new NearTipCache({ maxBytes: 1_000_000, maxBlocks: 3 });
  for (let i = 0; i < 10; i++) cache.add(block(i, 10));
  assert.equal(cache.size, 3);
  const huge = block(99, 2_000_000);
  cache.add(huge);
  assert.equal(cache.get(huge.digest), undefined);
  assert.equal(cache.size, 3);
});

test("near-tip cache: applied blocks leave it, and the byte count follows", () => {
  const cache = new NearTipCache();
  const blocks = Array.from({ length: 5 }, (_, i) => block(i, 100));
  for (const b of blocks) cache.add(b);
  cache.add(blocks[0]!); // a duplicate counts once
  assert.equal(cache.bytes, 500);
  cache.applied(blocks.slice(0, 3), 0);
  assert.equal(cache.size, 2);
  assert.equal(cache.bytes, 200);
  assert.equal(cache.get(blocks[0]!.digest), undefined);
  assert.ok(DEFAULT_NEAR_TIP_CACHE_OPTIONS.maxBytes > 0 && DEFAULT_NEAR_TIP_CACHE_OPTIONS.maxBlocks > 0);
});

test("near-tip cache: orphans (never committed) age out staleRounds behind the applied tip, and earlier epochs go", () => {
  const cache = new NearTipCache({ staleRounds: 10 });
  // Rounds 0..99, one block each; every fourth is an orphan that no commit will name.
  const blocks = Array.from({ length: 100 }, (_, i) => block(i, 50));
  for (const b of blocks) cache.add(b);
  cache.applied(
    blocks.filter((b) => b.round % 4 !== 0 && b.round <= 60),
    0,
  );
  const left = blocks.filter((b) => cache.get(b.digest) !== undefined).map((b) => b.round);
  assert.ok(!left.some((r) => r < 50), `nothing older than 60 - 10 rounds is left: ${left.slice(0, 5)}`);
  assert.ok(left.includes(52) && left.includes(99), "recent orphans and unapplied blocks stay");
  assert.equal(cache.size, left.length);
  cache.add(block(500, 50, 55)); // late but within staleRounds: kept
  assert.ok(cache.get(block(500, 50, 55).digest) !== undefined);
  cache.add(block(501, 50, 40)); // stale on arrival
  assert.equal(cache.get(block(501, 50, 40).digest), undefined);
  cache.applied([block(600, 50, 1, 1)], 1); // the next epoch: everything of epoch 0 is stale
  assert.equal(cache.size, 0);
});
