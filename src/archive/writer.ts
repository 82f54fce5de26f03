/**
 * The archive writer of DESIGN.md §10: appends to ARCHIVE/ the chunks that a store completes
 * since the last run, and publishes them in manifest.json.
 *
 * Which commits a chunk holds. A chunk is commits first..last of one epoch, at most
 * `chunkCommits`, and ends at a commit whose certifier blocks the store holds (a reader verifies
 * the chunk with them). A validator's store (a devnet's, or one a live producer appends to) holds
 * the certifiers of every commit; a full node's holds them only for the last commit of each
 * verified batch, and batches never cross an epoch, so every epoch's last commit has them. So
 * `last` is the highest certified commit in first..min(first + chunkCommits − 1, end of first's
 * epoch). A chunk is written only when that range is complete: it reaches its epoch's last commit,
 * or all chunkCommits commits are held. The tail after the last complete chunk waits for the next
 * run, so chunks are the same whenever the export runs (on a store with the same certifiers).
 *
 * Durability. A chunk is streamed commit by commit to `<file>.tmp` (its SHA-256 and size computed
 * as it is written; memory bounded by `readCommits` commits and `writeBufferBytes`), fsynced and
 * renamed; then manifest.json is replaced the same way (manifest.json.tmp, fsync, rename, fsync of
 * the directory). A published chunk (one the manifest names) is never opened for writing again; a
 * crash between a chunk's rename and the manifest's leaves an unpublished file, which the next run
 * writes again under the same name.
 *
 * Two writers on one archive at once are not guarded against: `serve --archive-out` runs one
 * export at a time, and `archive export` needs the store to be stopped.
 */
