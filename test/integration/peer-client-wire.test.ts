/**
 * The peer client reads every response strictly (issue 10): a peer whose response, or a commit or
 * block in it, has a known field of the wrong wire type, or whose heights are above 2^53 − 1, sent
 * malformed data (PeerError "invalid_data", which the sync engine bans on), named exactly. The
 * peer is a grpc-js server on loopback that answers each method with the bytes a test sets.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import {
  type MethodDefinition,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import { PeerClient, PeerError } from "../../src/client/index.js";
import { reassemble } from "../../src/client/strict-response.js";
import { GetStatusResponseSchema } from "../../src/gen/dagsync/v1/admin_pb.js";
import { GetCommitAvailabilityResponseSchema } from "../../src/gen/dagsync/v1/sync_pb.js";
import {
  WireCommittedSubDagSchema,
  WireFetchCommitsResponseSchema,
} from "../../src/gen/dagsync/wire/v1/wire_pb.js";

const hex = (h: string) => new Uint8Array(Buffer.from(h, "hex"));

function raw(path: string, responseStream = false): MethodDefinition<Buffer, Uint8Array> {
  return {
    path,
    requestStream: false,
    responseStream,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Uint8Array) => Buffer.from(b),
    responseDeserialize: (b: Buffer) => b,
  };
}

/** The bytes each method answers with. */
const answers: Record<string, Uint8Array> = {};
/** A status each method fails with instead, when set. */
const failures: Record<string, { code: status; details: string }> = {};

const availability = (highest: bigint) =>
  toBinary(
    GetCommitAvailabilityResponseSchema,
    create(GetCommitAvailabilityResponseSchema, {
      highestSyncedCommit: highest,
      lowestAvailableCommit: 1n,
      epoch: 0n,
      genesisDigest: new Uint8Array(32),
      highestCommitDigest: new Uint8Array(32),
    }),
  );

async function invalidData(call: Promise<unknown>, message: RegExp): Promise<void> {
  const e = await call.then(
    () => undefined,
    (x: unknown) => x,
  );
  assert.ok(e instanceof PeerError, `expected a PeerError, got ${String(e)}`);
  assert.equal(e.kind, "invalid_data", e.message);
  assert.match(e.message, message);
}

