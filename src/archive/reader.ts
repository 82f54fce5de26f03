/**
 * An archive as a sync source (DESIGN §10): it answers the three sync calls a peer answers —
 * availability (the manifest's range), FetchCommits (a chunk's commits from `start` to its last,
 * with the certifier blocks of its last, which is the batch contract of §3) and FetchBlocks (by
 * ref, from the chunks holding the commits asked about) — so the engine's balancer uses it like a
 * peer, where no peer can serve or where it is the faster source, and verifies what it gives
 * exactly like a peer's answer.
 *
 * A chunk is made ready once (downloaded when remote, then checked against the manifest's size and
 * SHA-256 and indexed: see chunk-index.ts) and kept ready for the next calls; at most
 * `maxOpenChunks` are. A chunk that is missing, truncated, tampered or malformed is marked bad
 * with its reason for `badChunkRetryMs`; while it is, calls for its commits fail at once with that
 * reason (the engine takes them elsewhere), and nothing of it is ever handed on.
 */
import { type FileHandle, open } from "node:fs/promises";
import { bytesEqual, toHex } from "../core/bytes.js";
import type { BlockRef } from "../gen/dagsync/v1/types_pb.js";
import { type ChunkIndex, indexChunk, readSpans } from "./chunk-index.js";
import {
  ArchiveError,
  type Manifest,
  type ManifestChunk,
  manifestGenesisDigest,
  parseManifest,
} from "./format.js";
import { type ArchiveLocation, openLocation } from "./location.js";
import { type ArchiveReaderOptions, resolveArchiveReaderOptions } from "./reader-options.js";

export interface ArchiveSourceConfig {
  /** A directory or an http(s):// base URL. */
  readonly location: string;
  readonly chainId: string;
  readonly genesisDigest: Uint8Array;
  readonly options?: Partial<ArchiveReaderOptions> | undefined;
  /** Told once per bad chunk or manifest, with the reason. */
  readonly onProblem?: ((error: ArchiveError, chunk: ManifestChunk | undefined) => void) | undefined;
  readonly now?: (() => number) | undefined;
  /** For tests: the location implementation. */
  readonly openLocation?: ((location: string, options: ArchiveReaderOptions) => ArchiveLocation) | undefined;
}

/** What an archive can serve now, as a peer's GetCommitAvailability says it. */
export interface ArchiveAvailability {
  readonly highest: number;
  readonly lowest: number;
  readonly epoch: number;
  /** The manifest's genesis digest: another chain's archive shows as a peer of another chain. */
  readonly genesisDigest: Uint8Array;
  /** Unknown without reading the last chunk: empty. */
  readonly highestDigest: Uint8Array;
}

interface ReadyChunk {
  readonly index: ChunkIndex;
  readonly handle: FileHandle;
  /** Calls reading it now: it is not closed under them. */
  users: number;
  lastUsed: number;
}

export class ArchiveSource {
  readonly location: ArchiveLocation;
  readonly options: ArchiveReaderOptions;
  private manifest: Manifest | undefined;
  private manifestReadAt = Number.NEGATIVE_INFINITY;
  private manifestLoading: Promise<Manifest> | undefined;
  private readonly ready = new Map<string, ReadyChunk>();
  private readonly opening = new Map<string, Promise<ReadyChunk>>();
  /** Bad chunks by file, until when. */
  private readonly bad = new Map<string, { until: number; error: ArchiveError }>();
  private readonly now: () => number;
  private closed = false;
  /** Bytes read from chunk files for answers (for tests and metrics). */
  bytesServed = 0;

  constructor(private readonly config: ArchiveSourceConfig) {
    this.options = resolveArchiveReaderOptions(config.options);
    this.location = (config.openLocation ?? openLocation)(config.location, this.options);
    this.now = config.now ?? Date.now;
  }

  get name(): string {
    return this.location.name;
  }

  /** The manifest's range, up to the first bad chunk; reads the manifest when it is due. */
  async availability(signal: AbortSignal): Promise<ArchiveAvailability> {
    const m = await this.currentManifest(signal);
    const genesisDigest = manifestGenesisDigest(m);
    const sameChain =
      m.chain_id === this.config.chainId && bytesEqual(genesisDigest, this.config.genesisDigest);
    // The whole manifest, bad chunks included: a bad chunk fails its calls (other sources serve
    // its range), and the archive still serves the chunks after it.
    const first = m.chunks[0];
    const last = m.chunks.at(-1);
    return {
      highest: last?.last ?? 0,
      lowest: first?.first ?? 1,
      epoch: last?.epoch ?? 0,
      // A chain_id that differs under the same digest is another chain all the same.
      genesisDigest: sameChain ? genesisDigest : new Uint8Array(32),
      highestDigest: new Uint8Array(0),
    };
  }

  /**
   * Commits `start`..the last of the chunk holding `start`, with the certifier blocks of that last
   * commit: one batch of the §3 contract (it may end past `end`, as a server's may).
   */
  async fetchCommits(
    start: number,
    _end: number,
    signal: AbortSignal,
  ): Promise<{ commits: Uint8Array[]; certifierBlocks: Uint8Array[]; bytes: number }> {
    const m = await this.currentManifest(signal);
    const chunk = m.chunks.find((c) => c.first <= start && start <= c.last);
    if (chunk === undefined)
      throw new ArchiveError("missing_chunk", `${this.name}: no chunk holds commit ${start}`);
    this.throwIfBad(chunk);
    const ready = await this.use(chunk, signal);
    try {
      const spans = ready.index.commits.slice(start - chunk.first);
      const commits = await readSpans(ready.handle, spans);
      const certifierBlocks = await readSpans(ready.handle, ready.index.certifiers);
      const bytes = [...commits, ...certifierBlocks].reduce((n, b) => n + b.length, 0);
      this.bytesServed += bytes;
      return { commits, certifierBlocks, bytes };
    } finally {
      this.release(ready);
    }
  }

