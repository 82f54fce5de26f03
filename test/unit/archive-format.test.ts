/**
 * The archive format of DESIGN.md §10 (src/archive/format.ts): records are protobuf's own
 * size-delimited ArchiveRecords; the RecordReader returns the same records however a chunk's bytes
 * are split, and refuses oversize records, a tail inside a record and foreign tags; the manifest
 * parser rejects each malformation with its code; formatManifest round-trips.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { sizeDelimitedEncode } from "@bufbuild/protobuf/wire";
import fc from "fast-check";
import {
  ARCHIVE_FORMAT,
  ArchiveError,
  type ArchiveErrorCode,
  chunkFileName,
  encodeRecord,
  formatManifest,
  type Manifest,
  parseManifest,
  RecordKind,
  RecordReader,
  recordHeader,
} from "../../src/archive/format.js";
import { toHex } from "../../src/core/bytes.js";
import { ArchiveRecordSchema } from "../../src/gen/dagsync/v1/archive_pb.js";

const kindName = { 1: "commit", 2: "block", 3: "certifier" } as const;

const recordArb = fc.record({
  kind: fc.constantFrom(RecordKind.commit, RecordKind.block, RecordKind.certifier),
  // Up to 300 bytes crosses the one-byte varint boundary (128) in both lengths.
  payload: fc.uint8Array({ minLength: 0, maxLength: 300 }),
});

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** `bytes` cut at `cuts` (positions, any order, repeats allowed: empty pieces too). */
function split(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let at = 0;
  for (const p of points) {
    pieces.push(bytes.subarray(at, p));
    at = p;
  }
  pieces.push(bytes.subarray(at));
  return pieces;
}

