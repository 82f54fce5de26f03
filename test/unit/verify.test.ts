/**
 * Every verification rule of src/core/verify.ts, each with a case that breaks it, checked by the
 * VerifyError code; and the happy paths that must keep working (a batch, an epoch boundary, an
 * epoch transition).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  blockSigningMessage,
  type CommitBatchInput,
  type CommitBatchResult,
  CommitteeView,
  commitRefOf,
  nextCommitteeFrom,
  parseCommit,
  parseSignedBlock,
  quorumThreshold,
  splitSignedBlock,
  VerifyError,
  type VerifyErrorCode,
  verifyBlocksAgainstRefs,
  verifyCommitBatch,
  verifyLink,
  verifySignedBlock,
} from "../../src/core/index.js";
import { Ed25519Signer } from "../../src/crypto/keys.js";
import { NativeVerifier } from "../../src/crypto/verifier.js";
import { DevnetChain, type GeneratedCommit } from "../../src/devnet/chain.js";
import {
  type Block,
  BlockSchema,
  type Commit,
  type CommitRef,
  CommitRefSchema,
  CommitSchema,
  type Committee,
  CommitteeSchema,
  SignedBlockSchema,
} from "../../src/gen/dagsync/v1/types_pb.js";
import { WireSignedBlockSchema } from "../../src/gen/dagsync/wire/v1/wire_pb.js";

const chain = new DevnetChain({
  validators: 4,
  epochs: 2,
  commitsPerEpoch: 6,
  txsPerBlock: 2,
  txBytes: 16,
  seed: 7,
});
const all = [...chain.commits()];
const verifier = new NativeVerifier();
const committee0 = chain.genesis.committee;

/** Commit by its index (indices start at 1). */
function at(index: number): GeneratedCommit {
  const c = all[index - 1];
  assert.ok(c !== undefined && c.index === index, `no generated commit ${index}`);
  return c;
}

const lastOfEpoch0 = all.filter((c) => c.epoch === 0).at(-1)!;
const firstOfEpoch1 = all.find((c) => c.epoch === 1)!;
const committee1 = nextCommitteeFrom(parseCommit(lastOfEpoch0.commitBytes), committee0);

function previousDigestOf(index: number): Uint8Array {
  return index === 1 ? chain.genesis.digest : at(index - 1).commitDigest;
}

/** A batch of commits from..to (inclusive) certified by the certifier blocks of `to`. */
function batch(from: number, to: number, overrides: Partial<CommitBatchInput> = {}): CommitBatchInput {
  const commits: Uint8Array[] = [];
  for (let i = from; i <= to; i++) commits.push(at(i).commitBytes);
  return {
    commits,
    certifierBlocks: at(to).certifierBlocks,
    expectedStart: from,
    previousDigest: previousDigestOf(from),
    committee: committee0,
    chainId: chain.chainId,
    verifier,
    ...overrides,
  };
}

function indices(result: CommitBatchResult): number[] {
  return result.commits.map((c) => c.index);
}

function assertCode(error: unknown, code: VerifyErrorCode): void {
  assert.ok(error instanceof VerifyError, `expected VerifyError(${code}), got ${String(error)}`);
  assert.equal(error.code, code, error.message);
}

/** A validator for assert.throws: the error is a VerifyError with this code. */
function withCode(code: VerifyErrorCode): (e: unknown) => true {
  return (e) => {
    assertCode(e, code);
    return true;
  };
}

function assertFails(result: CommitBatchResult, code: VerifyErrorCode, kept: number[] = []): void {
  assertCode(result.error, code);
  assert.deepEqual(indices(result), kept);
  if (kept.length === 0) assert.equal(result.certifierBlocks.length, 0);
}

/** Signs a block with `signer` and wraps it as the wire SignedBlock. */
function signBlock(block: Block, signer: Ed25519Signer, chainId = chain.chainId): Uint8Array {
  const blockBytes = toBinary(BlockSchema, block);
  const signature = signer.sign(blockSigningMessage(chainId, blockBytes));
  return toBinary(WireSignedBlockSchema, create(WireSignedBlockSchema, { block: blockBytes, signature }));
}