import { createHash } from "node:crypto";
import { type FileHandle, mkdir, open, readFile, rename, stat, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { toHex } from "../core/bytes.js";
import { DagsyncError } from "../core/errors.js";
import { parseCommit } from "../core/wire.js";
import type { Store } from "../store/index.js";
import {
  ARCHIVE_FORMAT,
  ArchiveError,
  chunkFileName,
  formatManifest,
  MANIFEST_FILE,
  type Manifest,
  type ManifestChunk,
  parseManifest,
  RecordKind,
  recordHeader,
} from "./format.js";
import { type ArchiveWriterOptions, resolveArchiveWriterOptions } from "./options.js";

export type ExportErrorCode =
  /** manifest.json is not a manifest of this format (ArchiveError "bad_manifest"). */
  | "bad_manifest"
  /** manifest.json is of another chain or genesis. */
  | "other_chain"
  /** The store is pruned above where the archive ends: the commits between are in neither. */
  | "pruned_past_archive"
  /** No commit of a complete range has certifier blocks in the store (chunkCommits too small). */
  | "uncertified"
  /** The store lacks a commit or block it should hold (pruned or damaged while exporting). */
  | "store_gap"
  /** The archive directory cannot be created, read or written. */
  | "io";

export class ExportError extends DagsyncError {
  override readonly name = "ExportError";
  constructor(
    override readonly code: ExportErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

export interface ExportHooks {
  /** Called once each chunk is published in the manifest. */
  readonly onChunk?: ((chunk: ManifestChunk) => void) | undefined;
  /** Stops the export between commits; the chunk being written is left unpublished. */
  readonly signal?: AbortSignal | undefined;
}

export interface ExportResult {
  /** The archive directory. */
  readonly archive: string;
  /** Chunks written and published by this run, in order. */
  readonly written: readonly ManifestChunk[];
  /** Bytes of the chunk files written by this run. */
  readonly bytesWritten: number;
  /** Chunks in the manifest now. */
  readonly chunks: number;
  /** First and last commit in the archive now; undefined while it holds none. */
  readonly first: number | undefined;
  readonly last: number | undefined;
  /**
   * True when this run began the archive at a pruned store's lowest commit (above 1, `first`):
   * the commits below it are in no chunk.
   */
  readonly startedFromPruned: boolean;
  /** Commits the store holds after the archive's end that wait for their chunk to be complete. */
  readonly waiting: { readonly first: number; readonly last: number } | undefined;
}

const manifestPath = (outDir: string) => join(outDir, MANIFEST_FILE);

/**
 * Appends to the archive in `outDir` the chunks the store completes since the last run (all of
 * them when there is no archive yet) and publishes each in manifest.json as it is written.
 * `store` may be in use (serve appends to it meanwhile): the export reads up to the highest
 * synced commit it sees at its start.
 */
export async function exportArchive(
  store: Store,
  outDir: string,
  options: Partial<ArchiveWriterOptions> = {},
  hooks: ExportHooks = {},
): Promise<ExportResult> {
  const o = resolveArchiveWriterOptions(options);
  const chainId = store.genesis.genesis.chainId;
  const existing = await readManifest(outDir, chainId, store.genesis.digest);
  const marks = store.watermarks;
  const previous = existing?.chunks.at(-1);
  let next = previous === undefined ? marks.lowestAvailable : previous.last + 1;
  if (previous !== undefined && marks.lowestAvailable > next)
    throw new ExportError(
      "pruned_past_archive",
      `archive ${outDir} ends at commit ${previous.last}, but store ${store.path}'s lowest commit is ${marks.lowestAvailable}: commits ${next}..${marks.lowestAvailable - 1} are pruned; export from a store that still holds them`,
    );

  await ensureDirectory(outDir);
  const chunks: ManifestChunk[] = [...(existing?.chunks ?? [])];
  const published = new Set(chunks.map((c) => c.file));
  const written: ManifestChunk[] = [];
  let bytesWritten = 0;
  // A new archive gets its manifest at once, even empty: it names the chain from the start.
  if (existing === undefined) await publishManifest(outDir, manifestOf(chainId, store, chunks));

  const high = marks.highestSynced;
  while (next <= high) {
    hooks.signal?.throwIfAborted();
    const { epoch, end } = store.epochBoundsOf(next);
    const limit = Math.min(next + o.chunkCommits - 1, end ?? Number.POSITIVE_INFINITY);
    if (limit > high) break; // incomplete: waits for the next run
    const last = await store.highestCertifiedIn(next, limit);
    if (last === undefined)
      throw new ExportError(
        "uncertified",
        `no commit in ${next}..${limit} has certifier blocks in store ${store.path} (a full node keeps them only for the last commit of each verified batch): use more commits per chunk than ${o.chunkCommits}`,
      );
    const file = chunkFileName(epoch, next, last);
    if (published.has(file))
      throw new ExportError("io", `archive ${outDir}: ${file} is already published for other commits`);
    const chunk = await writeChunk(store, outDir, { first: next, last, epoch, file }, o, hooks.signal);
    chunks.push(chunk);
    published.add(file);
    await publishManifest(outDir, manifestOf(chainId, store, chunks));
    written.push(chunk);
    bytesWritten += chunk.bytes;
    hooks.onChunk?.(chunk);
    next = last + 1;
  }
  return {
    archive: outDir,
    written,
    bytesWritten,
    chunks: chunks.length,
    first: chunks[0]?.first,
    last: chunks.at(-1)?.last,
    startedFromPruned: previous === undefined && written.length > 0 && written[0]!.first > 1,
    waiting: next <= high ? { first: next, last: high } : undefined,
  };
}

function manifestOf(chainId: string, store: Store, chunks: readonly ManifestChunk[]): Manifest {
  return { format: ARCHIVE_FORMAT, chain_id: chainId, genesis_digest: toHex(store.genesis.digest), chunks };
}

/** The archive's manifest, checked against the store's chain; undefined when there is none yet. */
async function readManifest(
  outDir: string,
  chainId: string,
  genesisDigest: Uint8Array,
): Promise<Manifest | undefined> {
  const path = manifestPath(outDir);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    if (code === "ENOTDIR") throw new ExportError("io", `archive ${outDir} is a file, not a directory`);
    throw new ExportError("io", `${path} cannot be read (${code ?? String(e)})`, { cause: e });
  }
  try {
    return parseManifest(text, { chainId, genesisDigest });
  } catch (e) {
    if (e instanceof ArchiveError)
      throw new ExportError(
        e.code === "other_chain" ? "other_chain" : "bad_manifest",
        `${path}: ${e.message}`,
        {
          cause: e,
        },
      );
    throw e;
  }
}

async function ensureDirectory(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ExportError(
      "io",
      code === "EEXIST" || code === "ENOTDIR"
        ? `archive ${dir} is a file, not a directory`
        : `archive ${dir} cannot be created (${code ?? String(e)})`,
      { cause: e },
    );
  }
  if (!(await stat(dir)).isDirectory()) throw new ExportError("io", `archive ${dir} is not a directory`);
}

/** Writes `bytes` to `path` through `path`.tmp: fsync, rename, fsync of the directory. */
async function replaceFile(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp`;
  const handle = await open(tmp, "w");
  try {
    await writeAll(handle, bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
  await syncDirectory(dirname(path));
}

async function publishManifest(outDir: string, manifest: Manifest): Promise<void> {
  try {
    await replaceFile(manifestPath(outDir), new TextEncoder().encode(formatManifest(manifest)));
  } catch (e) {
    throw new ExportError(
      "io",
      `${manifestPath(outDir)} cannot be written (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
      { cause: e },
    );
  }
}

