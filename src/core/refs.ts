/** BlockRef and CommitRef helpers: construction, equality, map keys and display. Pure. */
import { create } from "@bufbuild/protobuf";
import {
  type BlockRef,
  BlockRefSchema,
  type CommitRef,
  CommitRefSchema,
} from "../gen/dagsync/v1/types_pb.js";
import { bytesEqual, shortHex, toHex } from "./bytes.js";
import type { BlockEntry, CommitEntry } from "./wire.js";

export function blockRefOf(entry: BlockEntry): BlockRef {
  return create(BlockRefSchema, { round: entry.round, author: entry.author, digest: entry.digest });
}

export function commitRefOf(entry: CommitEntry): CommitRef {
  return create(CommitRefSchema, { index: BigInt(entry.index), digest: entry.digest });
}

export function blockRefEquals(a: BlockRef, b: BlockRef): boolean {
  return a.round === b.round && a.author === b.author && bytesEqual(a.digest, b.digest);
}

export function commitRefEquals(a: CommitRef, b: CommitRef): boolean {
  return a.index === b.index && bytesEqual(a.digest, b.digest);
}

/** A string key that identifies a block ref (for maps and dedup sets). */
export function blockRefKey(ref: BlockRef): string {
  return `${ref.round}/${ref.author}/${toHex(ref.digest)}`;
}

export function formatBlockRef(ref: Pick<BlockRef, "round" | "author" | "digest">): string {
  return `B(round ${ref.round}, author ${ref.author}, ${shortHex(ref.digest)})`;
}

export function formatCommitRef(ref: CommitRef): string {
  return `C(${ref.index}, ${shortHex(ref.digest)})`;
}
