/**
 * Properties of the raw views and the digest rules (DESIGN.md §2): any single-byte change to a
 * block or commit is caught; a parsed view hashes exactly the bytes received; and protobuf-es
 * writes the canonical form, so decoding and re-encoding what it wrote gives the same bytes.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import {
  encodeRawFields,
  parseCommit,
  parseSignedBlock,
  sha256,
  verifyBlocksAgainstRefs,
  verifyCommitBatch,
} from "../../src/core/index.js";
import { NativeVerifier } from "../../src/crypto/verifier.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import {
  type Block,
  BlockRefSchema,
  BlockSchema,
  type Commit,
  CommitRefSchema,
  CommitSchema,
  CommitteeSchema,
  EndOfEpochSchema,
  SignedBlockSchema,
  ValidatorSchema,
} from "../../src/gen/dagsync/v1/types_pb.js";
import {
  WireFetchCommitsResponseSchema,
  WireSignedBlockSchema,
} from "../../src/gen/dagsync/wire/v1/wire_pb.js";

const chain = new DevnetChain({
  validators: 4,
  epochs: 2,
  commitsPerEpoch: 6,
  txsPerBlock: 2,
  txBytes: 16,
  seed: 11,
});
const commits = [...chain.commits()];
const epoch0 = commits.filter((c) => c.epoch === 0);
const verifier = new NativeVerifier();
const allBlocks = commits.flatMap((c) => c.blocks);

/** Every generated SignedBlock: committed blocks and certifier blocks. */
const signedBlocks = [...allBlocks.map((b) => b.bytes), ...commits.flatMap((c) => c.certifierBlocks)];

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
/** u64 values that the core accepts (≤ 2^53 - 1), biased to include the edges. */
const u64 = fc.oneof(
  fc.constantFrom(0n, 1n, 127n, 128n, 2n ** 32n, 2n ** 53n - 1n),
  fc.bigInt({ min: 0n, max: 2n ** 53n - 1n }),
);
const digest = fc.uint8Array({ minLength: 32, maxLength: 32 });
const blockRef = fc.record({ round: u32, author: u32, digest }).map((r) => create(BlockRefSchema, r));
const commitRef = fc.record({ index: u64, digest }).map((r) => create(CommitRefSchema, r));

const arbBlock: fc.Arbitrary<Block> = fc
  .record({
    epoch: u64,
    round: u32,
    author: u32,
    timestampMs: u64,
    ancestors: fc.array(blockRef, { maxLength: 5 }),
    transactions: fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 5 }),
    commitVotes: fc.array(commitRef, { maxLength: 3 }),
  })
  .map((b) => create(BlockSchema, b));

const arbValidator = fc
  .record({
    protocolKey: digest,
    networkKey: digest,
    stake: u64,
    syncAddress: fc.string({ maxLength: 20 }),
    gossipAddress: fc.string({ maxLength: 20 }),
  })
  .map((v) => create(ValidatorSchema, v));

const arbCommit: fc.Arbitrary<Commit> = fc
  .record({
    index: u64,
    epoch: u64,
    previousDigest: digest,
    timestampMs: u64,
    leader: blockRef,
    blocks: fc.array(blockRef, { maxLength: 6 }),
    next: fc.option(fc.record({ epoch: u64, validators: fc.array(arbValidator, { maxLength: 4 }) })),
  })
  .map(({ next, ...c }) =>
    create(CommitSchema, {
      ...c,
      ...(next === null
        ? {}
        : { endOfEpoch: create(EndOfEpochSchema, { nextCommittee: create(CommitteeSchema, next) }) }),
    }),
  );

function signedBlockBytes(block: Block, signature: Uint8Array): Uint8Array {
  return toBinary(
    WireSignedBlockSchema,
    create(WireSignedBlockSchema, { block: toBinary(BlockSchema, block), signature }),
  );
}

/** A position and a nonzero xor mask for a single-byte change. */
const byteChange = fc.record({ position: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) });

function changeByte(bytes: Uint8Array, { position, mask }: { position: number; mask: number }): Uint8Array {
  const out = bytes.slice();
  const i = position % out.length;
  out[i]! ^= mask;
  assert.notDeepEqual(out, bytes);
  return out;
}

describe("single-byte changes are detected", () => {
  test("a changed block fails verifyBlocksAgainstRefs against its original ref", () => {
    assert.ok(allBlocks.length > 20);
    fc.assert(
      fc.property(fc.nat(allBlocks.length - 1), byteChange, (which, change) => {
        const { ref, bytes } = allBlocks[which]!;
        // Control: the original passes.
        const ok = verifyBlocksAgainstRefs([ref], [bytes]);
        assert.equal(ok.error, undefined);
        assert.equal(ok.blocks.length, 1);
        const result = verifyBlocksAgainstRefs([ref], [changeByte(bytes, change)]);
        assert.equal(result.error?.code, "digest_mismatch");
        assert.equal(result.blocks.length, 0);
      }),
      { numRuns: 1000 },
    );
  });

  test("a changed commit makes verifyCommitBatch return fewer commits or an error, never the change", () => {
    const first = 2;
    const batch = epoch0.slice(first - 1, first + 3); // commits 2..5
    const last = batch.at(-1)!;
    const input = {
      expectedStart: first,
      previousDigest: commits[first - 2]!.commitDigest,
      certifierBlocks: last.certifierBlocks,
      committee: chain.genesis.committee,
      chainId: chain.chainId,
      verifier,
    };
    const ok = verifyCommitBatch({ ...input, commits: batch.map((c) => c.commitBytes) });
    assert.equal(ok.error, undefined);
    assert.equal(ok.commits.length, batch.length);
    fc.assert(
      fc.property(fc.nat(batch.length - 1), byteChange, (which, change) => {
        const tampered = batch.map((c) => c.commitBytes);
        tampered[which] = changeByte(tampered[which]!, change);
        const result = verifyCommitBatch({ ...input, commits: tampered });
        assert.ok(
          result.commits.length < batch.length || result.error !== undefined,
          `change at ${change.position} of commit ${which} went unnoticed`,
        );
        // Whatever is returned is exactly the original, untouched commits.
        result.commits.forEach((c, i) => {
          assert.deepEqual(c.digest, batch[i]!.commitDigest);
        });
        assert.ok(result.commits.length <= which, "a tampered commit (or one after it) was accepted");
      }),
      { numRuns: 1000 },
    );
  });
});

