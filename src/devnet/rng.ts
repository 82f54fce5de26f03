/**
 * Deterministic randomness for the devnet: a seed fully determines keys, shapes and payloads, so
 * that two runs (and two machines) produce byte-identical chains.
 */
import { createHash } from "node:crypto";

/** xoshiro128** seeded from SHA-256 of the label: fast, good enough for synthetic data. */
export class Rng {
  private s: Uint32Array;

  constructor(seed: string) {
    const h = createHash("sha256").update(seed).digest();
    this.s = new Uint32Array([
      h.readUInt32LE(0),
      h.readUInt32LE(4),
      h.readUInt32LE(8),
      h.readUInt32LE(12) | 1,
    ]);
  }

  /** The generator's state, to continue it elsewhere (see `Rng.fromState`). */
  state(): number[] {
    return [...this.s];
  }

  static fromState(state: readonly number[]): Rng {
    const rng = new Rng("");
    rng.s = new Uint32Array(state);
    return rng;
  }

  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return this.nextU32() % n;
  }

  fill(out: Uint8Array): Uint8Array {
    let i = 0;
    for (; i + 4 <= out.length; i += 4) {
      const v = this.nextU32();
      out[i] = v;
      out[i + 1] = v >>> 8;
      out[i + 2] = v >>> 16;
      out[i + 3] = v >>> 24;
    }
    for (; i < out.length; i++) out[i] = this.nextU32();
    return out;
  }

  /** A random subset of `items` of the given size, in the original order. */
  subset<T>(items: readonly T[], size: number): T[] {
    const chosen = new Set<number>();
    while (chosen.size < Math.min(size, items.length)) chosen.add(this.below(items.length));
    return items.filter((_, i) => chosen.has(i));
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** A 32-byte seed derived from a label, for deterministic keys. */
export function deriveSeed(label: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(label).digest());
}