function keysOf(epoch: number): NonNullable<ReturnType<typeof chain.keysByEpoch.get>> {
  const keys = chain.keysByEpoch.get(epoch);
  assert.ok(keys !== undefined, `no keys for epoch ${epoch}`);
  return keys;
}

/** Decodes a certifier block, lets `mutate` change it, and re-signs it with its author's key. */
function reSign(bytes: Uint8Array, mutate: (b: Block) => void, epochOfKey = 0): Uint8Array {
  const entry = parseSignedBlock(bytes);
  const block = entry.block;
  mutate(block);
  return signBlock(block, keysOf(epochOfKey)[entry.author]!.protocol);
}

/** Fresh certifier blocks, one per member of epoch `epoch`, voting for the given commits. */
function forgeVotes(votes: CommitRef[], epoch = 0, authors = [0, 1, 2, 3]): Uint8Array[] {
  return authors.map((author) =>
    signBlock(
      create(BlockSchema, { epoch: BigInt(epoch), round: 1000, author, commitVotes: votes }),
      keysOf(epoch)[author]!.protocol,
    ),
  );
}

function voteFor(index: number): CommitRef {
  return commitRefOf(parseCommit(at(index).commitBytes));
}

function reencodeCommit(bytes: Uint8Array, mutate: (c: Commit) => void): Uint8Array {
  const commit = fromBinary(CommitSchema, bytes);
  mutate(commit);
  return toBinary(CommitSchema, commit);
}

/** The offset of `needle` in `haystack` (which must contain it). */
function offsetOf(haystack: Uint8Array, needle: Uint8Array): number {
  const at = Buffer.from(haystack).indexOf(Buffer.from(needle));
  assert.ok(at >= 0, "needle not found");
  return at;
}

function flipByte(bytes: Uint8Array, offset: number, mask = 0x01): Uint8Array {
  const out = bytes.slice();
  out[offset]! ^= mask;
  return out;
}

describe("the test chain", () => {
  test("has the expected shape: two epochs of six commits, the boundary at 6", () => {
    assert.deepEqual(
      all.map((c) => [c.index, c.epoch]),
      Array.from({ length: 12 }, (_, i) => [i + 1, i < 6 ? 0 : 1]),
    );
    assert.equal(lastOfEpoch0.index, 6);
    assert.ok(lastOfEpoch0.nextCommittee !== undefined);
    assert.equal(firstOfEpoch1.index, 7);
    assert.equal(committee0.totalStake, 4);
    assert.equal(committee0.quorumThreshold, 3);
  });
});

