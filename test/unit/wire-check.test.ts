/**
 * One reading of every byte (issue 10, core/wire-check.ts). The byte strings of the issue are
 * refused, naming the field; so is every other encoding readers may read differently; honest
 * encodings pass; and a property holds the strict decoder to an independent reference reading of
 * the wire format (written here from the protobuf encoding spec, not from protobuf-es): for any
 * sequence of fields, with any numbers, wire types and payloads, the strict decoder either refuses
 * or yields exactly what the reference yields, and it refuses exactly when the reference finds a
 * known field of the wrong wire type, or bytes it cannot read.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  create,
  createFileRegistry,
  type DescMessage,
  fromBinary,
  type Message,
  toBinary,
} from "@bufbuild/protobuf";
import {
  FileDescriptorProtoSchema,
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
} from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import {
  blockSigningMessage,
  checkWire,
  decodeStrict,
  parseCommit,
  parseSignedBlock,
  VerifyError,
  verifyCommitBatch,
  WireFormatError,
} from "../../src/core/index.js";
import { NativeVerifier } from "../../src/crypto/verifier.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import { FetchCommitsRequestSchema } from "../../src/gen/dagsync/v1/sync_pb.js";
import {
  BlockSchema,
  CommitRefSchema,
  CommitSchema,
  SignedBlockSchema,
} from "../../src/gen/dagsync/v1/types_pb.js";
import { WireSignedBlockSchema } from "../../src/gen/dagsync/wire/v1/wire_pb.js";

const hex = (h: string) => new Uint8Array(Buffer.from(h, "hex"));
const toHexString = (b: Uint8Array) => Buffer.from(b).toString("hex");

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function encodeVarint(value: bigint): Uint8Array {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

const lenField = (no: number, payload: Uint8Array) =>
  concat(encodeVarint(BigInt(no * 8 + 2)), encodeVarint(BigInt(payload.length)), payload);

// ---------------------------------------------------------------------------------------------
// The reference reader: the protobuf encoding spec (protobuf.dev/programming-guides/encoding),
// as C++, Java, Go and Python/upb implement it. A known field whose wire type does not match its
// type is kept as an unknown field (and flagged: dagsync refuses it). Groups are refused too.
// ---------------------------------------------------------------------------------------------

type Kind = "uint64" | "uint32" | "bytes" | "string" | { readonly message: string };
type Spec = Readonly<Record<number, readonly [name: string, kind: Kind, repeated: boolean]>>;

/** dagsync.v1's types.proto, written out by hand. */
const SPECS: Readonly<Record<string, Spec>> = {
  "dagsync.v1.BlockRef": {
    1: ["round", "uint32", false],
    2: ["author", "uint32", false],
    3: ["digest", "bytes", false],
  },
  "dagsync.v1.CommitRef": { 1: ["index", "uint64", false], 2: ["digest", "bytes", false] },
  "dagsync.v1.Block": {
    1: ["epoch", "uint64", false],
    2: ["round", "uint32", false],
    3: ["author", "uint32", false],
    4: ["timestampMs", "uint64", false],
    5: ["ancestors", { message: "dagsync.v1.BlockRef" }, true],
    6: ["transactions", "bytes", true],
    7: ["commitVotes", { message: "dagsync.v1.CommitRef" }, true],
  },
  "dagsync.v1.Commit": {
    1: ["index", "uint64", false],
    2: ["epoch", "uint64", false],
    3: ["previousDigest", "bytes", false],
    4: ["timestampMs", "uint64", false],
    5: ["leader", { message: "dagsync.v1.BlockRef" }, false],
    6: ["blocks", { message: "dagsync.v1.BlockRef" }, true],
    7: ["endOfEpoch", { message: "dagsync.v1.EndOfEpoch" }, false],
  },
  "dagsync.v1.EndOfEpoch": { 1: ["nextCommittee", { message: "dagsync.v1.Committee" }, false] },
  "dagsync.v1.Committee": {
    1: ["epoch", "uint64", false],
    2: ["validators", { message: "dagsync.v1.Validator" }, true],
  },
  "dagsync.v1.Validator": {
    1: ["protocolKey", "bytes", false],
    2: ["networkKey", "bytes", false],
    3: ["stake", "uint64", false],
    4: ["syncAddress", "string", false],
    5: ["gossipAddress", "string", false],
  },
  "dagsync.v1.FetchCommitsRequest": { 1: ["start", "uint64", false], 2: ["end", "uint64", false] },
};

