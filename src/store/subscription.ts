/**
 * The one replay-then-follow primitive behind every sub-DAG subscription: the in-process
 * broadcast (src/sync/broadcast.ts), the server's SubscribeCommits, and serve's local feed.
 *
 * A subscriber replays applied commits from the store at its own pace, then follows live. Whoever
 * applies commits hands the applied units over (`publish`): the last `memoryCommits` of them stay
 * in memory, so a caught-up subscriber gets the sub-DAG just applied without reading LevelDB.
 *
 * One set of errors, whatever the path (SubscriptionError, `code`):
 * - `invalid_argument`: a start below 1;
 * - `out_of_range`: a start (or, while replaying, the next commit) below the lowest available one,
 *   i.e. pruned — never a silent start at the lowest;
 * - `not_found`: a commit or block at or below the highest synced commit that the store lacks —
 *   never a silent skip;
 * - `lagged` (SubscriberLagError): a live subscriber more than `bufferCommits` behind the tip;
 *   `resumeFrom` says where to start again. Memory stays bounded whatever a subscriber does.
 */
import {
  type CommitEntry,
  formatBlockRef,
  parseCommit,
  SubscriberLagError,
  SubscriptionError,
} from "../core/index.js";
import type { ApplyUnit, Store } from "./store.js";

/** A committed sub-DAG as stored: the parsed commit and its encoded SignedBlocks. */
export interface CommittedSubDagView {
  readonly index: number;
  readonly commit: CommitEntry;
  /** Encoded SignedBlocks in `commit.blocks` order. */
  readonly blocks: Uint8Array[];
}

export interface SubDagFeedOptions {
  /** Commits a live subscriber may fall behind the tip before it fails with `lagged`. Default 1,024. */
  readonly bufferCommits: number;
  /** Commits read from the store in one replay step. Default 32. */
  readonly readAhead: number;
  /** Recently applied sub-DAGs kept in memory for caught-up subscribers. Default 64. */
  readonly memoryCommits: number;
}

export const DEFAULT_SUB_DAG_FEED_OPTIONS: SubDagFeedOptions = {
  bufferCommits: 1024,
  readAhead: 32,
  memoryCommits: 64,
};

export interface IterateOptions {
  readonly signal?: AbortSignal | undefined;
  /** Overrides the feed's `bufferCommits` for this subscriber (the server has its own limit). */
  readonly bufferCommits?: number | undefined;
  /** Overrides the feed's `readAhead` for this subscriber. */
  readonly readAhead?: number | undefined;
  /**
   * Admission for one replay step (a store read while not yet live): resolves with a release
   * function once the step may run. The server passes its bulk tickets here.
   */
  readonly admitReplayStep?: (() => Promise<(() => void) | undefined>) | undefined;
  /** Called once, when the subscriber has caught up with the tip and starts following live. */
  readonly onLive?: (() => void) | undefined;
  /** Where each sub-DAG came from: for metrics and tests. */
  readonly onSource?: ((source: "memory" | "store") => void) | undefined;
}

interface Recent {
  readonly unit: ApplyUnit;
  view: CommittedSubDagView | undefined;
}

export class SubDagFeed {
  readonly options: SubDagFeedOptions;
  private readonly listeners = new Set<(highestSynced: number) => void>();
  /** The last `memoryCommits` published units by index (insertion order = index order). */
  private readonly recent = new Map<number, Recent>();
  private lastRecent: number | undefined;

  constructor(
    private readonly store: Store,
    options: Partial<SubDagFeedOptions> = {},
  ) {
    this.options = { ...DEFAULT_SUB_DAG_FEED_OPTIONS, ...options };
  }

  /**
   * Called after each apply with the units just applied (in index order): caught-up subscribers
   * take them from memory. Units that are not contiguous with what is held replace it.
   */
  publish(units: readonly ApplyUnit[]): void {
    if (this.listeners.size === 0) {
      // Nobody follows (a node catching up alone): hold nothing; a later subscriber replays.
      this.recent.clear();
      this.lastRecent = undefined;
      return;
    }
    for (const unit of units) {
      if (this.lastRecent !== undefined && unit.index !== this.lastRecent + 1) this.recent.clear();
      this.recent.set(unit.index, { unit, view: undefined });
      this.lastRecent = unit.index;
      if (this.recent.size > this.options.memoryCommits) {
        const oldest = this.recent.keys().next().value;
        if (oldest !== undefined) this.recent.delete(oldest);
      }
    }
    this.notify();
  }

