/**
 * A chunk file on local disk, checked and indexed in one streaming pass: its size and SHA-256
 * against the manifest, its records against the layout of DESIGN §10 (commits first..last in order,
 * each followed by exactly its blocks, then the certifier blocks of `last`). The index holds where
 * each payload is, never the payloads: reads come from the file, so memory stays a few bytes per
 * record however large the chunk.
 *
 * Threat: the file came from an untrusted host. A chunk whose bytes are not the manifest's is
 * refused before any record is used; the records' content is verified later by the sync engine
 * like any peer's answer, so the layout check here is only what is needed to find things.
 */
import { createHash } from "node:crypto";
import { type FileHandle, open } from "node:fs/promises";
import { toHex } from "../core/bytes.js";
import { parseCommit } from "../core/wire.js";
import {
  ArchiveError,
  type ArchiveRecordView,
  type ManifestChunk,
  RecordKind,
  RecordReader,
} from "./format.js";

/** Where a payload is in the file. */
export interface Span {
  readonly offset: number;
  readonly length: number;
}

export interface ChunkIndex {
  readonly chunk: ManifestChunk;
  /** `commits[i]`: commit `chunk.first + i`. */
  readonly commits: readonly Span[];
  /** Blocks by hex digest. */
  readonly blocks: ReadonlyMap<string, Span>;
  readonly certifiers: readonly Span[];
}

/**
 * Reads `path` once: checks its size and SHA-256 against `chunk` and its layout, and indexes it.
 * Throws ArchiveError (truncated_chunk, tampered_chunk, malformed_chunk) naming the file.
 */
export async function indexChunk(
  path: string,
  chunk: ManifestChunk,
  options: {
    readonly maxRecordBytes: number;
    readonly readPieceBytes: number;
    readonly signal?: AbortSignal;
  },
): Promise<ChunkIndex> {
  const file = chunk.file;
  const handle = await open(path, "r");
  try {
    const size = (await handle.stat()).size;
    if (size < chunk.bytes)
      throw new ArchiveError("truncated_chunk", `${file}: ${size} bytes, the manifest says ${chunk.bytes}`);
    if (size > chunk.bytes)
      throw new ArchiveError("tampered_chunk", `${file}: ${size} bytes, the manifest says ${chunk.bytes}`);
    const hash = createHash("sha256");
    const reader = new RecordReader(options.maxRecordBytes, file);
    const layout = new LayoutCheck(chunk);
    const piece = Buffer.allocUnsafe(Math.min(options.readPieceBytes, Math.max(1, size)));
    let position = 0;
    while (position < size) {
      options.signal?.throwIfAborted();
      const { bytesRead } = await handle.read(piece, 0, piece.length, position);
      if (bytesRead === 0) break;
      const bytes = piece.subarray(0, bytesRead);
      hash.update(bytes);
      // Records are parsed before the hash is known: nothing of them is used unless it matches.
      let records: ArchiveRecordView[] | undefined;
      let layoutError: unknown;
      try {
        records = reader.push(bytes);
        for (const r of records) layout.add(r);
      } catch (e) {
        layoutError = e;
      }
      position += bytesRead;
      if (layoutError !== undefined) {
        // Finish the hash first: a file that is not the manifest's is "tampered", whatever it holds.
        await hashRest(handle, hash, piece, position, size);
        checkDigest(file, chunk, hash.digest("hex"));
        throw layoutError;
      }
    }
    checkDigest(file, chunk, hash.digest("hex"));
    reader.end();
    return layout.finish();
  } finally {
    await handle.close();
  }
}

async function hashRest(
  handle: FileHandle,
  hash: ReturnType<typeof createHash>,
  piece: Buffer,
  from: number,
  size: number,
): Promise<void> {
  let position = from;
  while (position < size) {
    const { bytesRead } = await handle.read(piece, 0, piece.length, position);
    if (bytesRead === 0) break;
    hash.update(piece.subarray(0, bytesRead));
    position += bytesRead;
  }
}

function checkDigest(file: string, chunk: ManifestChunk, sha256: string): void {
  if (sha256 !== chunk.sha256)
    throw new ArchiveError(
      "tampered_chunk",
      `${file}: SHA-256 ${sha256.slice(0, 16)}… is not the manifest's ${chunk.sha256.slice(0, 16)}…`,
    );
}