/** Makes a rename in `dir` durable (where the platform allows opening a directory). */
async function syncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch {
    // Not supported here (e.g. Windows): the rename is as durable as the platform makes it.
  } finally {
    await handle?.close();
  }
}

async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, at, bytes.length - at);
    at += bytesWritten;
  }
}

/** A chunk file being written: records gathered up to `flushAt` bytes, hashed and counted. */
class ChunkSink {
  private readonly hash = createHash("sha256");
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  bytes = 0;

  constructor(
    private readonly handle: FileHandle,
    private readonly flushAt: number,
  ) {}

  async record(kind: RecordKind, payload: Uint8Array): Promise<void> {
    this.add(recordHeader(kind, payload.length));
    this.add(payload);
    if (this.pendingBytes >= this.flushAt) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const bytes =
      this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    await writeAll(this.handle, bytes);
  }

  sha256(): string {
    return this.hash.digest("hex");
  }

  private add(bytes: Uint8Array): void {
    this.hash.update(bytes);
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
    this.bytes += bytes.length;
  }
}

/** Streams one chunk to its temporary file, then fsyncs and renames it; returns its manifest entry. */
async function writeChunk(
  store: Store,
  outDir: string,
  chunk: { first: number; last: number; epoch: number; file: string },
  o: ArchiveWriterOptions,
  signal: AbortSignal | undefined,
): Promise<ManifestChunk> {
  const path = join(outDir, chunk.file);
  const tmp = `${path}.tmp`;
  const gap = (what: string) =>
    new ExportError(
      "store_gap",
      `store ${store.path} lacks ${what}, which it held when the export began (pruned meanwhile?); ${chunk.file} is not published`,
    );
  let handle: FileHandle;
  try {
    await mkdir(dirname(path), { recursive: true });
    handle = await open(tmp, "w");
  } catch (e) {
    throw new ExportError(
      "io",
      `${tmp} cannot be written (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
      {
        cause: e,
      },
    );
  }
  let done = false;
  try {
    const sink = new ChunkSink(handle, o.writeBufferBytes);
    for (let at = chunk.first; at <= chunk.last; ) {
      signal?.throwIfAborted();
      const to = Math.min(chunk.last, at + o.readCommits - 1);
      const commits = await store.getCommits(at, to);
      if (commits.length !== to - at + 1) throw gap(`commit ${at + commits.length}`);
      for (const bytes of commits) {
        const entry = parseCommit(bytes);
        if (entry.index !== at || entry.epoch !== chunk.epoch)
          throw new ExportError(
            "store_gap",
            `store ${store.path}: commit ${at} is stored as commit ${entry.index} of epoch ${entry.epoch}, not of epoch ${chunk.epoch}`,
          );
        const blocks = await store.getBlocks(entry.commit.blocks);
        await sink.record(RecordKind.commit, bytes);
        for (const [j, block] of blocks.entries()) {
          if (block === undefined) throw gap(`block ${j} of commit ${at}`);
          await sink.record(RecordKind.block, block);
        }
        at++;
      }
    }
    const certifiers = await store.getCertifiers(chunk.last);
    if (certifiers === undefined || certifiers.length === 0)
      throw gap(`the certifier blocks of commit ${chunk.last}`);
    for (const block of certifiers) await sink.record(RecordKind.certifier, block);
    await sink.flush();
    await handle.sync();
    await handle.close();
    done = true;
    await rename(tmp, path);
    await syncDirectory(dirname(path));
    return { ...chunk, bytes: sink.bytes, sha256: sink.sha256() };
  } catch (e) {
    if (!done) await handle.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    const fsCode =
      (e as NodeJS.ErrnoException).syscall === undefined ? undefined : (e as NodeJS.ErrnoException).code;
    if (fsCode === undefined || signal?.aborted) throw e;
    throw new ExportError("io", `${path} cannot be written (${fsCode})`, { cause: e });
  }
}
