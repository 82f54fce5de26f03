/** Every limit of the archive writer (DESIGN.md §10), with its default and unit, in one place. */

export interface ArchiveWriterOptions {
  /**
   * Most commits in one chunk (DESIGN §10 `archiveChunkCommits`). A chunk ends earlier at its
   * epoch's last commit, or at the highest commit in range whose certifier blocks the store
   * holds. Default 1,000.
   */
  readonly chunkCommits: number;
  /** How often `serve --archive-out` exports what is new, ms. Default 30,000 (30 s). */
  readonly exportIntervalMs: number;
  /**
   * Commits read from the store at once while a chunk is written (each with its blocks): with
   * `writeBufferBytes`, what bounds the writer's memory, whatever the chunk's size. Default 16.
   */
  readonly readCommits: number;
  /** Bytes gathered before one write to the chunk file. Default 1 MiB. */
  readonly writeBufferBytes: number;
}

export const DEFAULT_ARCHIVE_WRITER_OPTIONS: ArchiveWriterOptions = {
  chunkCommits: 1_000,
  exportIntervalMs: 30_000,
  readCommits: 16,
  writeBufferBytes: 1024 * 1024,
};

export function resolveArchiveWriterOptions(input: Partial<ArchiveWriterOptions> = {}): ArchiveWriterOptions {
  const o = { ...DEFAULT_ARCHIVE_WRITER_OPTIONS, ...input };
  for (const [name, value] of Object.entries(o))
    if (!Number.isSafeInteger(value) || value < 1)
      throw new RangeError(`archive writer option ${name} must be a positive integer (got ${value})`);
  return o;
}
