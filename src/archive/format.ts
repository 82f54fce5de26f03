/**
 * The archive format of DESIGN.md §10, byte for byte: the manifest (JSON) and chunk files (records
 * of varint(length) || encoded ArchiveRecord). Pure: no I/O.
 *
 * Threat: an archive comes from any static host and is trusted for nothing. The manifest is
 * checked for shape, chain and contiguity before any chunk is read; a chunk's bytes are checked
 * against the manifest's size and SHA-256 before they are used, and what they hold is verified by
 * the sync engine exactly like a peer's answer. The record reader never holds more than one record
 * beyond what it was given, and refuses records larger than `maxRecordBytes`.
 */
import { fromHex, toHex } from "../core/bytes.js";

/** `manifest.json`'s `format`. */
export const ARCHIVE_FORMAT = "dagsync-archive/1";
export const MANIFEST_FILE = "manifest.json";

/** ArchiveRecord's `kind` field numbers (proto/dagsync/v1/archive.proto). */
export const RecordKind = { commit: 1, block: 2, certifier: 3 } as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

export type ArchiveErrorCode =
  /** The manifest is not JSON, not of this format, or its chunks are malformed or not contiguous. */
  | "bad_manifest"
  /** The manifest's chain_id or genesis_digest is not ours. */
  | "other_chain"
  /** A chunk file is absent (HTTP 404, no such file). */
  | "missing_chunk"
  /** A chunk file is shorter than the manifest says, or ends inside a record. */
  | "truncated_chunk"
  /** A chunk file's SHA-256 or size is not the manifest's. */
  | "tampered_chunk"
  /** A chunk's records are not commits first..last each with its blocks, then certifiers. */
  | "malformed_chunk"
  /** The archive could not be read (HTTP status, connection, deadline) after its retries. */
  | "unreachable";

export class ArchiveError extends Error {
  override readonly name = "ArchiveError";

