/**
 * Near-tip blocks received on the live channel, by digest, for the sync engine: a verified commit
 * that references one needs no fetch. They need no trust (they are used only where a certified
 * commit names their digest).
 *
 * Bounded by bytes and by count, oldest evicted first, so memory does not depend on how long the
 * node follows the tip; and a block leaves as soon as its commit is applied (`delete`), so in a
 * steady live phase the cache holds only the blocks of commits not yet formed.
 */
import { toHex } from "../core/bytes.js";

export interface NearTipCacheOptions {
  /** Blocks held at most. Default 20,000. */
  readonly maxBlocks: number;
  /** Bytes of blocks held at most. Default 64 MiB. */
  readonly maxBytes: number;
}

export const DEFAULT_NEAR_TIP_CACHE_OPTIONS: NearTipCacheOptions = {
  maxBlocks: 20_000,
  maxBytes: 64 * 1024 * 1024,
};

export class NearTipCache {
  private readonly blocks = new Map<string, Uint8Array>();
  private heldBytes = 0;
  readonly options: NearTipCacheOptions;

  constructor(options: Partial<NearTipCacheOptions> = {}) {
    this.options = { ...DEFAULT_NEAR_TIP_CACHE_OPTIONS, ...options };
  }

  add(digest: Uint8Array, bytes: Uint8Array): void {
    if (bytes.length > this.options.maxBytes) return;
    const key = toHex(digest);
    if (this.blocks.has(key)) return;
    this.blocks.set(key, bytes);
    this.heldBytes += bytes.length;
    while (this.blocks.size > this.options.maxBlocks || this.heldBytes > this.options.maxBytes) {
      const oldest = this.blocks.keys().next().value;
      if (oldest === undefined) break;
      this.remove(oldest);
    }
  }

  get(digest: Uint8Array): Uint8Array | undefined {
    return this.blocks.get(toHex(digest));
  }

  /** Drops blocks whose commits were applied: the store has them now. */
  delete(digests: readonly Uint8Array[]): void {
    if (this.blocks.size === 0) return;
    for (const d of digests) this.remove(toHex(d));
  }

  private remove(key: string): void {
    const bytes = this.blocks.get(key);
    if (bytes === undefined) return;
    this.blocks.delete(key);
    this.heldBytes -= bytes.length;
  }

  get size(): number {
    return this.blocks.size;
  }

  get bytes(): number {
    return this.heldBytes;
  }
}