describe("verifyCommitBatch", () => {
  test("happy path: a multi-commit batch of the first epoch returns every commit", () => {
    const result = verifyCommitBatch(batch(1, 5));
    assert.equal(result.error, undefined);
    assert.deepEqual(indices(result), [1, 2, 3, 4, 5]);
    result.commits.forEach((c, i) => {
      assert.deepEqual(c.digest, at(i + 1).commitDigest);
      assert.deepEqual(c.bytes, at(i + 1).commitBytes);
    });
    assert.equal(result.certifierBlocks.length, 4);
    assert.deepEqual(
      result.certifierBlocks.map((b) => b.author).sort(),
      [0, 1, 2, 3],
      "every certifier block voted",
    );
  });

  test("happy path: single-commit batches and a batch of a whole epoch", () => {
    for (const c of all) {
      const committee = c.epoch === 0 ? committee0 : committee1;
      const result = verifyCommitBatch(batch(c.index, c.index, { committee }));
      assert.equal(result.error, undefined, `commit ${c.index}: ${result.error?.message}`);
      assert.deepEqual(indices(result), [c.index]);
    }
    const epoch1 = verifyCommitBatch(batch(7, 12, { committee: committee1 }));
    assert.equal(epoch1.error, undefined);
    assert.deepEqual(indices(epoch1), [7, 8, 9, 10, 11, 12]);
  });

  test("previousDigest is optional (checked again at apply)", () => {
    const result = verifyCommitBatch(batch(3, 5, { previousDigest: undefined }));
    assert.equal(result.error, undefined);
    assert.deepEqual(indices(result), [3, 4, 5]);
  });

  test("an empty batch is malformed", () => {
    assertFails(verifyCommitBatch(batch(1, 3, { commits: [] })), "malformed");
  });

  test("an undecodable commit is malformed; the prefix before it is kept when certified", () => {
    const garbage = new Uint8Array([0xff, 0xff, 0xff]);
    assertFails(verifyCommitBatch(batch(1, 1, { commits: [garbage] })), "malformed");
    const votes = forgeVotes([voteFor(1), voteFor(2)]);
    const commits = [at(1).commitBytes, at(2).commitBytes, garbage];
    assertFails(verifyCommitBatch(batch(1, 3, { commits, certifierBlocks: votes })), "malformed", [1, 2]);
  });

  describe("tampered commits", () => {
    // Certifier blocks that vote for every commit of 1..5, so that a valid prefix can be certified.
    const votesForAll = forgeVotes([1, 2, 3, 4, 5].map(voteFor));

    test("the forged votes certify the untouched batch (control)", () => {
      const result = verifyCommitBatch(batch(1, 5, { certifierBlocks: votesForAll }));
      assert.equal(result.error, undefined);
      assert.deepEqual(indices(result), [1, 2, 3, 4, 5]);
    });

    test("a byte of previous_digest changed → broken_link, the prefix before it is kept", () => {
      const c3 = at(3);
      const offset = offsetOf(c3.commitBytes, at(2).commitDigest);
      const commits = batch(1, 5).commits.slice();
      commits[2] = flipByte(c3.commitBytes, offset + 5);
      const result = verifyCommitBatch(batch(1, 5, { commits, certifierBlocks: votesForAll }));
      assertFails(result, "broken_link", [1, 2]);
      assert.match(result.error!.message, /commit 3/);
      assert.equal(result.certifierBlocks.length, 4);
    });

    test("a byte of a block ref changed in a middle commit → the next commit's link breaks", () => {
      const c3 = at(3);
      const leaderDigest = parseCommit(c3.commitBytes).commit.leader!.digest;
      const commits = batch(1, 5).commits.slice();
      commits[2] = flipByte(c3.commitBytes, offsetOf(c3.commitBytes, leaderDigest), 0x80);
      // Commit 3 itself still links and decodes, but its digest changed: commit 4 no longer links
      // to it and nobody voted for the tampered commit 3, so only 1..2 are certified.
      const result = verifyCommitBatch(batch(1, 5, { commits, certifierBlocks: votesForAll }));
      assertFails(result, "broken_link", [1, 2]);
      assert.match(result.error!.message, /commit 4/);
    });

    test("a tampered last commit → missing_quorum, the prefix before it is kept", () => {
      const c5 = at(5);
      const leaderDigest = parseCommit(c5.commitBytes).commit.leader!.digest;
      const commits = batch(1, 5).commits.slice();
      commits[4] = flipByte(c5.commitBytes, offsetOf(c5.commitBytes, leaderDigest) + 31);
      const result = verifyCommitBatch(batch(1, 5, { commits, certifierBlocks: votesForAll }));
      assertFails(result, "missing_quorum", [1, 2, 3, 4]);
    });

    test("with the real certifier blocks (votes for the last commit only) nothing is kept, and the break is the error", () => {
      const c3 = at(3);
      const offset = offsetOf(c3.commitBytes, at(2).commitDigest);
      const commits = batch(1, 5).commits.slice();
      commits[2] = flipByte(c3.commitBytes, offset);
      const result = verifyCommitBatch(batch(1, 5, { commits }));
      assertFails(result, "broken_link", []);
      assert.match(result.error!.message, /commit 3/);
    });

    test("the first commit tampered in its previous_digest → broken_link against the given digest", () => {
      const c1 = at(1);
      const commits = batch(1, 5).commits.slice();
      commits[0] = flipByte(c1.commitBytes, offsetOf(c1.commitBytes, chain.genesis.digest));
      assertFails(verifyCommitBatch(batch(1, 5, { commits, certifierBlocks: votesForAll })), "broken_link");
    });
  });

  test("missing votes: certifier blocks below quorum → missing_quorum", () => {
    const certifiers = at(5).certifierBlocks;
    assert.equal(certifiers.length, 4);
    for (const n of [0, 1, 2])
      assertFails(
        verifyCommitBatch(batch(1, 5, { certifierBlocks: certifiers.slice(0, n) })),
        "missing_quorum",
      );
    // Exactly a quorum (3 of 4 stake) is enough.
    const three = verifyCommitBatch(batch(1, 5, { certifierBlocks: certifiers.slice(1) }));
    assert.equal(three.error, undefined);
    assert.deepEqual(indices(three), [1, 2, 3, 4, 5]);
  });

  test("certifier blocks that vote for another commit do not count → missing_quorum", () => {
    // Commit 4's certifier blocks vote for commit 4: they certify 1..4, and 5 is dropped.
    assertFails(
      verifyCommitBatch(batch(1, 5, { certifierBlocks: at(4).certifierBlocks })),
      "missing_quorum",
      [1, 2, 3, 4],
    );
    assertFails(verifyCommitBatch(batch(5, 6, { certifierBlocks: at(4).certifierBlocks })), "missing_quorum");
    // Votes for the right index but another digest, and for the right digest under another index.
    const right = voteFor(5);
    const forged = forgeVotes([
      create(CommitRefSchema, { index: right.index, digest: new Uint8Array(32).fill(9) }),
      create(CommitRefSchema, { index: right.index + 1n, digest: right.digest }),
    ]);
    assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: forged })), "missing_quorum");
  });

  test("two certifier blocks by the same author → duplicate_voter", () => {
    const [b0, b1, b2] = at(5).certifierBlocks;
    assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: [b0!, b0!, b1!, b2!] })), "duplicate_voter");
    // A different block by an author already counted is a duplicate too.
    const otherBy0 = reSign(b0!, (b) => {
      b.round += 1;
    });
    assertFails(
      verifyCommitBatch(batch(1, 5, { certifierBlocks: [b0!, b1!, otherBy0, b2!] })),
      "duplicate_voter",
    );
  });

  test("a certifier block by a non-member → non_member; signed by a key not in the committee → bad_signature", () => {
    const valid = at(5).certifierBlocks;
    const vote = voteFor(5);
    const outsider = signBlock(
      create(BlockSchema, { epoch: 0n, round: 1000, author: 4, commitVotes: [vote] }),
      keysOf(0)[0]!.protocol,
    );
    assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: [...valid, outsider] })), "non_member");
    const stranger = new Ed25519Signer(new Uint8Array(32).fill(0x77));
    const impostor = signBlock(
      create(BlockSchema, { epoch: 0n, round: 1000, author: 0, commitVotes: [vote] }),
      stranger,
    );
    assertFails(
      verifyCommitBatch(batch(1, 5, { certifierBlocks: [impostor, ...valid.slice(1)] })),
      "bad_signature",
    );
  });

  test("a vote signed with a rotated (next epoch's) key → bad_signature", () => {
    // The devnet rotates validator 1's keys at the end of epoch 0.
    const old = keysOf(0)[1]!.protocol.publicKey;
    const rotated = keysOf(1)[1]!.protocol;
    assert.notDeepEqual(old, rotated.publicKey);
    const block = signBlock(
      create(BlockSchema, { epoch: 0n, round: 1000, author: 1, commitVotes: [voteFor(5)] }),
      rotated,
    );
    const certifiers = at(5).certifierBlocks.filter((b) => parseSignedBlock(b).author !== 1);
    assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: [...certifiers, block] })), "bad_signature");
  });

  test("a block signed for another chain id → bad_signature", () => {
    const foreign = signBlock(
      create(BlockSchema, { epoch: 0n, round: 1000, author: 0, commitVotes: [voteFor(5)] }),
      keysOf(0)[0]!.protocol,
      "another-chain",
    );
    const rest = at(5).certifierBlocks.slice(1);
    assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: [foreign, ...rest] })), "bad_signature");
    // The same batch verified under the other chain id fails on the honest blocks instead.
    assertFails(
      verifyCommitBatch(batch(1, 5, { certifierBlocks: [foreign, ...rest], chainId: "another-chain" })),
      "bad_signature",
    );
  });

  test("votes of the wrong epoch → wrong_epoch", () => {
    // Certifier blocks of epoch 1 offered for an epoch-0 batch.
    const epoch1Blocks = at(8).certifierBlocks;
    assert.equal(parseSignedBlock(epoch1Blocks[0]!).epoch, 1);
    assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: epoch1Blocks })), "wrong_epoch");
    // A valid certifier block re-signed (by its author) with the epoch field changed.
    const certifiers = at(5).certifierBlocks.slice();
    certifiers[2] = reSign(certifiers[2]!, (b) => {
      b.epoch = 1n;
    });
    assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: certifiers })), "wrong_epoch");
  });

  test("a batch of another epoch than the committee's → wrong_epoch", () => {
    assertFails(verifyCommitBatch(batch(7, 9, { committee: committee0 })), "wrong_epoch");
    assertFails(verifyCommitBatch(batch(2, 4, { committee: committee1 })), "wrong_epoch");
  });

  test("a re-encoded commit with a different previous_digest → broken_link", () => {
    const commits = batch(1, 5).commits.slice();
    commits[3] = reencodeCommit(at(4).commitBytes, (c) => {
      c.previousDigest = new Uint8Array(32).fill(0xaa);
    });
    const forged = forgeVotes([1, 2, 3, 4, 5].map(voteFor));
    const result = verifyCommitBatch(batch(1, 5, { commits, certifierBlocks: forged }));
    assertFails(result, "broken_link", [1, 2, 3]);
    assert.match(result.error!.message, /commit 4/);
    // And at the start of the batch, against the digest the caller knows.
    assertFails(verifyCommitBatch(batch(2, 5, { previousDigest: chain.genesis.digest })), "broken_link");
  });

  test("a skipped commit → gap", () => {
    const votes = forgeVotes([1, 2, 3, 4, 5].map(voteFor));
    const commits = [1, 2, 4, 5].map((i) => at(i).commitBytes);
    const result = verifyCommitBatch(batch(1, 5, { commits, certifierBlocks: votes }));
    assertFails(result, "gap", [1, 2]);
    assert.match(result.error!.message, /expected commit 3, got 4/);
    // A repeated commit and a wrong start are gaps too.
    const repeated = [1, 2, 2, 3].map((i) => at(i).commitBytes);
    assertFails(verifyCommitBatch(batch(1, 3, { commits: repeated, certifierBlocks: votes })), "gap", [1, 2]);
    assertFails(verifyCommitBatch(batch(2, 5, { expectedStart: 3 })), "gap");
    assertFails(verifyCommitBatch(batch(2, 5, { expectedStart: 1 })), "gap");
  });

  test("a commit of another epoch inside a batch, without an end_of_epoch before it → mixed_epochs", () => {
    const commits = [at(1).commitBytes, reencodeCommit(at(2).commitBytes, (c) => (c.epoch = 1n))];
    const votes = forgeVotes([voteFor(1)]);
    const result = verifyCommitBatch(batch(1, 2, { commits, certifierBlocks: votes }));
    assertFails(result, "mixed_epochs", [1]);
    // The last commit of an epoch re-encoded without its end_of_epoch: epoch 1 follows it unannounced.
    const open6 = reencodeCommit(at(6).commitBytes, (c) => {
      c.endOfEpoch = undefined;
    });
    const open6Entry = parseCommit(open6);
    const seven = reencodeCommit(at(7).commitBytes, (c) => {
      c.previousDigest = open6Entry.digest;
    });
    const votes6 = forgeVotes([commitRefOf(open6Entry)]);
    assertFails(
      verifyCommitBatch(batch(6, 7, { commits: [open6, seven], certifierBlocks: votes6 })),
      "mixed_epochs",
      [6],
    );
  });

  test("a flipped signature byte of a certifier block → bad_signature", () => {
    for (const offset of [0, 17, 31, 32, 50, 63]) {
      const certifiers = at(5).certifierBlocks.slice();
      const { signature } = splitSignedBlock(certifiers[1]!);
      const sigOffset = certifiers[1]!.length - signature.length;
      certifiers[1] = flipByte(certifiers[1]!, sigOffset + offset);
      assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: certifiers })), "bad_signature");
    }
  });

  test("a flipped byte in the signed block bytes of a certifier block → bad_signature", () => {
    const certifiers = at(5).certifierBlocks.slice();
    const entry = parseSignedBlock(certifiers[0]!);
    const tx = entry.block.transactions[0]!;
    certifiers[0] = flipByte(certifiers[0]!, offsetOf(certifiers[0]!, tx));
    assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: certifiers })), "bad_signature");
  });

  test("an undecodable certifier block → malformed", () => {
    const certifiers = [...at(5).certifierBlocks, new Uint8Array([0x0a, 0x05, 0x01])];
    assertFails(verifyCommitBatch(batch(1, 5, { certifierBlocks: certifiers })), "malformed");
  });

  describe("a batch that crosses the epoch boundary", () => {
    test("yields the valid prefix ending at the end_of_epoch commit, without an error", () => {
      const input = batch(4, 7, { certifierBlocks: lastOfEpoch0.certifierBlocks });
      assert.equal(input.commits.length, 4);
      const result = verifyCommitBatch(input);
      assert.equal(result.error, undefined, result.error?.message);
      assert.deepEqual(indices(result), [4, 5, 6]);
      assert.ok(result.commits.at(-1)!.commit.endOfEpoch !== undefined);
      assert.equal(result.certifierBlocks.length, 4);
    });

    test("the next batch starts the new epoch under the next committee", () => {
      const result = verifyCommitBatch(batch(7, 9, { committee: committee1 }));
      assert.equal(result.error, undefined);
      assert.deepEqual(indices(result), [7, 8, 9]);
    });

    test("certifier blocks of the new epoch cannot certify the end_of_epoch commit", () => {
      assertFails(verifyCommitBatch(batch(4, 7, { certifierBlocks: at(7).certifierBlocks })), "wrong_epoch");
    });
  });
});