  /**
   * The blocks of `refs`, in order, from the chunks holding commits `commits.first..last` (the
   * commits the refs belong to). A ref none of them holds ends the answer there (a prefix, as a
   * server's may be); none at all is "missing".
   */
  async fetchBlocks(
    refs: readonly BlockRef[],
    commits: { readonly first: number; readonly last: number },
    signal: AbortSignal,
  ): Promise<{ blocks: Uint8Array[]; bytes: number }> {
    const m = await this.currentManifest(signal);
    const chunks = m.chunks.filter((c) => c.last >= commits.first && c.first <= commits.last);
    if (chunks[0] !== undefined) this.throwIfBad(chunks[0]);
    const blocks: Uint8Array[] = [];
    let bytes = 0;
    let at = 0;
    for (const chunk of chunks) {
      if (at >= refs.length || (blocks.length > 0 && this.bad.has(chunk.file))) break;
      const ready = await this.use(chunk, signal);
      try {
        const spans = [];
        for (; at < refs.length; at++) {
          const span = ready.index.blocks.get(toHex(refs[at]!.digest));
          if (span === undefined) break;
          spans.push(span);
        }
        for (const b of await readSpans(ready.handle, spans)) {
          blocks.push(b);
          bytes += b.length;
        }
      } finally {
        this.release(ready);
      }
    }
    if (blocks.length === 0)
      throw new ArchiveError(
        "missing_chunk",
        `${this.name}: no block of commits ${commits.first}..${commits.last} asked for is held`,
      );
    this.bytesServed += bytes;
    return { blocks, bytes };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.opening.values()]);
    for (const r of this.ready.values()) await r.handle.close().catch(() => {});
    this.ready.clear();
    await this.location.close();
  }

  /** A chunk marked bad (and not yet due for another try) fails at once, with its reason. */
  private throwIfBad(chunk: ManifestChunk): void {
    const b = this.bad.get(chunk.file);
    if (b === undefined) return;
    if (b.until <= this.now()) this.bad.delete(chunk.file);
    else throw new ArchiveError(b.error.code, `${b.error.message} (marked bad)`);
  }

  private async currentManifest(signal: AbortSignal): Promise<Manifest> {
    if (this.closed) throw new ArchiveError("unreachable", `${this.name}: closed`);
    const due = this.now() - this.manifestReadAt >= this.options.manifestRefreshMs;
    if (this.manifest !== undefined && !due) return this.manifest;
    this.manifestLoading ??= (async () => {
      try {
        const text = await this.location.readManifest(signal);
        const m = parseManifest(text);
        this.manifest = m;
        this.manifestReadAt = this.now();
        if (m.chain_id !== this.config.chainId || m.genesis_digest !== toHex(this.config.genesisDigest))
          this.config.onProblem?.(
            new ArchiveError(
              "other_chain",
              `${this.name}: the manifest is of chain "${m.chain_id}" (genesis ${m.genesis_digest.slice(0, 16)}…)`,
            ),
            undefined,
          );
        return m;
      } finally {
        this.manifestLoading = undefined;
      }
    })();
    try {
      return await this.manifestLoading;
    } catch (e) {
      // A manifest read that fails keeps the last good one, if any.
      if (this.manifest !== undefined) return this.manifest;
      if (e instanceof ArchiveError && e.code === "bad_manifest") this.config.onProblem?.(e, undefined);
      throw e;
    }
  }

  /** The chunk ready to read (made ready if need be), held until `release`. */
  private async use(chunk: ManifestChunk, signal: AbortSignal): Promise<ReadyChunk> {
    let ready = this.ready.get(chunk.file);
    if (ready === undefined) {
      let opening = this.opening.get(chunk.file);
      if (opening === undefined) {
        opening = this.prepare(chunk, signal).finally(() => this.opening.delete(chunk.file));
        this.opening.set(chunk.file, opening);
      }
      ready = await opening;
    }
    ready.users++;
    ready.lastUsed = this.now();
    return ready;
  }

  private release(ready: ReadyChunk): void {
    ready.users--;
  }

  private async prepare(chunk: ManifestChunk, signal: AbortSignal): Promise<ReadyChunk> {
    let index: ChunkIndex;
    let path: string;
    try {
      path = await this.location.localChunk(chunk, signal);
      index = await indexChunk(path, chunk, { ...this.options, signal });
    } catch (e) {
      if (e instanceof ArchiveError && e.code !== "unreachable") {
        this.bad.set(chunk.file, { until: this.now() + this.options.badChunkRetryMs, error: e });
        await this.location.dropChunk(chunk).catch(() => {});
        this.config.onProblem?.(e, chunk);
      }
      throw e;
    }
    const handle = await open(path, "r");
    const ready: ReadyChunk = { index, handle, users: 0, lastUsed: this.now() };
    this.ready.set(chunk.file, ready);
    await this.evict();
    return ready;
  }

  /** Closes the least recently used idle chunks beyond `maxOpenChunks`. */
  private async evict(): Promise<void> {
    const idle = [...this.ready.entries()]
      .filter(([, r]) => r.users === 0)
      .sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    let over = this.ready.size - this.options.maxOpenChunks;
    for (const [file, r] of idle) {
      if (over <= 0) break;
      this.ready.delete(file);
      await r.handle.close().catch(() => {});
      await this.location.dropChunk(r.index.chunk).catch(() => {});
      over--;
    }
  }
}
