/**
 * peekSignedBlock (src/core/wire.ts) reads what the verify pool needs (epoch, round, author,
 * signed bytes, signature) without a full decode: it must agree with parseSignedBlock on every
 * block, and fail on what parseSignedBlock fails to split.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  parseSignedBlock,
  parseSignedBlockWithDigest,
  peekSignedBlock,
  splitSignedBlock,
  toHex,
} from "../../src/core/index.js";
import { DevnetChain } from "../../src/devnet/chain.js";

const chain = new DevnetChain({
  validators: 4,
  epochs: 2,
  commitsPerEpoch: 6,
  txsPerBlock: 3,
  txBytes: 40,
  seed: 9,
});
const blocks = [...chain.commits()].flatMap((c) => [...c.blocks.map((b) => b.bytes), ...c.certifierBlocks]);

test("agrees with parseSignedBlock on every devnet block", () => {
  assert.ok(blocks.length > 20);
  for (const b of blocks) {
    const full = parseSignedBlock(b);
    const peek = peekSignedBlock(b);
    assert.deepEqual(
      [peek.epoch, peek.round, peek.author, toHex(peek.blockBytes), toHex(peek.signature)],
      [full.epoch, full.round, full.author, toHex(full.blockBytes), toHex(full.signature)],
    );
    assert.equal(toHex(parseSignedBlockWithDigest(b, full.digest).digest), toHex(full.digest));
  }
});

test("truncated bytes: refused wherever the SignedBlock framing is broken; agrees wherever both read", () => {
  fc.assert(
    fc.property(fc.constantFrom(...blocks), fc.nat(), (b, cut) => {
      const truncated = b.subarray(0, cut % b.length);
      let framed = true;
      try {
        splitSignedBlock(truncated);
      } catch {
        framed = false;
      }
      if (!framed) return void assert.throws(() => peekSignedBlock(truncated));
      let full: ReturnType<typeof parseSignedBlock> | undefined;
      try {
        full = parseSignedBlock(truncated);
      } catch {
        return; // the peek does not decode the body: the full check refuses it later
      }
      const peek = peekSignedBlock(truncated);
      assert.deepEqual([peek.epoch, peek.round, peek.author], [full.epoch, full.round, full.author]);
    }),
    { numRuns: 300 },
  );
  assert.throws(() => peekSignedBlock(new Uint8Array([0x0a, 0x05, 1])), /does not decode/);
});