/** The layout of DESIGN §10, record by record. */
class LayoutCheck {
  private readonly commits: Span[] = [];
  private readonly blocks = new Map<string, Span>();
  private readonly certifiers: Span[] = [];
  /**
   * Hex digests of the last commit's refs still to be matched by block records (hex at once: a
   * decoded ref's digest is a view of the read buffer, which the next read overwrites).
   */
  private pending: readonly string[] = [];
  private pendingAt = 0;

  constructor(private readonly chunk: ManifestChunk) {}

  add(r: ArchiveRecordView): void {
    const span = { offset: r.payloadOffset, length: r.payload.length };
    const where = `${this.chunk.file}: record at offset ${r.offset}`;
    const bad = (why: string) => new ArchiveError("malformed_chunk", `${where}: ${why}`);
    switch (r.kind) {
      case RecordKind.commit: {
        if (this.certifiers.length > 0) throw bad("a commit after the certifier blocks");
        if (this.pendingAt < this.pending.length)
          throw bad(`a commit where block ${this.pendingAt + 1} of ${this.pending.length} was due`);
        let entry: ReturnType<typeof parseCommit>;
        try {
          entry = parseCommit(r.payload);
        } catch (e) {
          throw bad(`not a Commit (${(e as Error).message})`);
        }
        const expected = this.chunk.first + this.commits.length;
        if (entry.index !== expected) throw bad(`commit ${entry.index} where ${expected} was due`);
        if (entry.epoch !== this.chunk.epoch)
          throw bad(
            `commit ${entry.index} is of epoch ${entry.epoch}, the manifest says ${this.chunk.epoch}`,
          );
        this.commits.push(span);
        this.pending = entry.commit.blocks.map((ref) => toHex(ref.digest));
        this.pendingAt = 0;
        return;
      }
      case RecordKind.block: {
        const digest = this.pending[this.pendingAt];
        if (digest === undefined || this.certifiers.length > 0)
          throw bad("a block no commit before it references");
        this.blocks.set(digest, span);
        this.pendingAt++;
        return;
      }
      case RecordKind.certifier: {
        if (this.commits.length === 0) throw bad("certifier blocks before any commit");
        if (this.pendingAt < this.pending.length)
          throw bad(`a certifier where block ${this.pendingAt + 1} of ${this.pending.length} was due`);
        this.certifiers.push(span);
        return;
      }
    }
  }

  finish(): ChunkIndex {
    const { chunk } = this;
    const want = chunk.last - chunk.first + 1;
    const fail = (why: string) => new ArchiveError("malformed_chunk", `${chunk.file}: ${why}`);
    if (this.commits.length !== want)
      throw fail(`${this.commits.length} commits, the manifest says ${chunk.first}..${chunk.last}`);
    if (this.pendingAt < this.pending.length) throw fail(`ends before the blocks of commit ${chunk.last}`);
    if (this.certifiers.length === 0) throw fail(`no certifier blocks for commit ${chunk.last}`);
    return { chunk, commits: this.commits, blocks: this.blocks, certifiers: this.certifiers };
  }
}

/** Spans closer than this are read together (the gap is read and dropped), bytes. */
const COALESCE_GAP_BYTES = 16 * 1024;
/** Largest single read when spans are read together, bytes. */
const COALESCE_MAX_BYTES = 4 * 1024 * 1024;

/**
 * Reads the payloads at `spans` from an open file, in order. Runs of nearby spans (the blocks of
 * consecutive commits, separated only by small commit records) are read with one call each.
 */
export async function readSpans(handle: FileHandle, spans: readonly Span[]): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  let i = 0;
  while (i < spans.length) {
    const first = spans[i]!;
    let end = first.offset + first.length;
    let j = i + 1;
    for (; j < spans.length; j++) {
      const s = spans[j]!;
      if (
        s.offset < end ||
        s.offset - end > COALESCE_GAP_BYTES ||
        s.offset + s.length - first.offset > COALESCE_MAX_BYTES
      )
        break;
      end = s.offset + s.length;
    }
    const region = await readExactly(handle, first.offset, end - first.offset);
    for (let k = i; k < j; k++) {
      const s = spans[k]!;
      out.push(region.subarray(s.offset - first.offset, s.offset - first.offset + s.length));
    }
    i = j;
  }
  return out;
}

async function readExactly(handle: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) throw new ArchiveError("truncated_chunk", "the file shrank while it was read");
    done += bytesRead;
  }
  return buf;
}