describe("verifySignedBlock and verifyLink", () => {
  test("a committed block verifies under its epoch's committee only", () => {
    const blockBytes = at(3).blocks[0]!.bytes;
    const entry = parseSignedBlock(blockBytes);
    verifySignedBlock(entry, committee0, chain.chainId, verifier);
    assert.throws(
      () => verifySignedBlock(entry, committee1, chain.chainId, verifier),
      withCode("wrong_epoch"),
    );
  });

  test("verifyLink checks index and previous digest", () => {
    const entry = parseCommit(at(4).commitBytes);
    verifyLink(entry, 3, at(3).commitDigest);
    assert.throws(() => verifyLink(entry, 2, at(3).commitDigest), withCode("gap"));
    assert.throws(() => verifyLink(entry, 3, at(2).commitDigest), withCode("broken_link"));
  });
});

describe("verifyBlocksAgainstRefs", () => {
  const commit = at(5);
  const refs = parseCommit(commit.commitBytes).commit.blocks;
  const blocks = commit.blocks.map((b) => b.bytes);

  test("the committed blocks match their refs", () => {
    assert.ok(refs.length >= 2, "need a commit with several blocks");
    const result = verifyBlocksAgainstRefs(refs, blocks);
    assert.equal(result.error, undefined);
    assert.deepEqual(result.blocks, blocks);
  });

  test("a prefix of the blocks is fine (the rest is asked again)", () => {
    const result = verifyBlocksAgainstRefs(refs, blocks.slice(0, 1));
    assert.equal(result.error, undefined);
    assert.equal(result.blocks.length, 1);
  });

  test("a tampered block → digest_mismatch, the blocks before it are kept", () => {
    const last = blocks.length - 1;
    const tampered = blocks.slice();
    tampered[last] = flipByte(tampered[last]!, Math.floor(tampered[last]!.length / 2));
    const result = verifyBlocksAgainstRefs(refs, tampered);
    assertCode(result.error, "digest_mismatch");
    assert.deepEqual(result.blocks, blocks.slice(0, last));
  });

  test("blocks out of order → digest_mismatch", () => {
    const result = verifyBlocksAgainstRefs(refs, [...blocks].reverse());
    assertCode(result.error, "digest_mismatch");
    assert.equal(result.blocks.length, 0);
  });

  test("more blocks than refs → malformed, the matching ones are kept", () => {
    const result = verifyBlocksAgainstRefs(refs, [...blocks, blocks[0]!]);
    assertCode(result.error, "malformed");
    assert.deepEqual(result.blocks, blocks);
    assertCode(verifyBlocksAgainstRefs([], [blocks[0]!]).error, "malformed");
  });
});