  /** Wakes subscribers after an apply whose units were not handed over (they read the store). */
  notify(): void {
    const h = this.store.watermarks.highestSynced;
    for (const l of this.listeners) l(h);
  }

  /** Listens for applies (the highest synced commit after each). */
  subscribe(listener: (highestSynced: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }

  private fromMemory(index: number): CommittedSubDagView | undefined {
    const r = this.recent.get(index);
    if (r === undefined) return undefined;
    r.view ??= {
      index,
      commit: parseCommit(r.unit.commitBytes),
      blocks: r.unit.blocks.map((b) => b.bytes),
    };
    return r.view;
  }

  private pruned(index: number): SubscriptionError {
    return new SubscriptionError(
      "out_of_range",
      `commit ${index} was pruned: this node serves from ${this.store.watermarks.lowestAvailable}`,
    );
  }

  /**
   * Sub-DAGs from `from` on: replayed from the store, then live, until `signal` aborts. Fails
   * with a SubscriptionError (see the module comment); checks the start before the first `next()`
   * resolves.
   */
  async *iterate(
    from: number,
    optionsOrSignal: IterateOptions | AbortSignal = {},
  ): AsyncGenerator<CommittedSubDagView> {
    const options: IterateOptions =
      optionsOrSignal instanceof AbortSignal ? { signal: optionsOrSignal } : optionsOrSignal;
    const { signal } = options;
    const aborted = () => signal?.aborted === true;
    const buffer = options.bufferCommits ?? this.options.bufferCommits;
    const readAhead = Math.max(1, options.readAhead ?? this.options.readAhead);
    if (!Number.isSafeInteger(from) || from < 1)
      throw new SubscriptionError("invalid_argument", `start ${from}: commit indices start at 1`);
    if (from < this.store.watermarks.lowestAvailable) throw this.pruned(from);
    let next = from;
    let live = false;
    let wake: (() => void) | undefined;
    const unsubscribe = this.subscribe(() => wake?.());
    const onAbort = () => wake?.();
    signal?.addEventListener("abort", onAbort);
    try {
      while (!aborted()) {
        const { highestSynced: highest, lowestAvailable } = this.store.watermarks;
        if (live && highest - next + 1 > buffer) throw new SubscriberLagError(next, buffer);
        if (next > highest) {
          if (!live) options.onLive?.();
          live = true;
          await new Promise<void>((resolve) => {
            wake = resolve;
            if (aborted()) resolve();
          });
          wake = undefined;
          continue;
        }
        const held = this.fromMemory(next);
        if (held !== undefined) {
          options.onSource?.("memory");
          yield held;
          next++;
          continue;
        }
        if (next < lowestAvailable) throw this.pruned(next);
        const end = Math.min(highest, next + readAhead - 1);
        // A replay step may wait for admission (the server's bulk tickets); following live does not.
        const release = live ? undefined : await options.admitReplayStep?.();
        try {
          const commits = await this.store.getCommits(next, end);
          if (commits.length === 0) {
            if (next < this.store.watermarks.lowestAvailable) throw this.pruned(next);
            throw new SubscriptionError("not_found", `commit ${next} is missing from the store`);
          }
          for (const bytes of commits) {
            if (aborted()) return;
            const commit = parseCommit(bytes);
            const blocks = await this.store.getBlocks(commit.commit.blocks);
            const missing = blocks.indexOf(undefined);
            if (missing >= 0)
              throw new SubscriptionError(
                "not_found",
                `commit ${commit.index}: block ${formatBlockRef(commit.commit.blocks[missing]!)} is missing`,
              );
            options.onSource?.("store");
            yield { index: commit.index, commit, blocks: blocks as Uint8Array[] };
            next = commit.index + 1;
          }
        } finally {
          release?.();
        }
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener("abort", onAbort);
    }
  }
}
