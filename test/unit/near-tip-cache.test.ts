/** The near-tip block cache: bounded by bytes and count, and emptied as commits are applied. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { sha256 } from "../../src/core/index.js";
import { DEFAULT_NEAR_TIP_CACHE_OPTIONS, NearTipCache } from "../../src/node/near-tip-cache.js";

function block(i: number, size: number): { digest: Uint8Array; bytes: Uint8Array } {
  const bytes = new Uint8Array(size).fill(i & 0xff);
  bytes[0] = i >> 8;
  return { digest: sha256(bytes), bytes };
}

test("near-tip cache: bytes bound it (oldest evicted first), whatever the count", () => {
  const cache = new NearTipCache({ maxBytes: 10_000, maxBlocks: 1_000 });
  const blocks = Array.from({ length: 50 }, (_, i) => block(i, 1_000));
  for (const b of blocks) cache.add(b.digest, b.bytes);
  assert.equal(cache.size, 10);
  assert.ok(cache.bytes <= 10_000);
  assert.equal(cache.get(blocks[39]!.digest), undefined, "an old block was evicted");
  assert.deepEqual(cache.get(blocks[49]!.digest), blocks[49]!.bytes, "the newest stays");
});

test("near-tip cache: the count bounds it too, and a block over the byte bound is not kept", () => {
  const cache = new NearTipCache({ maxBytes: 1_000_000, maxBlocks: 3 });
  for (let i = 0; i < 10; i++) {
    const b = block(i, 10);
    cache.add(b.digest, b.bytes);
  }
  assert.equal(cache.size, 3);
  const huge = block(99, 2_000_000);
  cache.add(huge.digest, huge.bytes);
  assert.equal(cache.get(huge.digest), undefined);
  assert.equal(cache.size, 3);
});

test("near-tip cache: applied blocks leave it, and the byte count follows", () => {
  const cache = new NearTipCache();
  const blocks = Array.from({ length: 5 }, (_, i) => block(i, 100));
  for (const b of blocks) cache.add(b.digest, b.bytes);
  cache.add(blocks[0]!.digest, blocks[0]!.bytes); // a duplicate counts once
  assert.equal(cache.bytes, 500);
  cache.delete(blocks.slice(0, 3).map((b) => b.digest));
  assert.equal(cache.size, 2);
  assert.equal(cache.bytes, 200);
  assert.equal(cache.get(blocks[0]!.digest), undefined);
  assert.ok(DEFAULT_NEAR_TIP_CACHE_OPTIONS.maxBytes > 0 && DEFAULT_NEAR_TIP_CACHE_OPTIONS.maxBlocks > 0);
});