describe("committees: nextCommitteeFrom and CommitteeView", () => {
  const endEntry = parseCommit(lastOfEpoch0.commitBytes);

  /** The end-of-epoch commit re-encoded with its next committee changed by `mutate`. */
  function withNextCommittee(mutate: (c: Committee) => void) {
    return parseCommit(
      reencodeCommit(lastOfEpoch0.commitBytes, (c) => {
        mutate(c.endOfEpoch!.nextCommittee!);
      }),
    );
  }

  function assertBadCommittee(mutate: (c: Committee) => void, why: RegExp): void {
    assert.throws(
      () => nextCommitteeFrom(withNextCommittee(mutate), committee0),
      (e: unknown) => {
        assertCode(e, "bad_committee");
        assert.match((e as Error).message, why);
        return true;
      },
    );
  }

  test("the happy epoch transition: epoch + 1, the announced validators, and it certifies epoch 1", () => {
    const next = nextCommitteeFrom(endEntry, committee0);
    assert.equal(next.epoch, 1);
    assert.equal(next.size, 4);
    assert.deepEqual(
      next.validators.map((v) => v.protocolKey),
      keysOf(1).map((k) => k.protocol.publicKey),
    );
    assert.ok(next.totalStake > committee0.totalStake, "a stake grew");
    const result = verifyCommitBatch(batch(7, 12, { committee: next }));
    assert.equal(result.error, undefined);
    assert.equal(result.commits.length, 6);
    // And from epoch 1 to 2.
    const next2 = nextCommitteeFrom(parseCommit(at(12).commitBytes), next);
    assert.equal(next2.epoch, 2);
  });

  test("a commit without end_of_epoch → bad_committee", () => {
    assert.throws(
      () => nextCommitteeFrom(parseCommit(at(3).commitBytes), committee0),
      withCode("bad_committee"),
    );
  });

  test("an end-of-epoch commit of another epoch than the committee's → wrong_epoch", () => {
    assert.throws(
      () => nextCommitteeFrom(parseCommit(at(12).commitBytes), committee0),
      withCode("wrong_epoch"),
    );
  });

  test("an empty committee → bad_committee", () => {
    assertBadCommittee((c) => {
      c.validators = [];
    }, /no validators/);
  });

  test("a zero stake → bad_committee", () => {
    assertBadCommittee((c) => {
      c.validators[2]!.stake = 0n;
    }, /stake must be positive/);
  });

  test("a duplicate protocol key → bad_committee", () => {
    assertBadCommittee((c) => {
      c.validators[3]!.protocolKey = c.validators[0]!.protocolKey;
    }, /duplicate protocol_key/);
  });

  test("a duplicate network key → bad_committee", () => {
    assertBadCommittee((c) => {
      c.validators[1]!.networkKey = c.validators[2]!.networkKey;
    }, /duplicate network_key/);
  });

  test("a key of the wrong length → bad_committee", () => {
    assertBadCommittee((c) => {
      c.validators[0]!.protocolKey = c.validators[0]!.protocolKey.subarray(1);
    }, /protocol_key is not 32 bytes/);
    assertBadCommittee((c) => {
      c.validators[0]!.networkKey = new Uint8Array(33);
    }, /network_key is not 32 bytes/);
  });

  test("a next committee whose epoch is not current + 1 → bad_committee", () => {
    for (const epoch of [0n, 2n, 7n])
      assertBadCommittee((c) => {
        c.epoch = epoch;
      }, /expected epoch 1/);
  });

  test("an absurd stake → bad_committee", () => {
    assertBadCommittee((c) => {
      c.validators[0]!.stake = 2n ** 60n;
    }, /too large/);
    assertBadCommittee((c) => {
      for (const v of c.validators) v.stake = 2n ** 50n;
    }, /total stake too large/);
  });

  test("CommitteeView checks the expected epoch and computes the quorum threshold", () => {
    const committee = create(CommitteeSchema, { ...committee0.committee, epoch: 3n });
    assert.equal(new CommitteeView(committee).epoch, 3);
    assert.equal(new CommitteeView(committee, 3).epoch, 3);
    assert.throws(() => new CommitteeView(committee, 4), withCode("bad_committee"));
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 100].map(quorumThreshold), [1, 2, 3, 3, 4, 5, 5, 67]);
    const view = new CommitteeView(committee);
    assert.equal(view.isQuorum(2), false);
    assert.equal(view.isQuorum(3), true);
    assert.equal(view.stakeOf(4), undefined);
    assert.equal(view.protocolKeyOf(4), undefined);
    assert.equal(view.indexOfNetworkKey(committee.validators[2]!.networkKey), 2);
    assert.equal(view.indexOfNetworkKey(new Uint8Array(32)), -1);
  });
});

