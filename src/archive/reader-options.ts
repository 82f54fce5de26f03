/** Every limit and timeout of the archive reader (DESIGN.md §10), with its default and unit, in one place. */
export interface ArchiveReaderOptions {
  /** How often the manifest is read again, to learn chunks added since, ms. Default 30,000 (30 s). */
  readonly manifestRefreshMs: number;
  /** Largest manifest read, bytes (a manifest of 1,000,000 chunks is ≈ 150 MB; a lie is refused). Default 64 MiB. */
  readonly maxManifestBytes: number;
  /** Largest record of a chunk file, bytes (a commit or a SignedBlock). Default 8 MiB. */
  readonly maxRecordBytes: number;
  /** Chunks kept ready (downloaded, checked and indexed) at once; the least recently used goes first. Default 4. */
  readonly maxOpenChunks: number;
  /** HTTP: time to the response headers, ms. Default 10,000. */
  readonly requestTimeoutMs: number;
  /** HTTP: longest wait for the next bytes of a body before the read is cut and resumed, ms. Default 15,000. */
  readonly idleTimeoutMs: number;
  /** HTTP: attempts per file (the first and the retries; a cut download resumes with a Range request). Default 5. */
  readonly maxAttempts: number;
  /** HTTP: backoff before the first retry, ms; doubled per retry. Default 250. */
  readonly retryBaseMs: number;
  /** HTTP: longest backoff, ms. Default 5,000. */
  readonly retryMaxMs: number;
  /** How long a bad chunk (missing, truncated, tampered, malformed) stays bad before it is read again, ms. Default 300,000 (5 min). */
  readonly badChunkRetryMs: number;
  /** Size of each read of a local chunk file, bytes. Default 1 MiB. */
  readonly readPieceBytes: number;
}

export const DEFAULT_ARCHIVE_READER_OPTIONS: ArchiveReaderOptions = {
  manifestRefreshMs: 30_000,
  maxManifestBytes: 64 * 1024 * 1024,
  maxRecordBytes: 8 * 1024 * 1024,
  maxOpenChunks: 4,
  requestTimeoutMs: 10_000,
  idleTimeoutMs: 15_000,
  maxAttempts: 5,
  retryBaseMs: 250,
  retryMaxMs: 5_000,
  badChunkRetryMs: 300_000,
  readPieceBytes: 1024 * 1024,
};

export function resolveArchiveReaderOptions(input: Partial<ArchiveReaderOptions> = {}): ArchiveReaderOptions {
  return { ...DEFAULT_ARCHIVE_READER_OPTIONS, ...input };
}
