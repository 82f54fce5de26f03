/**
 * Near-tip blocks received on the live channel, by digest, for the sync engine: a verified commit
 * that references one needs no fetch. Bounded: the oldest are evicted first.
 */
import { toHex } from "../core/bytes.js";

export class NearTipCache {
  private readonly blocks = new Map<string, Uint8Array>();

  constructor(private readonly capacity = 20_000) {}

  add(digest: Uint8Array, bytes: Uint8Array): void {
    const key = toHex(digest);
    if (this.blocks.has(key)) return;
    this.blocks.set(key, bytes);
    if (this.blocks.size > this.capacity) {
      const oldest = this.blocks.keys().next().value;
      if (oldest !== undefined) this.blocks.delete(oldest);
    }
  }

  get(digest: Uint8Array): Uint8Array | undefined {
    return this.blocks.get(toHex(digest));
  }

  get size(): number {
    return this.blocks.size;
  }
}
