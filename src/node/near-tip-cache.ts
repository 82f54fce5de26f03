/**
 * Near-tip blocks received on the live channel, by digest, for the sync engine: a verified commit
 * that references one needs no fetch. They need no trust (they are used only where a certified
 * commit names their digest).
 *
 * Memory does not depend on how long the node follows the tip:
 * - a block leaves as soon as its commit is applied (`applied`);
 * - a block `staleRounds` rounds older than the newest applied one (or of an earlier epoch) leaves
 *   too: no commit will name it any more (an orphan of the DAG, which no later block referenced);
 * - and the cache is bounded by bytes and by count, oldest evicted first, against a flood.
 */
import { toHex } from "../core/bytes.js";

export interface NearTipCacheOptions {
  /** Blocks held at most. Default 20,000. */
  readonly maxBlocks: number;
  /** Bytes of blocks held at most. Default 64 MiB. */
  readonly maxBytes: number;
  /** Rounds behind the newest applied block after which an unapplied block is dropped. Default 50. */
  readonly staleRounds: number;
}

export const DEFAULT_NEAR_TIP_CACHE_OPTIONS: NearTipCacheOptions = {
  maxBlocks: 20_000,
  maxBytes: 64 * 1024 * 1024,
  staleRounds: 50,
};

/** What the cache needs of a block (a core BlockEntry has it). */
export interface NearTipBlock {
  readonly digest: Uint8Array;
  readonly bytes: Uint8Array;
  readonly epoch: number;
  readonly round: number;
}

interface Held {
  readonly bytes: Uint8Array;
  readonly epoch: number;
  readonly round: number;
}

export class NearTipCache {
  private readonly blocks = new Map<string, Held>();
  private heldBytes = 0;
  private appliedEpoch = 0;
  private appliedRound = 0;
  readonly options: NearTipCacheOptions;

  constructor(options: Partial<NearTipCacheOptions> = {}) {
    this.options = { ...DEFAULT_NEAR_TIP_CACHE_OPTIONS, ...options };
  }

  add(block: NearTipBlock): void {
    if (block.bytes.length > this.options.maxBytes || this.isStale(block)) return;
    const key = toHex(block.digest);
    if (this.blocks.has(key)) return;
    this.blocks.set(key, { bytes: block.bytes, epoch: block.epoch, round: block.round });
    this.heldBytes += block.bytes.length;
    while (this.blocks.size > this.options.maxBlocks || this.heldBytes > this.options.maxBytes) {
      const oldest = this.blocks.keys().next().value;
      if (oldest === undefined) break;
      this.remove(oldest);
    }
  }

  get(digest: Uint8Array): Uint8Array | undefined {
    return this.blocks.get(toHex(digest))?.bytes;
  }

  /** Blocks of `epoch` whose commits were applied: the store has them now; older ones are stale. */
  applied(refs: readonly { readonly digest: Uint8Array; readonly round: number }[], epoch: number): void {
    for (const r of refs) {
      if (epoch > this.appliedEpoch || (epoch === this.appliedEpoch && r.round > this.appliedRound)) {
        this.appliedEpoch = epoch;
        this.appliedRound = r.round;
      }
      if (this.blocks.size > 0) this.remove(toHex(r.digest));
    }
    // Blocks arrive roughly in round order, so the stale ones are at the front.
    for (const [key, held] of this.blocks) {
      if (!this.isStale(held)) break;
      this.remove(key);
    }
  }

  private isStale(b: { readonly epoch: number; readonly round: number }): boolean {
    return (
      b.epoch < this.appliedEpoch ||
      (b.epoch === this.appliedEpoch && b.round + this.options.staleRounds < this.appliedRound)
    );
  }

  private remove(key: string): void {
    const held = this.blocks.get(key);
    if (held === undefined) return;
    this.blocks.delete(key);
    this.heldBytes -= held.bytes.length;
  }

  get size(): number {
    return this.blocks.size;
  }

  get bytes(): number {
    return this.heldBytes;
  }
}