describe("the peer client refuses malformed responses as invalid data", () => {
  let server: Server;
  let client: PeerClient;

  before(async () => {
    server = new Server();
    const unary =
      (name: string) => (_call: ServerUnaryCall<Buffer, Uint8Array>, callback: sendUnaryData<Uint8Array>) => {
        const failure = failures[name];
        if (failure !== undefined) callback(failure);
        else callback(null, answers[name] ?? new Uint8Array(0));
      };
    server.addService(
      {
        getCommitAvailability: raw("/dagsync.v1.StateSync/GetCommitAvailability"),
        fetchCommits: raw("/dagsync.v1.StateSync/FetchCommits"),
        fetchBlocks: raw("/dagsync.v1.StateSync/FetchBlocks"),
        subscribeCommits: raw("/dagsync.v1.StateSync/SubscribeCommits", true),
        getStatus: raw("/dagsync.v1.Admin/GetStatus"),
      },
      {
        getCommitAvailability: unary("availability"),
        fetchCommits: unary("commits"),
        fetchBlocks: unary("blocks"),
        getStatus: unary("status"),
        subscribeCommits: (call: ServerWritableStream<Buffer, Uint8Array>) => {
          call.write(answers.subscribe ?? new Uint8Array(0));
          call.end();
        },
      },
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) =>
        e === null ? resolve(p) : reject(e),
      ),
    );
    client = new PeerClient(`127.0.0.1:${port}`);
  });

  after(async () => {
    client?.close();
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  });

  test("well-formed responses read as before (control)", async () => {
    answers.availability = availability(2n ** 53n - 1n);
    const a = await client.getCommitAvailability();
    assert.equal(a.highest, Number.MAX_SAFE_INTEGER);
    answers.commits = toBinary(
      WireFetchCommitsResponseSchema,
      create(WireFetchCommitsResponseSchema, { commits: [hex("0801")], certifierBlocks: [hex("0a00")] }),
    );
    const c = await client.fetchCommits(1, 1);
    assert.deepEqual(
      c.commits.map((b) => Buffer.from(b).toString("hex")),
      ["0801"],
    );
    assert.equal(c.bytes, 4);
    answers.status = toBinary(GetStatusResponseSchema, create(GetStatusResponseSchema, { chainId: "x" }));
    assert.equal((await client.getStatus()).chainId, "x");
  });

  test("responses are read from the received bytes; a non-minimal tag is read as any reader would", async () => {
    // Field 1 (commits) behind a 2-byte tag (8a 00): the fields are rebuilt, not viewed.
    answers.commits = hex("8a00020801");
    const c = await client.fetchCommits(1, 1);
    assert.deepEqual(
      c.commits.map((b) => Buffer.from(b).toString("hex")),
      ["0801"],
    );
  });

  test("GetCommitAvailability heights above 2^53 − 1 are invalid data naming the value", async () => {
    answers.availability = availability(2n ** 64n - 1n);
    await invalidData(
      client.getCommitAvailability(),
      /GetCommitAvailability: highest_synced_commit 18446744073709551615 is above 2\^53 − 1/,
    );
    answers.availability = availability(2n ** 53n);
    await invalidData(client.getCommitAvailability(), /highest_synced_commit 9007199254740992 is above/);
  });

  test("GetCommitAvailability with a height of the wrong wire type is invalid data naming the field", async () => {
    // Field 1 (highest_synced_commit) as I64: protobuf-es alone would read a varint from its bytes.
    answers.availability = hex("090500000000000000");
    await invalidData(
      client.getCommitAvailability(),
      /GetCommitAvailability: malformed response: field 1 \(highest_synced_commit\) of dagsync\.v1\.GetCommitAvailabilityResponse has wire type 1 \(I64\), expected VARINT/,
    );
  });

  test("a FetchCommits response whose commits field is a varint is invalid data", async () => {
    // Field 1 as VARINT 3: protobuf-es alone reads the 3 bytes after it as a commit, 0a0100.
    answers.commits = hex("08030a0100");
    await invalidData(
      client.fetchCommits(1, 1),
      /FetchCommits: malformed response: field 1 \(commits\) of dagsync\.wire\.v1\.WireFetchCommitsResponse has wire type 0 \(VARINT\), expected LEN/,
    );
    // A length of 2^32 + 1, which protobuf-es alone reads as 1.
    answers.commits = hex("0a8180808010aa");
    await invalidData(client.fetchCommits(1, 1), /length 4294967297 runs past the end/);
    // Bytes protobuf-es cannot even skip through (field 1 as VARINT, then a truncated LEN field).
    answers.commits = hex("0803aabbcc");
    await invalidData(
      client.fetchCommits(1, 1),
      /FetchCommits: malformed response \(parse binary: premature EOF\)/,
    );
  });

  test("a peer's own INTERNAL status saying 'parse binary' is not taken for a malformed response", async () => {
    failures.commits = { code: status.INTERNAL, details: "parse binary: not ours" };
    try {
      const e = await client.fetchCommits(1, 1).catch((x: unknown) => x);
      assert.ok(e instanceof PeerError, String(e));
      assert.equal(e.kind, "network", e.message);
    } finally {
      delete failures.commits;
    }
  });

  test("FetchBlocks and SubscribeCommits responses are read strictly too", async () => {
    answers.blocks = hex("0d00000000");
    await invalidData(
      client.fetchBlocks([]),
      /field 1 \(blocks\) of dagsync\.wire\.v1\.WireFetchBlocksResponse/,
    );
    answers.subscribe = hex("1100000000000000000a00");
    const stream = (async () => {
      for await (const _ of client.subscribeCommits(1)) return;
    })();
    await invalidData(
      stream,
      /SubscribeCommits: malformed response: field 2 \(blocks\) of dagsync\.wire\.v1\.WireCommittedSubDag has wire type 1 \(I64\)/,
    );
    answers.subscribe = toBinary(
      WireCommittedSubDagSchema,
      create(WireCommittedSubDagSchema, { commit: hex("0801"), blocks: [hex("0a00")] }),
    );
    for await (const m of client.subscribeCommits(1)) {
      assert.deepEqual([...m.commit], [8, 1]);
      break;
    }
  });
});

describe("reassemble", () => {
  test("fields back to back behind minimal tags: a view of the received bytes, no copy", () => {
    const received = hex("ff0a020801120100ff").subarray(1, 8);
    const fields = fromBinary(EmptySchema, received).$unknown;
    const bytes = reassemble(fields);
    assert.equal(bytes.buffer, received.buffer);
    assert.equal(bytes.byteOffset, received.byteOffset);
    assert.deepEqual([...bytes], [...received]);
  });

  test("a non-minimal tag: rebuilt, with the same fields", () => {
    const bytes = reassemble(fromBinary(EmptySchema, hex("8a0002080112010a")).$unknown);
    assert.equal(Buffer.from(bytes).toString("hex"), "0a02080112010a");
  });
});