  constructor(
    readonly code: ArchiveErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface ManifestChunk {
  /** First commit index in the chunk. */
  readonly first: number;
  /** Last commit index; the chunk holds its certifier blocks. */
  readonly last: number;
  /** The epoch of every commit in the chunk. */
  readonly epoch: number;
  /** Path relative to the archive root, e.g. "chunks/0/1-1000.dsa". */
  readonly file: string;
  /** Size of the file, bytes. */
  readonly bytes: number;
  /** SHA-256 of the file, hex. */
  readonly sha256: string;
}

export interface Manifest {
  readonly format: typeof ARCHIVE_FORMAT;
  readonly chain_id: string;
  /** SHA-256 of the genesis, hex. */
  readonly genesis_digest: string;
  readonly chunks: readonly ManifestChunk[];
}

/** Where a chunk's file lives under the archive root. */
export function chunkFileName(epoch: number, first: number, last: number): string {
  return `chunks/${epoch}/${first}-${last}.dsa`;
}

/** The manifest's JSON text: stable key order, one chunk per line (diffs stay readable). */
export function formatManifest(m: Manifest): string {
  const head = JSON.stringify({ format: m.format, chain_id: m.chain_id, genesis_digest: m.genesis_digest });
  const chunks = m.chunks.map((c) =>
    JSON.stringify({
      first: c.first,
      last: c.last,
      epoch: c.epoch,
      file: c.file,
      bytes: c.bytes,
      sha256: c.sha256,
    }),
  );
  return `${head.slice(0, -1)},\n "chunks": [${chunks.length === 0 ? "" : `\n  ${chunks.join(",\n  ")}\n `}]}\n`;
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const HEX64 = /^[0-9a-f]{64}$/;
/** Relative, forward slashes, no "." or ".." segment, no scheme: a file under the archive root. */
const SAFE_PATH = /^(?!.*(?:^|\/)\.\.?(?:\/|$))[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/;

/**
 * Parses and checks a manifest: its shape, that it is of this chain (when `expect` is given), and
 * that its chunks are contiguous, each within one epoch, epochs never decreasing, with safe paths.
 */
export function parseManifest(
  text: string,
  expect?: { readonly chainId: string; readonly genesisDigest: Uint8Array },
): Manifest {
  const bad = (why: string) => new ArchiveError("bad_manifest", `manifest: ${why}`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw bad("not valid JSON");
  }
  if (typeof raw !== "object" || raw === null) throw bad("not a JSON object");
  const m = raw as Record<string, unknown>;
  if (m.format !== ARCHIVE_FORMAT)
    throw bad(`format is ${JSON.stringify(m.format)}, expected "${ARCHIVE_FORMAT}"`);
  if (typeof m.chain_id !== "string") throw bad("chain_id is not a string");
  if (typeof m.genesis_digest !== "string" || !HEX64.test(m.genesis_digest))
    throw bad("genesis_digest is not 64 lowercase hex digits");
  if (expect !== undefined) {
    if (m.chain_id !== expect.chainId)
      throw new ArchiveError("other_chain", `manifest is of chain "${m.chain_id}", not "${expect.chainId}"`);
    if (m.genesis_digest !== toHex(expect.genesisDigest))
      throw new ArchiveError(
        "other_chain",
        `manifest's genesis_digest ${m.genesis_digest.slice(0, 16)}… is not this chain's ${toHex(expect.genesisDigest).slice(0, 16)}…`,
      );
  }
  if (!Array.isArray(m.chunks)) throw bad("chunks is not an array");
  const chunks: ManifestChunk[] = [];
  for (const [i, c] of (m.chunks as unknown[]).entries()) {
    const where = `chunks[${i}]`;
    if (typeof c !== "object" || c === null) throw bad(`${where} is not an object`);
    const e = c as Record<string, unknown>;
    if (!isCount(e.first) || e.first < 1) throw bad(`${where}.first is not a commit index ≥ 1`);
    if (!isCount(e.last) || e.last < e.first) throw bad(`${where}.last is not an index ≥ first`);
    if (!isCount(e.epoch)) throw bad(`${where}.epoch is not a non-negative integer`);
    if (!isCount(e.bytes)) throw bad(`${where}.bytes is not a non-negative integer`);
    if (typeof e.sha256 !== "string" || !HEX64.test(e.sha256))
      throw bad(`${where}.sha256 is not 64 hex digits`);
    if (typeof e.file !== "string" || !SAFE_PATH.test(e.file))
      throw bad(`${where}.file is not a relative path`);
    const prev = chunks.at(-1);
    if (prev !== undefined) {
      if (e.first !== prev.last + 1)
        throw bad(`${where} starts at ${e.first}, not right after the previous chunk (${prev.last + 1})`);
      if (e.epoch < prev.epoch)
        throw bad(`${where}.epoch ${e.epoch} is below the previous chunk's ${prev.epoch}`);
    }
    chunks.push({
      first: e.first,
      last: e.last,
      epoch: e.epoch,
      file: e.file,
      bytes: e.bytes,
      sha256: e.sha256,
    });
  }
  return { format: ARCHIVE_FORMAT, chain_id: m.chain_id, genesis_digest: m.genesis_digest, chunks };
}

/** The genesis digest a manifest names, as bytes. */
export function manifestGenesisDigest(m: Manifest): Uint8Array {
  return fromHex(m.genesis_digest);
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(out: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[at++] = n;
  return at;
}

/**
 * The bytes before a record's payload: varint(record length) || tag || varint(payload length).
 * A record is this header followed by the payload as it is (no copy of the payload is made).
 */
export function recordHeader(kind: RecordKind, payloadLength: number): Uint8Array {
  const tag = (kind << 3) | 2;
  const inner = 1 + varintSize(payloadLength) + payloadLength;
  const out = new Uint8Array(varintSize(inner) + 1 + varintSize(payloadLength));
  let at = writeVarint(out, 0, inner);
  out[at++] = tag;
  at = writeVarint(out, at, payloadLength);
  return out;
}

/** One whole record (header and payload), for tests and small writes. */
export function encodeRecord(kind: RecordKind, payload: Uint8Array): Uint8Array {
  const header = recordHeader(kind, payload.length);
  const out = new Uint8Array(header.length + payload.length);
  out.set(header);
  out.set(payload, header.length);
  return out;
}

/** A record read from a chunk: where it is in the file, and its payload. */
export interface ArchiveRecordView {
  readonly kind: RecordKind;
  readonly payload: Uint8Array;
  /** Offset of the record's first byte (its length varint) in the file. */
  readonly offset: number;
  /** Offset of the payload in the file. */
  readonly payloadOffset: number;
}

/** Reads a varint at `at`; undefined when `bytes` ends first. Throws on more than 5 bytes (> 2^35). */
function readVarint(bytes: Uint8Array, at: number): { value: number; next: number } | undefined {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 5; i++) {
    if (at + i >= bytes.length) return undefined;
    const b = bytes[at + i]!;
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) return { value, next: at + i + 1 };
    scale *= 128;
  }
  throw new ArchiveError("malformed_chunk", "a varint longer than 5 bytes");
}

/**
 * Parses records from a chunk's bytes as they arrive (`push` each piece, then `end`). Holds at most
 * one partial record between pieces; a record over `maxRecordBytes` is refused before it is
 * buffered.
 */
export class RecordReader {
  private pending: Uint8Array = new Uint8Array(0);
  /** File offset of `pending[0]`. */
  private base = 0;

  constructor(
    private readonly maxRecordBytes: number,
    private readonly file = "chunk",
  ) {}

  /** File offset just past everything pushed. */
  get offset(): number {
    return this.base + this.pending.length;
  }

  /** The whole records completed by `piece`, in order. */
  push(piece: Uint8Array): ArchiveRecordView[] {
    let bytes: Uint8Array;
    if (this.pending.length === 0) bytes = piece;
    else {
      bytes = new Uint8Array(this.pending.length + piece.length);
      bytes.set(this.pending);
      bytes.set(piece, this.pending.length);
    }
    const out: ArchiveRecordView[] = [];
    let at = 0;
    for (;;) {
      const len = readVarint(bytes, at);
      if (len === undefined) break;
      if (len.value > this.maxRecordBytes)
        throw new ArchiveError(
          "malformed_chunk",
          `${this.file}: a record of ${len.value} bytes at offset ${this.base + at} (at most ${this.maxRecordBytes})`,
        );
      const end = len.next + len.value;
      if (end > bytes.length) break;
      out.push(this.parse(bytes, at, len.next, end));
      at = end;
    }
    // Keep only the unfinished record, copied: the caller may reuse its piece (and a Buffer's
    // slice() is a view, not a copy).
    this.pending = at === bytes.length ? new Uint8Array(0) : Uint8Array.prototype.slice.call(bytes, at);
    this.base += at;
    return out;
  }

  /** Checks that nothing is left over: a file must end at a record boundary. */
  end(): void {
    if (this.pending.length > 0)
      throw new ArchiveError(
        "truncated_chunk",
        `${this.file}: ends inside a record (${this.pending.length} bytes after offset ${this.base})`,
      );
  }

  private parse(bytes: Uint8Array, start: number, inner: number, end: number): ArchiveRecordView {
    const where = `${this.file}: record at offset ${this.base + start}`;
    const tag = bytes[inner];
    const kind = tag === undefined ? 0 : tag >> 3;
    if (tag === undefined || (tag & 7) !== 2 || kind < 1 || kind > 3)
      throw new ArchiveError("malformed_chunk", `${where}: not an ArchiveRecord (tag ${tag})`);
    const len = readVarint(bytes, inner + 1);
    if (len === undefined || len.next + len.value !== end)
      throw new ArchiveError("malformed_chunk", `${where}: its payload length does not fill the record`);
    return {
      kind: kind as RecordKind,
      payload: bytes.subarray(len.next, end),
      offset: this.base + start,
      payloadOffset: this.base + len.next,
    };
  }
}