function rejects(f: () => unknown, code: ArchiveErrorCode, message?: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof ArchiveError, `expected an ArchiveError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (message !== undefined) assert.match(e.message, message);
    return true;
  });
}

describe("records", () => {
  test("a record is protobuf's size-delimited ArchiveRecord, byte for byte", () => {
    fc.assert(
      fc.property(recordArb, ({ kind, payload }) => {
        const message = create(ArchiveRecordSchema, { kind: { case: kindName[kind], value: payload } });
        const expected = sizeDelimitedEncode(ArchiveRecordSchema, message);
        assert.deepEqual(encodeRecord(kind, payload), expected);
        assert.deepEqual(
          recordHeader(kind, payload.length),
          expected.subarray(0, expected.length - payload.length),
        );
      }),
    );
  });

  test("the reader returns the same records however the bytes are split", () => {
    fc.assert(
      fc.property(
        fc.array(recordArb, { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (records, cuts) => {
          const encoded = records.map((r) => encodeRecord(r.kind, r.payload));
          const file = concat(encoded);
          const reader = new RecordReader(1000);
          const got = split(file, cuts).flatMap((piece) => reader.push(piece));
          reader.end();
          assert.equal(reader.offset, file.length);
          assert.equal(got.length, records.length);
          let offset = 0;
          for (const [i, r] of records.entries()) {
            const g = got[i]!;
            assert.equal(g.kind, r.kind);
            assert.deepEqual(g.payload, r.payload);
            assert.equal(g.offset, offset);
            assert.deepEqual(file.subarray(g.payloadOffset, g.payloadOffset + r.payload.length), r.payload);
            offset += encoded[i]!.length;
          }
        },
      ),
    );
  });

  test("payloads do not alias the pieces pushed (a caller may reuse its buffer)", () => {
    const record = encodeRecord(RecordKind.block, new Uint8Array([1, 2, 3, 4]));
    const reader = new RecordReader(100);
    const piece = record.slice(0, 5);
    assert.deepEqual(reader.push(piece), []);
    piece.fill(0);
    const [got] = reader.push(record.slice(5));
    assert.deepEqual(got?.payload, new Uint8Array([1, 2, 3, 4]));
  });

  test("a record over the bound is refused from its length, before it is buffered", () => {
    const big = encodeRecord(RecordKind.block, new Uint8Array(2000));
    const reader = new RecordReader(1000, "chunks/0/1-5.dsa");
    // Only the length varint has arrived: refused already.
    rejects(
      () => reader.push(big.subarray(0, 2)),
      "malformed_chunk",
      /chunks\/0\/1-5\.dsa.*2\d{3} bytes.*at most 1000/,
    );
    // A record exactly at the bound is accepted.
    const atBound = encodeRecord(RecordKind.block, new Uint8Array(1000 - 3));
    assert.equal(atBound.length - 2, 1000);
    assert.equal(new RecordReader(1000).push(atBound).length, 1);
  });

  test("a file ending inside a record is truncated_chunk at end()", () => {
    fc.assert(
      fc.property(fc.array(recordArb, { minLength: 1, maxLength: 5 }), fc.nat(), (records, cut) => {
        const file = concat(records.map((r) => encodeRecord(r.kind, r.payload)));
        const keep = cut % file.length; // strictly shorter than the file
        const lastStart = file.length - encodeRecord(records.at(-1)!.kind, records.at(-1)!.payload).length;
        const reader = new RecordReader(1000);
        const got = reader.push(file.subarray(0, Math.max(keep, lastStart + 1)));
        assert.ok(got.length < records.length);
        rejects(() => reader.end(), "truncated_chunk", /ends inside a record/);
      }),
    );
  });

  test("tags other than fields 1..3 of wire type 2, and lengths that do not fill the record, are refused", () => {
    const payload = new Uint8Array([9, 9]);
    const forTag = (tag: number) => new Uint8Array([4, tag, 2, ...payload]);
    for (const tag of [(4 << 3) | 2, (0 << 3) | 2, (1 << 3) | 0, (2 << 3) | 5, 0xff])
      rejects(() => new RecordReader(100).push(forTag(tag)), "malformed_chunk", /not an ArchiveRecord/);
    // An inner length shorter than the record, and one longer.
    rejects(
      () => new RecordReader(100).push(new Uint8Array([4, 0x0a, 1, 9, 9])),
      "malformed_chunk",
      /does not fill/,
    );
    rejects(
      () => new RecordReader(100).push(new Uint8Array([4, 0x0a, 3, 9, 9])),
      "malformed_chunk",
      /does not fill/,
    );
    // An empty record (length 0) has no tag.
    rejects(() => new RecordReader(100).push(new Uint8Array([0])), "malformed_chunk");
    // A length varint of more than 5 bytes.
    rejects(
      () => new RecordReader(100).push(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x01])),
      "malformed_chunk",
    );
  });
});

describe("manifest", () => {
  const digest = new Uint8Array(32).fill(7);
  const expect = { chainId: "chain-a", genesisDigest: digest };
  const chunk = (first: number, last: number, epoch: number) => ({
    first,
    last,
    epoch,
    file: chunkFileName(epoch, first, last),
    bytes: 1000 + first,
    sha256: "ab".repeat(32),
  });
  const good: Manifest = {
    format: ARCHIVE_FORMAT,
    chain_id: "chain-a",
    genesis_digest: toHex(digest),
    chunks: [chunk(1, 50, 0), chunk(51, 120, 0), chunk(121, 170, 1)],
  };
  /** The manifest's JSON with `edit` applied to its object form. */
  const edited = (edit: (m: Record<string, unknown> & { chunks: Record<string, unknown>[] }) => void) => {
    const m = JSON.parse(formatManifest(good));
    edit(m);
    return JSON.stringify(m);
  };

  test("formatManifest round-trips through parseManifest, one chunk per line", () => {
    const text = formatManifest(good);
    assert.deepEqual(parseManifest(text, expect), good);
    assert.deepEqual(parseManifest(text), good);
    assert.equal(text.split("\n").filter((l) => l.includes('"sha256"')).length, 3);
    const empty: Manifest = { ...good, chunks: [] };
    assert.deepEqual(parseManifest(formatManifest(empty), expect), empty);
    assert.equal(chunkFileName(3, 1001, 2000), "chunks/3/1001-2000.dsa");
  });

  test("each malformation is rejected with its code", () => {
    const cases: [string, string, ArchiveErrorCode, RegExp][] = [
      ["not JSON", "{format:", "bad_manifest", /not valid JSON/],
      ["not an object", "[1]", "bad_manifest", /format/],
      ["null", "null", "bad_manifest", /not a JSON object/],
      [
        "wrong format",
        edited((m) => {
          m.format = "dagsync-archive/2";
        }),
        "bad_manifest",
        /format is "dagsync-archive\/2"/,
      ],
      [
        "no chain id",
        edited((m) => {
          delete m.chain_id;
        }),
        "bad_manifest",
        /chain_id/,
      ],
      [
        "short genesis digest",
        edited((m) => {
          m.genesis_digest = "abcd";
        }),
        "bad_manifest",
        /genesis_digest/,
      ],
      [
        "other chain",
        edited((m) => {
          m.chain_id = "chain-b";
        }),
        "other_chain",
        /chain-b/,
      ],
      [
        "other genesis",
        edited((m) => {
          m.genesis_digest = "00".repeat(32);
        }),
        "other_chain",
        /genesis_digest/,
      ],
      [
        "chunks not an array",
        edited((m) => {
          (m as Record<string, unknown>).chunks = {};
        }),
        "bad_manifest",
        /chunks is not an array/,
      ],
      [
        "gap",
        edited((m) => {
          m.chunks[1]!.first = 52;
        }),
        "bad_manifest",
        /starts at 52, not right after the previous chunk \(51\)/,
      ],
      [
        "overlap",
        edited((m) => {
          m.chunks[1]!.first = 50;
        }),
        "bad_manifest",
        /starts at 50/,
      ],
      [
        "epoch going back",
        edited((m) => {
          m.chunks[2]!.epoch = 0;
          m.chunks[1]!.epoch = 1;
        }),
        "bad_manifest",
        /epoch 0 is below/,
      ],
      [
        "first 0",
        edited((m) => {
          m.chunks[0]!.first = 0;
        }),
        "bad_manifest",
        /first/,
      ],
      [
        "last < first",
        edited((m) => {
          m.chunks[2]!.last = 100;
        }),
        "bad_manifest",
        /last/,
      ],
      [
        "fractional bytes",
        edited((m) => {
          m.chunks[0]!.bytes = 1.5;
        }),
        "bad_manifest",
        /bytes/,
      ],
      [
        "negative epoch",
        edited((m) => {
          m.chunks[0]!.epoch = -1;
        }),
        "bad_manifest",
        /epoch/,
      ],
      [
        "parent path",
        edited((m) => {
          m.chunks[0]!.file = "../x";
        }),
        "bad_manifest",
        /file is not a relative path/,
      ],
      [
        "inner parent path",
        edited((m) => {
          m.chunks[0]!.file = "chunks/../../x";
        }),
        "bad_manifest",
        /file/,
      ],
      [
        "absolute path",
        edited((m) => {
          m.chunks[0]!.file = "/abs/x.dsa";
        }),
        "bad_manifest",
        /file/,
      ],
      [
        "dot segment",
        edited((m) => {
          m.chunks[0]!.file = "./chunks/x";
        }),
        "bad_manifest",
        /file/,
      ],
      [
        "URL",
        edited((m) => {
          m.chunks[0]!.file = "http://evil/x";
        }),
        "bad_manifest",
        /file/,
      ],
      [
        "backslash",
        edited((m) => {
          m.chunks[0]!.file = "chunks\\x";
        }),
        "bad_manifest",
        /file/,
      ],
      [
        "empty path",
        edited((m) => {
          m.chunks[0]!.file = "";
        }),
        "bad_manifest",
        /file/,
      ],
      [
        "short sha256",
        edited((m) => {
          m.chunks[0]!.sha256 = "ab";
        }),
        "bad_manifest",
        /sha256/,
      ],
      [
        "non-hex sha256",
        edited((m) => {
          m.chunks[0]!.sha256 = "zz".repeat(32);
        }),
        "bad_manifest",
        /sha256/,
      ],
      [
        "sha256 not a string",
        edited((m) => {
          m.chunks[0]!.sha256 = 5;
        }),
        "bad_manifest",
        /sha256/,
      ],
    ];
    for (const [name, text, code, message] of cases) {
      assert.throws(
        () => parseManifest(text, expect),
        (e: unknown) => e instanceof ArchiveError && e.code === code && message.test(e.message),
        name,
      );
    }
  });
});