type Value = bigint | number | string | undefined | RefMessage | Value[];
interface RefMessage {
  [field: string]: Value;
}

/** Why the reference refuses the bytes, or flags them (a reader would read them, dagsync will not). */
class RefError extends Error {}

interface RefReading {
  flagged: string | undefined;
}

function wireTypeOf(kind: Kind): number {
  return kind === "uint64" || kind === "uint32" ? 0 : 2;
}

function emptyMessage(typeName: string): RefMessage {
  const m: RefMessage = { $unknown: [] };
  for (const [name, kind, repeated] of Object.values(SPECS[typeName]!))
    m[name] = repeated
      ? []
      : kind === "uint64"
        ? 0n
        : kind === "uint32"
          ? 0
          : kind === "bytes"
            ? ""
            : kind === "string"
              ? ""
              : undefined;
  return m;
}

function refRead(
  typeName: string,
  buf: Uint8Array,
  into: RefMessage,
  reading: RefReading,
  depth = 0,
): RefMessage {
  if (depth > 100) throw new RefError("too deep");
  const spec = SPECS[typeName]!;
  let pos = 0;
  const varint = (): { value: bigint; raw: Uint8Array } => {
    const start = pos;
    let value = 0n;
    for (let i = 0; ; i++) {
      if (i === 10) throw new RefError("varint longer than 10 bytes");
      if (pos >= buf.length) throw new RefError("truncated varint");
      const b = buf[pos++]!;
      value |= BigInt(b & 0x7f) << BigInt(7 * i);
      if (b < 0x80) break;
    }
    if (value >= 2n ** 64n) reading.flagged ??= "varint over 64 bits";
    return { value: value & (2n ** 64n - 1n), raw: buf.subarray(start, pos) };
  };
  while (pos < buf.length) {
    const tag = varint().value;
    if (tag > 0xffff_ffffn) throw new RefError("tag over 32 bits");
    const no = Number(tag >> 3n);
    const wt = Number(tag & 7n);
    if (no === 0) throw new RefError("field 0");
    if (wt === 3 || wt === 4) {
      reading.flagged ??= "group";
      throw new RefError("group");
    }
    if (wt > 5) throw new RefError(`wire type ${wt}`);
    const dataStart = pos;
    let payload: Uint8Array | undefined;
    let number: bigint | undefined;
    if (wt === 0) number = varint().value;
    else if (wt === 1 || wt === 5) {
      const size = wt === 1 ? 8 : 4;
      if (buf.length - pos < size) throw new RefError("truncated fixed");
      pos += size;
    } else {
      const length = varint().value;
      if (length > BigInt(buf.length - pos)) throw new RefError("length past the end");
      payload = buf.subarray(pos, pos + Number(length));
      pos += Number(length);
    }
    const known = spec[no];
    if (known === undefined || wireTypeOf(known[1]) !== wt) {
      if (known !== undefined) reading.flagged ??= `field ${no} of ${typeName}: wire type ${wt}`;
      (into.$unknown as Value[]).push([
        no,
        wt,
        toHexString(buf.subarray(dataStart, pos)),
      ] as unknown as Value);
      continue;
    }
    const [name, kind, repeated] = known;
    let value: Value;
    if (kind === "uint64") value = number!;
    else if (kind === "uint32") value = Number(number! & 0xffff_ffffn);
    else if (kind === "bytes") value = toHexString(payload!);
    else if (kind === "string") {
      try {
        value = new TextDecoder("utf-8", { fatal: true }).decode(payload!);
      } catch {
        throw new RefError("invalid UTF-8");
      }
    } else {
      // A singular message field that occurs again merges into the first; a repeated one appends.
      const existing = repeated ? undefined : (into[name] as RefMessage | undefined);
      value = refRead(kind.message, payload!, existing ?? emptyMessage(kind.message), reading, depth + 1);
    }
    if (repeated) (into[name] as Value[]).push(value);
    else into[name] = value;
  }
  return into;
}

/** The reference reading, or undefined when it cannot read the bytes; `flagged` when dagsync must refuse. */
function reference(typeName: string, bytes: Uint8Array): { message?: RefMessage; flagged?: string } {
  const reading: RefReading = { flagged: undefined };
  try {
    const message = refRead(typeName, bytes, emptyMessage(typeName), reading);
    return reading.flagged === undefined ? { message } : { message, flagged: reading.flagged };
  } catch (e) {
    if (e instanceof RefError) return reading.flagged === undefined ? {} : { flagged: reading.flagged };
    throw e;
  }
}

