/**
 * Raw views (DESIGN.md §2). Blocks and commits are identified by the exact bytes their authors
 * produced, so we never hash or relay a re-encoding. These helpers read a message's bytes as
 * received, split a SignedBlock into the signed field-1 bytes and the signature, and decode the
 * structured form from those same bytes.
 *
 * Threat: a SignedBlock whose field 1 occurs twice decodes (as a message) to the *merge* of both
 * occurrences, while a bytes-view would see only the last one; a signature over one and a
 * decoded block from the other would let a forger attach any block to a valid signature. So the
 * split is strict: exactly one field 1 followed by one field 2, nothing else, and the block is
 * decoded from exactly the bytes the signature covers. Blocks and commits decode through
 * decodeStrict (wire-check.ts), so a field of the wrong wire type is malformed, not misread.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import {
  type Block,
  type BlockRef,
  BlockSchema,
  type Commit,
  CommitSchema,
} from "../gen/dagsync/v1/types_pb.js";
import { safeNumber } from "./bytes.js";
import { DIGEST_LENGTH, sha256 } from "./digest.js";
import { PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH } from "./ed25519-lengths.js";
import { VerifyError } from "./errors.js";
import { decodeStrict } from "./wire-check.js";

export { PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH };

/** A commit with the bytes it was received as and their digest. */
export interface CommitEntry {
  readonly commit: Commit;
  readonly bytes: Uint8Array;
  readonly digest: Uint8Array;
  readonly index: number;
  readonly epoch: number;
}

/** A signed block with its received bytes, digest and ref. */
export interface BlockEntry {
  readonly block: Block;
  /** The encoded SignedBlock. */
  readonly bytes: Uint8Array;
  /** Field 1 of the SignedBlock: the bytes the signature covers. */
  readonly blockBytes: Uint8Array;
  readonly signature: Uint8Array;
  readonly digest: Uint8Array;
  readonly round: number;
  readonly author: number;
  readonly epoch: number;
}

function malformed(what: string, cause: unknown): VerifyError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new VerifyError("malformed", `${what} does not decode: ${detail}`);
}

/** Splits an encoded SignedBlock into the signed block bytes and the signature, strictly. */
export function splitSignedBlock(bytes: Uint8Array): { blockBytes: Uint8Array; signature: Uint8Array } {
  let blockBytes: Uint8Array | undefined;
  let signature: Uint8Array | undefined;
  try {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (wireType !== WireType.LengthDelimited) throw new Error(`field ${field} has wire type ${wireType}`);
      if (field === 1 && blockBytes === undefined && signature === undefined) blockBytes = reader.bytes();
      else if (field === 2 && blockBytes !== undefined && signature === undefined) signature = reader.bytes();
      else throw new Error(`unexpected or repeated field ${field}`);
    }
  } catch (e) {
    throw malformed("SignedBlock", e);
  }
  if (blockBytes === undefined) throw new VerifyError("malformed", "SignedBlock has no block (field 1)");
  if (signature === undefined || signature.length !== SIGNATURE_LENGTH)
    throw new VerifyError("malformed", `SignedBlock signature must be ${SIGNATURE_LENGTH} bytes`);
  return { blockBytes, signature };
}

/**
 * The signed bytes, signature, epoch, round and author of an encoded SignedBlock, reading only
 * the Block's scalar header fields (the rest is skipped, not decoded or checked; no digest).
 * For a pass ahead of the full check (parseSignedBlock), never instead of it.
 */
export function peekSignedBlock(bytes: Uint8Array): {
  blockBytes: Uint8Array;
  signature: Uint8Array;
  epoch: number;
  round: number;
  author: number;
} {
  const { blockBytes, signature } = splitSignedBlock(bytes);
  let epoch = 0;
  let round = 0;
  let author = 0;
  try {
    const reader = new BinaryReader(blockBytes);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 1 && wireType === WireType.Varint) epoch = Number(reader.uint64());
      else if (field === 2 && wireType === WireType.Varint) round = reader.uint32();
      else if (field === 3 && wireType === WireType.Varint) author = reader.uint32();
      else reader.skip(wireType, field);
    }
  } catch (e) {
    throw malformed("Block", e);
  }
  return { blockBytes, signature, epoch, round, author };
}

export function parseSignedBlock(bytes: Uint8Array): BlockEntry {
  return decodeSignedBlock(bytes, undefined);
}