describe("splitSignedBlock", () => {
  function field(number: number, payload: Uint8Array): Uint8Array {
    // Tag (field << 3 | 2) and a varint length, by hand.
    const length: number[] = [];
    let n = payload.length;
    while (n >= 0x80) {
      length.push((n & 0x7f) | 0x80);
      n >>>= 7;
    }
    length.push(n);
    return new Uint8Array([(number << 3) | 2, ...length, ...payload]);
  }
  const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

  const honest = at(5).certifierBlocks[0]!;
  const { blockBytes, signature } = splitSignedBlock(honest);
  const otherBlockBytes = splitSignedBlock(at(5).certifierBlocks[1]!).blockBytes;

  test("the hand-made encoding equals the generated one (control)", () => {
    assert.deepEqual(cat(field(1, blockBytes), field(2, signature)), honest);
    const parsed = parseSignedBlock(cat(field(1, blockBytes), field(2, signature)));
    assert.deepEqual(parsed.blockBytes, blockBytes);
  });

  test("a SignedBlock whose field 1 appears twice → malformed", () => {
    const doubled = cat(field(1, otherBlockBytes), field(1, blockBytes), field(2, signature));
    // The threat: a message decoder merges both occurrences into one block.
    const merged = fromBinary(SignedBlockSchema, doubled);
    assert.ok(merged.block !== undefined);
    for (const bytes of [doubled, cat(field(1, blockBytes), field(1, blockBytes), field(2, signature))]) {
      assert.throws(() => splitSignedBlock(bytes), withCode("malformed"));
      assert.throws(() => parseSignedBlock(bytes), withCode("malformed"));
    }
    // Field 1 again after the signature is refused too.
    assert.throws(
      () => splitSignedBlock(cat(field(1, blockBytes), field(2, signature), field(1, otherBlockBytes))),
      withCode("malformed"),
    );
  });

  test("other malformed shapes → malformed", () => {
    const cases = [
      cat(field(2, signature), field(1, blockBytes)), // out of order
      cat(field(1, blockBytes), field(2, signature), field(2, signature)), // field 2 twice
      cat(field(1, blockBytes), field(2, signature), field(3, new Uint8Array(1))), // unknown field
      cat(field(1, blockBytes), field(2, signature.subarray(1))), // short signature
      cat(field(1, blockBytes)), // no signature
      field(2, signature), // no block
      new Uint8Array(0),
      cat(field(1, blockBytes), new Uint8Array([0x10, 0x01])), // a varint field
      honest.subarray(0, honest.length - 1), // truncated
    ];
    for (const bytes of cases) assert.throws(() => splitSignedBlock(bytes), withCode("malformed"));
  });
});
