/**
 * Binary keys: big-endian integers, so that LevelDB's byte order is numeric order (DESIGN.md §6).
 */
import type { BlockRef } from "../gen/dagsync/v1/types_pb.js";

export function indexKey(index: number): Uint8Array {
  const key = new Uint8Array(8);
  new DataView(key.buffer).setBigUint64(0, BigInt(index));
  return key;
}

export function readIndexKey(key: Uint8Array): number {
  return Number(new DataView(key.buffer, key.byteOffset, 8).getBigUint64(0));
}

/** round (u32 BE) || author (u32 BE) || digest (32). */
export function blockKey(ref: { round: number; author: number; digest: Uint8Array }): Uint8Array {
  const key = new Uint8Array(8 + ref.digest.length);
  const view = new DataView(key.buffer);
  view.setUint32(0, ref.round);
  view.setUint32(4, ref.author);
  key.set(ref.digest, 8);
  return key;
}

export type BlockKeyRef = Pick<BlockRef, "round" | "author" | "digest">;