/**
 * parseSignedBlock for bytes the caller has just checked hash to `digest` (against a verified
 * ref): saves hashing them again.
 */
export function parseSignedBlockWithDigest(bytes: Uint8Array, digest: Uint8Array): BlockEntry {
  return decodeSignedBlock(bytes, digest);
}

function decodeSignedBlock(bytes: Uint8Array, digest: Uint8Array | undefined): BlockEntry {
  const { blockBytes, signature } = splitSignedBlock(bytes);
  let block: Block;
  try {
    block = decodeStrict(BlockSchema, blockBytes);
  } catch (e) {
    throw malformed("Block", e);
  }
  let epoch: number;
  try {
    epoch = safeNumber(block.epoch, "block epoch");
    safeNumber(block.timestampMs, "block timestamp");
    for (const vote of block.commitVotes) {
      safeNumber(vote.index, "commit vote index");
      if (vote.digest.length !== DIGEST_LENGTH) throw new Error("commit vote digest is not 32 bytes");
    }
    for (const a of block.ancestors)
      if (a.digest.length !== DIGEST_LENGTH) throw new Error("ancestor digest is not 32 bytes");
  } catch (e) {
    throw malformed("Block", e);
  }
  return {
    block,
    bytes,
    blockBytes,
    signature,
    digest: digest ?? sha256(bytes),
    round: block.round,
    author: block.author,
    epoch,
  };
}

export function parseCommit(bytes: Uint8Array): CommitEntry {
  let commit: Commit;
  let index: number;
  let epoch: number;
  try {
    commit = decodeStrict(CommitSchema, bytes);
    index = safeNumber(commit.index, "commit index");
    epoch = safeNumber(commit.epoch, "commit epoch");
    safeNumber(commit.timestampMs, "commit timestamp");
    if (commit.previousDigest.length !== DIGEST_LENGTH) throw new Error("previous_digest is not 32 bytes");
    if (commit.leader === undefined) throw new Error("no leader");
    for (const ref of [commit.leader, ...commit.blocks]) checkBlockRef(ref);
  } catch (e) {
    throw malformed("Commit", e);
  }
  return { commit, bytes, digest: sha256(bytes), index, epoch };
}

/** A BlockRef is well formed when its digest is 32 bytes (round and author are any u32). */
export function checkBlockRef(ref: BlockRef): void {
  if (ref.digest.length !== DIGEST_LENGTH)
    throw new Error(`block ref digest is ${ref.digest.length} bytes, not 32`);
}

function varintLength(n: number): number {
  let length = 1;
  for (let v = n; v >= 0x80; v = Math.floor(v / 128)) length++;
  return length;
}

/** Length-delimited fields, each given as raw bytes: see encodeRawFields. */
export type RawFields = readonly (readonly [field: number, values: readonly Uint8Array[]])[];

/** Bytes `fields` take on the wire (encodeRawFields' output length). */
export function rawFieldsSize(fields: RawFields): number {
  let size = 0;
  for (const [field, values] of fields) {
    const tagLength = varintLength((field << 3) | 2);
    for (const v of values) size += tagLength + varintLength(v.length) + v.length;
  }
  return size;
}

/**
 * Writes `fields` into `out` from `at` (which must have rawFieldsSize(fields) bytes there) and
 * returns the position after them.
 */
export function writeRawFields(fields: RawFields, out: Uint8Array, at = 0): number {
  let pos = at;
  const writeVarint = (n: number) => {
    let v = n;
    while (v >= 0x80) {
      out[pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    out[pos++] = v;
  };
  for (const [field, values] of fields) {
    const tag = (field << 3) | 2;
    for (const v of values) {
      writeVarint(tag);
      writeVarint(v.length);
      out.set(v, pos);
      pos += v.length;
    }
  }
  return pos;
}

/**
 * Encodes a message made only of length-delimited fields, each given as raw bytes, in one
 * allocation: the wire form of `repeated bytes` and of `repeated Message` alike. Servers use it
 * to assemble responses from stored canonical bytes without re-encoding them; fields are written
 * in the order given (pass them in field-number order for the canonical form).
 */
export function encodeRawFields(fields: RawFields): Uint8Array {
  const out = new Uint8Array(rawFieldsSize(fields));
  writeRawFields(fields, out);
  return out;
}

/** Bytes one length-delimited field of `length` bytes takes on the wire, for a field number below 16. */
export function rawFieldSize(length: number): number {
  return 1 + varintLength(length) + length;
}
