/**
 * The verified output: committed sub-DAGs, in order, to any number of subscribers.
 *
 * The store is the buffer: a subscriber reads applied commits from it at its own pace, so a slow
 * one costs the engine and the others nothing. Live subscribers are bounded: one that falls more
 * than `bufferCommits` behind the tip fails with a SubscriberLagError naming the index to resume
 * from, instead of holding the chain in memory.
 */
import { type CommitEntry, parseCommit } from "../core/index.js";
import type { Store } from "../store/index.js";

export interface CommittedSubDagView {
  readonly index: number;
  readonly commit: CommitEntry;
  /** Encoded SignedBlocks in `commit.blocks` order. */
  readonly blocks: Uint8Array[];
}

export class SubscriberLagError extends Error {
  override readonly name = "SubscriberLagError";
  readonly code = "lagged";
  constructor(
    readonly resumeFrom: number,
    buffer: number,
  ) {
    super(`subscriber fell more than ${buffer} commits behind the tip: resubscribe from ${resumeFrom}`);
  }
}

export class SubDagBroadcast {
  private readonly listeners = new Set<(highest: number) => void>();

  constructor(
    private readonly store: Store,
    private readonly bufferCommits: number,
  ) {}

  /** Called after each apply. */
  notify(): void {
    const h = this.store.watermarks.highestSynced;
    for (const l of this.listeners) l(h);
  }

  /** A CommitFeed for the server's SubscribeCommits. */
  subscribe(listener: (highest: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }

  /** Sub-DAGs from `from` on: replayed from the store, then live, until `signal` aborts. */
  async *iterate(from: number, signal?: AbortSignal): AsyncGenerator<CommittedSubDagView> {
    let next = Math.max(from, this.store.watermarks.lowestAvailable);
    let live = false;
    let wake: (() => void) | undefined;
    const unsubscribe = this.subscribe(() => wake?.());
    const onAbort = () => wake?.();
    signal?.addEventListener("abort", onAbort);
    try {
      while (signal?.aborted !== true) {
        const highest = this.store.watermarks.highestSynced;
        if (live && highest - next + 1 > this.bufferCommits)
          throw new SubscriberLagError(next, this.bufferCommits);
        if (next > highest) {
          live = true;
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = undefined;
          continue;
        }
        for (const bytes of await this.store.getCommits(next, Math.min(highest, next + 31))) {
          const commit = parseCommit(bytes);
          const blocks = await this.store.getBlocks(commit.commit.blocks);
          yield {
            index: commit.index,
            commit,
            blocks: blocks.filter((b): b is Uint8Array => b !== undefined),
          };
          next = commit.index + 1;
        }
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener("abort", onAbort);
    }
  }
}
