/**
 * Every limit of the store (`Store.open`) and of pruning (`Store.prune`, `dagsync prune`), with
 * its default and unit, in one place.
 */

export interface StoreLimits {
  /**
   * Certifier entries remembered while they still hold the bytes of blocks that a later apply
   * may store in blocks/ (then they are rewritten as keys: src/store/certifiers.ts), entries.
   * Default 256. A syncing node has one per applied batch, resolved by the next; past the bound
   * the oldest keeps its bytes, which costs disk, never correctness. Memory: at most this many
   * certifier sets (≈4 blocks each).
   */
  readonly pendingCertifierEntries: number;
  /**
   * Table files each LevelDB database (chain/, blocks/) keeps open, files. Default 128 (LevelDB's
   * own is 1,000). An open table keeps its index in memory and its file mapped, and what a
   * compaction read of it touched stays resident: a 1,000,000-block catch-up (≈1,200 tables in
   * blocks/) peaked at 305 MB RSS with 1,000 and 251 MB with 100, in the same time
   * (BENCHMARKS.md, issue 16). A FetchBlocks of consecutive refs reads one to three tables.
   */
  readonly maxOpenFiles: number;
}

export const DEFAULT_STORE_LIMITS: StoreLimits = {
  pendingCertifierEntries: 256,
  maxOpenFiles: 128,
};

export interface PruneOptions {
  /**
   * Commits deleted per step, commits. Default 1024. One step reads these commits (to find
   * their blocks), deletes their blocks, compacts the blocks' rounds, deletes the commits and
   * their certifiers, and compacts those indices: memory and the work of one step are bounded by
   * this many commits, whatever the length of the history pruned.
   */
  readonly commitsPerBatch: number;
  /**
   * Compact each step's deleted key ranges, so that LevelDB rewrites the table files holding
   * them and deletes what is no longer referenced (`compactRange`). Default true. Without it the
   * disk space stays taken until LevelDB compacts those ranges on its own, which it does only when
   * it writes there again — never, below the lowest kept commit.
   */
  readonly compact: boolean;
}

export const DEFAULT_PRUNE_OPTIONS: PruneOptions = {
  commitsPerBatch: 1024,
  compact: true,
};

export function resolvePruneOptions(input: Partial<PruneOptions> = {}): PruneOptions {
  const options = { ...DEFAULT_PRUNE_OPTIONS, ...input };
  if (!Number.isSafeInteger(options.commitsPerBatch) || options.commitsPerBatch < 1)
    throw new RangeError(`commitsPerBatch must be a positive integer, not ${options.commitsPerBatch}`);
  return options;
}
