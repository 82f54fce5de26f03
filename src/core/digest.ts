/**
 * SHA-256 digests. node:crypto's createHash is a pure computation (no I/O) and ≈6x faster than
 * @noble/hashes here (DESIGN.md §8), so core uses it directly.
 */
import { hash } from "node:crypto";

export const DIGEST_LENGTH = 32;

export function sha256(bytes: Uint8Array): Uint8Array {
  // One-shot hash (Node ≥ 20.12): no Hash object per call, which matters at ~10^5 blocks/s.
  const d = hash("sha256", bytes, "buffer");
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}