describe("raw views hash the bytes as received", () => {
  test("generated blocks: parseSignedBlock's digest is sha256 of the bytes, stable across parses", () => {
    for (const bytes of signedBlocks) {
      const a = parseSignedBlock(bytes);
      const b = parseSignedBlock(bytes);
      assert.deepEqual(a.digest, sha256(bytes));
      assert.deepEqual(b.digest, a.digest);
    }
    for (const c of commits) {
      const entry = parseCommit(c.commitBytes);
      assert.deepEqual(entry.digest, sha256(c.commitBytes));
      assert.deepEqual(entry.digest, c.commitDigest);
      assert.deepEqual(parseCommit(c.commitBytes).digest, entry.digest);
    }
  });

  test("random blocks: encode → parseSignedBlock → digest = sha256(bytes), fields intact", () => {
    fc.assert(
      fc.property(arbBlock, fc.uint8Array({ minLength: 64, maxLength: 64 }), (block, signature) => {
        const bytes = signedBlockBytes(block, signature);
        const entry = parseSignedBlock(bytes);
        assert.deepEqual(entry.digest, sha256(bytes));
        assert.deepEqual(parseSignedBlock(bytes).digest, entry.digest);
        assert.deepEqual(entry.bytes, bytes);
        assert.deepEqual(entry.blockBytes, toBinary(BlockSchema, block));
        assert.deepEqual(entry.signature, signature);
        assert.ok(equals(BlockSchema, entry.block, block));
        assert.equal(entry.round, block.round);
        assert.equal(entry.author, block.author);
        assert.equal(BigInt(entry.epoch), block.epoch);
      }),
      { numRuns: 300 },
    );
  });

  test("random commits: encode → parseCommit → digest = sha256(bytes), fields intact", () => {
    fc.assert(
      fc.property(arbCommit, (commit) => {
        const bytes = toBinary(CommitSchema, commit);
        const entry = parseCommit(bytes);
        assert.deepEqual(entry.digest, sha256(bytes));
        assert.deepEqual(parseCommit(bytes).digest, entry.digest);
        assert.ok(equals(CommitSchema, entry.commit, commit));
        assert.equal(BigInt(entry.index), commit.index);
        assert.equal(BigInt(entry.epoch), commit.epoch);
      }),
      { numRuns: 300 },
    );
  });
});

describe("canonical form", () => {
  test("generated blocks and commits: toBinary(fromBinary(bytes)) = bytes", () => {
    for (const bytes of signedBlocks) {
      assert.deepEqual(toBinary(SignedBlockSchema, fromBinary(SignedBlockSchema, bytes)), bytes);
      const { blockBytes } = parseSignedBlock(bytes);
      assert.deepEqual(toBinary(BlockSchema, fromBinary(BlockSchema, blockBytes)), blockBytes);
    }
    for (const c of commits)
      assert.deepEqual(toBinary(CommitSchema, fromBinary(CommitSchema, c.commitBytes)), c.commitBytes);
  });

  test("random blocks and commits: encoding is a fixed point of decode → encode", () => {
    fc.assert(
      fc.property(
        arbBlock,
        arbCommit,
        fc.uint8Array({ minLength: 64, maxLength: 64 }),
        (block, commit, sig) => {
          const blockBytes = toBinary(BlockSchema, block);
          assert.deepEqual(toBinary(BlockSchema, fromBinary(BlockSchema, blockBytes)), blockBytes);
          const signed = signedBlockBytes(block, sig);
          // The structured SignedBlock and its wire twin encode to the same bytes.
          assert.deepEqual(
            toBinary(SignedBlockSchema, create(SignedBlockSchema, { block, signature: sig })),
            signed,
          );
          assert.deepEqual(toBinary(SignedBlockSchema, fromBinary(SignedBlockSchema, signed)), signed);
          const commitBytes = toBinary(CommitSchema, commit);
          assert.deepEqual(toBinary(CommitSchema, fromBinary(CommitSchema, commitBytes)), commitBytes);
        },
      ),
      { numRuns: 300 },
    );
  });

  test("encodeRawFields writes what protobuf-es writes for the wire twins", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 5 }),
        fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 5 }),
        (commitList, certifiers) => {
          const expected = toBinary(
            WireFetchCommitsResponseSchema,
            create(WireFetchCommitsResponseSchema, { commits: commitList, certifierBlocks: certifiers }),
          );
          assert.deepEqual(
            encodeRawFields([
              [1, commitList],
              [2, certifiers],
            ]),
            expected,
          );
        },
      ),
      { numRuns: 200 },
    );
    for (const bytes of signedBlocks.slice(0, 20)) {
      const { blockBytes, signature } = parseSignedBlock(bytes);
      assert.deepEqual(
        encodeRawFields([
          [1, [blockBytes]],
          [2, [signature]],
        ]),
        bytes,
      );
    }
  });
});
