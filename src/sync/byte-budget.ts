/**
 * The byte budget (DESIGN §4 item 6): bytes fetched but not yet applied, plus bytes reserved for
 * answers still in flight, stay under `maxInflightBytes`, so memory is bounded whatever the chain
 * length. The segment at the head is always allowed, so progress never deadlocks on the budget.
 *
 * Threat: a peer controls how big its answers are. Reservations are estimates (a running average
 * of block sizes), and every accepted byte is held against the segment that keeps it until that
 * segment is applied or dropped, so a peer answering big only slows the pipeline down.
 */
import type { SyncOptions } from "./options.js";

/** Anything that holds fetched bytes (a segment). */
export interface ByteHolder {
  bytes: number;
}

export class ByteBudget {
  /** Bytes fetched and held by segments. */
  private held = 0;
  /** Bytes reserved for answers in flight. */
  private reserved = 0;
  /** Running average of a block's size, bytes, for reservations. */
  private blockBytes: number;

  constructor(private readonly options: SyncOptions) {
    this.blockBytes = options.initialBlockBytesEstimate;
  }

  /** Bytes fetched but not applied (the `dagsync_inflight_bytes` gauge). */
  get inflightBytes(): number {
    return this.held;
  }

  /** Whether `extra` more bytes may be asked for; the head segment always may. */
  allows(extra: number, head: boolean): boolean {
    return head || this.held + this.reserved + extra <= this.options.maxInflightBytes;
  }

  /** Estimated bytes of a FetchCommits answer of `commits` commits (without its blocks). */
  estimateCommits(commits: number): number {
    return commits * this.options.commitBytesEstimate;
  }

  /** Estimated bytes of `blocks` blocks. */
  estimateBlocks(blocks: number): number {
    return blocks * this.blockBytes;
  }

  /** Learns block sizes from an answer of `bytes` for `blocks` blocks. */
  observeBlocks(bytes: number, blocks: number): void {
    const w = this.options.blockEstimateWeight;
    this.blockBytes = Math.max(
      this.options.minBlockBytesEstimate,
      Math.round((1 - w) * this.blockBytes + (w * bytes) / blocks),
    );
  }

  reserve(bytes: number): void {
    this.reserved += bytes;
  }

  unreserve(bytes: number): void {
    this.reserved -= bytes;
  }

  hold(holder: ByteHolder, bytes: number): void {
    holder.bytes += bytes;
    this.held += bytes;
  }

  release(holder: ByteHolder): void {
    this.held -= holder.bytes;
    holder.bytes = 0;
  }
}