/** A protobuf-es message in the reference's shape. */
function normalize(typeName: string, m: Message): RefMessage {
  const out: RefMessage = {
    $unknown: (m.$unknown ?? []).map((u) => [u.no, u.wireType, toHexString(u.data)] as unknown as Value),
  };
  const record = m as unknown as Record<string, unknown>;
  for (const [name, kind, repeated] of Object.values(SPECS[typeName]!)) {
    const one = (v: unknown): Value =>
      typeof kind === "object"
        ? normalize(kind.message, v as Message)
        : v instanceof Uint8Array
          ? toHexString(v)
          : (v as Value);
    const v = record[name];
    out[name] = repeated ? (v as unknown[]).map(one) : v === undefined ? undefined : one(v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

describe("the byte strings of issue 10", () => {
  test("Block 0d0110100d0d10022018: epoch 13, round 2 to protobuf-es alone; refused, naming field 1 (epoch)", () => {
    const bytes = hex("0d0110100d0d10022018");
    // The disagreement: protobuf-es reads field 1 as a varint whatever its wire type...
    const loose = fromBinary(BlockSchema, bytes);
    assert.equal(loose.epoch, 13n);
    assert.equal(loose.round, 2);
    // ...while the spec (and Python, Go, C++) reads two unknown I32 fields of a block of epoch 0, round 0.
    const ref = reference("dagsync.v1.Block", bytes);
    assert.equal(ref.message?.epoch, 0n);
    assert.equal(ref.message?.round, 0);
    assert.deepEqual(ref.message?.$unknown, [
      [1, 5, "0110100d"],
      [1, 5, "10022018"],
    ]);
    assert.throws(
      () => decodeStrict(BlockSchema, bytes),
      (e: unknown) =>
        e instanceof WireFormatError &&
        e.message === "field 1 (epoch) of dagsync.v1.Block has wire type 5 (I32), expected VARINT",
    );
    // As a peer's signed block (any signature): malformed, the evidence a ban needs.
    const signed = concat(lenField(1, bytes), lenField(2, new Uint8Array(64)));
    assert.throws(
      () => parseSignedBlock(signed),
      (e: unknown) =>
        e instanceof VerifyError &&
        e.code === "malformed" &&
        /field 1 \(epoch\) of dagsync\.v1\.Block has wire type 5 \(I32\), expected VARINT/.test(e.message),
    );
  });

  test("FetchCommitsRequest 0d23109901: start 35 to protobuf-es alone, 0 to the spec; refused, naming field 1 (start)", () => {
    const bytes = hex("0d23109901");
    assert.equal(fromBinary(FetchCommitsRequestSchema, bytes).start, 35n);
    assert.equal(reference("dagsync.v1.FetchCommitsRequest", bytes).message?.start, 0n);
    assert.throws(
      () => checkWire(FetchCommitsRequestSchema, bytes),
      /^WireFormatError: field 1 \(start\) of dagsync\.v1\.FetchCommitsRequest has wire type 5 \(I32\), expected VARINT$/,
    );
  });
});

describe("checkWire refuses what readers may read differently", () => {
  const cases: [what: string, schema: DescMessage, bytes: string, message: RegExp][] = [
    [
      "a string of a known field as a varint",
      CommitRefSchema,
      "1005",
      /field 2 \(digest\) of dagsync\.v1\.CommitRef has wire type 0 \(VARINT\), expected LEN/,
    ],
    [
      "a nested field of the wrong wire type",
      BlockSchema,
      "2a030d0101",
      /field 1 \(round\) of dagsync\.v1\.BlockRef has wire type 5 \(I32\).*, in field 5 \(ancestors\) of dagsync\.v1\.Block$/,
    ],
    [
      "a message field as I64",
      CommitSchema,
      "290000000000000000",
      /field 5 \(leader\) of dagsync\.v1\.Commit has wire type 1 \(I64\), expected LEN/,
    ],
    [
      "a group (SGROUP … EGROUP)",
      BlockSchema,
      "4b4c",
      /wire type 3 \(SGROUP\), which dagsync does not accept/,
    ],
    ["wire type 6", BlockSchema, "46", /wire type 6/],
    ["field number 0", BlockSchema, "0001", /field number 0/],
    ["a truncated varint", BlockSchema, "0880", /varint at byte 1 is truncated/],
    ["a varint of 11 bytes", BlockSchema, "08ffffffffffffffffff8000", /longer than 10 bytes/],
    ["a varint over 64 bits", BlockSchema, "08ffffffffffffffffff02", /overflows 64 bits/],
    ["a length past the end", BlockSchema, "320501", /length 5 runs past the end \(1 left\)/],
    // protobuf-es reads a length as 32 bits: 2^32 + 1 would read as 1.
    ["a length of 2^32 + 1", BlockSchema, "3281808080100a", /length 4294967297 runs past the end/],
    ["a tag over 32 bits", BlockSchema, "8080808010", /tag at byte 0 overflows 32 bits/],
    ["a truncated I32", BlockSchema, "450000", /field 8 at byte 0 is truncated/],
  ];
  for (const [what, schema, bytes, message] of cases)
    test(what, () => {
      assert.throws(
        () => checkWire(schema, hex(bytes)),
        (e: unknown) => e instanceof WireFormatError && message.test(e.message),
      );
    });

  test("well-formed unknown fields are accepted (and kept), as protobuf specifies", () => {
    // epoch 7; field 9 as I32; field 100 as VARINT; field 163 as LEN "xy".
    const block = decodeStrict(BlockSchema, hex("08074d01020304a006019a0a027879"));
    assert.equal(block.epoch, 7n);
    assert.deepEqual(
      block.$unknown?.map((u) => u.no),
      [9, 100, 163],
    );
  });

  describe("repeated numeric scalars may be packed or not (a test schema: dagsync has none)", () => {
    const file = create(FileDescriptorProtoSchema, {
      name: "wire_check_test.proto",
      package: "t",
      syntax: "proto3",
      messageType: [
        {
          name: "P",
          field: [
            { name: "u", number: 1, type: Type.UINT64, label: Label.REPEATED, jsonName: "u" },
            { name: "f", number: 2, type: Type.FIXED32, label: Label.REPEATED, jsonName: "f" },
            { name: "d", number: 3, type: Type.DOUBLE, label: Label.REPEATED, jsonName: "d" },
            {
              name: "m",
              number: 4,
              type: Type.MESSAGE,
              label: Label.OPTIONAL,
              typeName: ".t.P",
              jsonName: "m",
            },
          ],
        },
      ],
    });
    const P = createFileRegistry(file, () => undefined).getMessage("t.P")!;
    test("packed and unpacked both pass", () => {
      for (const ok of [
        "0801",
        "0a020101",
        "0a03ac0201",
        "15aaaaaaaa",
        "1204aaaaaaaa",
        "190000000000000000",
        "1a080000000000000000",
        "22020801",
      ])
        assert.doesNotThrow(() => checkWire(P, hex(ok)), ok);
    });
    test("packed payloads of partial elements, and other wire types, are refused", () => {
      for (const [bad, message] of [
        ["0a0180", /varint at byte 2 is truncated/],
        ["1203aaaaaa", /packed field 2 \(f\) holds 3 bytes, not whole elements/],
        ["1d00000000", /field 3 \(d\) of t\.P has wire type 5 \(I32\), expected I64 or LEN \(packed\)/],
        ["22020d00", /field 1 \(u\) of t\.P has wire type 5 .*, in field 4 \(m\) of t\.P/],
      ] as const)
        assert.throws(
          () => checkWire(P, hex(bad)),
          (e: unknown) => e instanceof WireFormatError && message.test(e.message),
          bad,
        );
    });
    test("100 messages deep pass (protobuf-es's limit), 101 are refused", () => {
      const nest = (levels: number) => {
        let bytes: Uint8Array = new Uint8Array(0);
        for (let i = 0; i < levels; i++) bytes = lenField(4, bytes);
        return bytes;
      };
      assert.doesNotThrow(() => decodeStrict(P, nest(99)));
      assert.throws(() => checkWire(P, nest(100)), /nested deeper than 100 messages/);
    });
  });
});

describe("honest encodings pass and decode as protobuf-es decodes them", () => {
  const chain = new DevnetChain({
    validators: 4,
    epochs: 2,
    commitsPerEpoch: 6,
    txsPerBlock: 3,
    txBytes: 32,
    seed: 3,
  });
  const commits = [...chain.commits()];

  test("every block, certifier block and commit of a devnet chain", () => {
    for (const c of commits) {
      assert.equal(parseCommit(c.commitBytes).index, c.index);
      for (const b of [...c.blocks.map((x) => x.bytes), ...c.certifierBlocks]) parseSignedBlock(b);
    }
  });

  const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
  const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
  const bytes32 = fc.uint8Array({ minLength: 32, maxLength: 32 });
  const blockRef = fc.record({ round: u32, author: u32, digest: bytes32 });
  test("random Blocks and Commits as protobuf-es writes them", () => {
    fc.assert(
      fc.property(
        fc.record({
          epoch: u64,
          round: u32,
          author: u32,
          timestampMs: u64,
          ancestors: fc.array(blockRef, { maxLength: 5 }),
          transactions: fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 5 }),
          commitVotes: fc.array(fc.record({ index: u64, digest: bytes32 }), { maxLength: 3 }),
        }),
        fc.record({
          index: u64,
          epoch: u64,
          previousDigest: bytes32,
          leader: blockRef,
          blocks: fc.array(blockRef, { maxLength: 5 }),
          nextCommittee: fc.option(
            fc.record({
              epoch: u64,
              validators: fc.array(
                fc.record({
                  protocolKey: bytes32,
                  stake: u64,
                  syncAddress: fc.string(),
                  gossipAddress: fc.string(),
                }),
                { maxLength: 4 },
              ),
            }),
          ),
        }),
        (b, c) => {
          const blockBytes = toBinary(BlockSchema, create(BlockSchema, b));
          assert.deepEqual(decodeStrict(BlockSchema, blockBytes), fromBinary(BlockSchema, blockBytes));
          const { nextCommittee, ...rest } = c;
          const commit = create(CommitSchema, {
            ...rest,
            ...(nextCommittee === null ? {} : { endOfEpoch: { nextCommittee } }),
          });
          const commitBytes = toBinary(CommitSchema, commit);
          assert.deepEqual(decodeStrict(CommitSchema, commitBytes), fromBinary(CommitSchema, commitBytes));
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("property: the strict decoder agrees with the reference reading, or refuses", () => {
  // Random field sequences: any field number (the known ones often), any wire type (the four
  // valid ones often), payloads of any shape (minimal and padded varints, truncations, nested
  // sequences in LEN fields so that nested messages get the same treatment).
  const varintBytes = fc.oneof(
    { weight: 6, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(encodeVarint) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 300 }).map((n) => encodeVarint(BigInt(n))) },
    // Any varint shape: 1..11 bytes, the last without a continuation bit (padded, overlong, over 64 bits).
    {
      weight: 1,
      arbitrary: fc
        .uint8Array({ minLength: 1, maxLength: 11 })
        .map((b) => b.map((x, i) => (i === b.length - 1 ? x & 0x7f : x | 0x80))),
    },
  );
  const fieldNumber = fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: 1, max: 8 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 29 - 1 }) },
  );
  const wireType = fc.oneof(
    { weight: 12, arbitrary: fc.constantFrom(0, 1, 2, 5) },
    { weight: 1, arbitrary: fc.constantFrom(3, 4, 6, 7) },
  );
  const { sequence } = fc.letrec<{ sequence: Uint8Array; field: Uint8Array }>((tie) => ({
    sequence: fc
      .array(tie("field"), { maxLength: 6, depthIdentifier: "wire" })
      .map((fields) => concat(...fields)),
    field: fc
      .tuple(
        fieldNumber,
        wireType,
        varintBytes,
        fc.uint8Array({ minLength: 8, maxLength: 8 }),
        fc.oneof(
          { depthIdentifier: "wire", maxDepth: 3 },
          fc.uint8Array({ maxLength: 40 }),
          fc.constantFrom(new Uint8Array(32)),
          tie("sequence"),
        ),
      )
      .map(([no, wt, v, fixed, payload]) => {
        const tag = encodeVarint(BigInt(no) * 8n + BigInt(wt));
        switch (wt) {
          case 0:
            return concat(tag, v);
          case 1:
            return concat(tag, fixed);
          case 5:
            return concat(tag, fixed.subarray(0, 4));
          case 2:
            return concat(tag, encodeVarint(BigInt(payload.length)), payload);
          default:
            return concat(tag, v.subarray(0, 1));
        }
      }),
  }));
  /** Now and then a sequence cut short or with a stray byte. */
  const input = fc.oneof(
    { weight: 8, arbitrary: sequence },
    {
      weight: 1,
      arbitrary: fc
        .tuple(sequence, fc.nat())
        .map(([s, n]) => s.subarray(0, s.length === 0 ? 0 : n % s.length)),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(sequence, fc.integer({ min: 0, max: 255 }))
        .map(([s, b]) => concat(s, Uint8Array.of(b))),
    },
  );

  const schemas: [string, DescMessage][] = [
    ["dagsync.v1.Block", BlockSchema],
    ["dagsync.v1.Commit", CommitSchema],
    ["dagsync.v1.FetchCommitsRequest", FetchCommitsRequestSchema],
  ];
  for (const [typeName, schema] of schemas)
    test(`${typeName}`, () => {
      let agreed = 0;
      let refused = 0;
      fc.assert(
        fc.property(input, (bytes) => {
          const ref = reference(typeName, bytes);
          let strict: Message | undefined;
          let error: unknown;
          try {
            strict = decodeStrict(schema, bytes) as Message;
          } catch (e) {
            error = e;
          }
          const readable = ref.message !== undefined && ref.flagged === undefined;
          if (strict === undefined) {
            refused++;
            assert.ok(
              !readable,
              `refused bytes the reference reads cleanly (${toHexString(bytes)}): ${String(error)}`,
            );
            return;
          }
          agreed++;
          assert.ok(
            readable,
            `accepted bytes the reference refuses or flags (${toHexString(bytes)}): ${ref.flagged}`,
          );
          assert.deepEqual(normalize(typeName, strict), ref.message, toHexString(bytes));
        }),
        { numRuns: 3000 },
      );
      // The generator exercises both outcomes.
      assert.ok(agreed > 100 && refused > 100, `agreed ${agreed}, refused ${refused}`);
    });
});

describe("a peer's block or commit with a field of the wrong wire type is malformed evidence", () => {
  const chain = new DevnetChain({
    validators: 4,
    epochs: 1,
    commitsPerEpoch: 4,
    txsPerBlock: 1,
    txBytes: 8,
    seed: 5,
  });
  const commits = [...chain.commits()];
  const verifier = new NativeVerifier();
  const first = commits[0]!;
  const keys = chain.keysByEpoch.get(0)!;

  /**
   * Appends field 1 again, as I32: protobuf-es reads its 4 bytes as the varint `value` (< 128) of
   * field 1 and an unknown field 100, so to it the message is unchanged; other readers see an
   * unknown field 1. Either way, only the wire type is wrong.
   */
  const skewed = (bytes: Uint8Array, value: number) =>
    concat(bytes, Uint8Array.of(0x0d, value, 0xa0, 0x06, 0x00));

  test("a commit: verifyCommitBatch fails with malformed, naming the field", () => {
    const bad = skewed(first.commitBytes, 1);
    // protobuf-es alone would read it as the same commit.
    assert.equal(fromBinary(CommitSchema, bad).index, 1n);
    const result = verifyCommitBatch({
      commits: [bad],
      certifierBlocks: first.certifierBlocks,
      expectedStart: 1,
      previousDigest: chain.genesis.digest,
      committee: chain.genesis.committee,
      chainId: chain.chainId,
      verifier,
    });
    assert.equal(result.commits.length, 0);
    assert.equal(result.error?.code, "malformed");
    assert.match(result.error!.message, /field 1 \(index\) of dagsync\.v1\.Commit has wire type 5 \(I32\)/);
  });

  test("a certifier block validly signed by its author: malformed, not a signature failure", () => {
    const last = commits.at(-1)!;
    const certifiers = last.certifierBlocks.map((b) => {
      const signed = fromBinary(WireSignedBlockSchema, b);
      const block = skewed(signed.block, 0);
      const author = fromBinary(BlockSchema, signed.block).author;
      const signature = keys[author]!.protocol.sign(blockSigningMessage(chain.chainId, block));
      return toBinary(WireSignedBlockSchema, create(WireSignedBlockSchema, { block, signature }));
    });
    // The signature is good and protobuf-es reads a sound block: only the wire type is wrong.
    assert.ok(fromBinary(SignedBlockSchema, certifiers[0]!).block !== undefined);
    const result = verifyCommitBatch({
      commits: commits.map((c) => c.commitBytes),
      certifierBlocks: certifiers,
      expectedStart: 1,
      previousDigest: chain.genesis.digest,
      committee: chain.genesis.committee,
      chainId: chain.chainId,
      verifier,
    });
    assert.equal(result.commits.length, 0);
    assert.equal(result.error?.code, "malformed");
    assert.match(result.error!.message, /field 1 \(epoch\) of dagsync\.v1\.Block has wire type 5 \(I32\)/);
  });
});
