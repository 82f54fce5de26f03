/**
 * Interop: clients that share no code with dagsync talk to a real SyncServer.
 *
 * (a) `buf curl` (the npm @bufbuild/buf binary, Go's connect-go/grpc stack) lists every service
 *     through server reflection and calls methods with JSON.
 * (b) Python grpcio (Debian's python3-grpcio, /usr/bin/python3) discovers the schema through
 *     reflection alone (test/interop/reflect_fetch.py) and fetches commits; re-serializing the
 *     decoded commits must reproduce their canonical bytes. It also exchanges signed NodeInfo
 *     through GetKnownPeers (test/interop/known_peers.py), each side verifying the other's
 *     signatures (DESIGN §9).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import {
  decodeStrict,
  fromHex,
  parseCommit,
  parseSignedBlock,
  sha256,
  toHex,
  validateSignedNodeInfo,
} from "../../src/core/index.js";
import { Ed25519Signer, NativeVerifier, signNodeInfo } from "../../src/crypto/index.js";
import { BlockSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import { type DevnetFixture, makeDevnet, type RunningServer, serveStoreDir } from "../helpers/server.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BUF = `${ROOT}node_modules/.bin/buf`;
const PYTHON = "/usr/bin/python3";
const REFLECT_FETCH = `${ROOT}test/interop/reflect_fetch.py`;
const KNOWN_PEERS = `${ROOT}test/interop/known_peers.py`;
const NODE_KEY = new Ed25519Signer(new Uint8Array(32).fill(0x21));
const PEER_KEY = new Ed25519Signer(new Uint8Array(32).fill(0x22));
/** Callers' SignedNodeInfo handed on by GetKnownPeers. */
const callers: Uint8Array[] = [];
const COMMITS_PER_EPOCH = 50;
const HIGHEST = 2 * COMMITS_PER_EPOCH;

let fx: DevnetFixture;
let srv: RunningServer;

before(async () => {
  fx = await makeDevnet({
    epochs: 2,
    commitsPerEpoch: COMMITS_PER_EPOCH,
    txsPerBlock: 4,
    txBytes: 64,
    seed: 21,
  });
  const chainId = fx.summary.chainId;
  const peer = signNodeInfo(PEER_KEY, chainId, { syncAddress: "10.9.9.9:9100", timestampMs: Date.now() });
  srv = await serveStoreDir(fx.storePath(0), {
    discovery: {
      self: () =>
        signNodeInfo(NODE_KEY, chainId, {
          syncAddress: srv.address,
          gossipAddress: "127.0.0.1:9101",
          timestampMs: Date.now(),
        }),
      peers: () => [peer],
      onCaller: (_, bytes) => callers.push(bytes),
    },
  });
});

after(async () => {
  await srv?.stop();
  await fx?.remove();
});

/** `buf curl --protocol grpc --http2-prior-knowledge ARGS`; resolves with stdout or rejects with the exit. */
async function bufCurl(...args: string[]): Promise<string> {
  const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args], {
    cwd: ROOT,
    timeout: 30_000,
  });
  return stdout;
}

function url(method = ""): string {
  return `${srv.baseUrl}${method === "" ? "" : `/${method}`}`;
}

/** SHA-256 hex digests of the stored commits [from, to]. */
async function storedDigests(from: number, to: number): Promise<string[]> {
  return (await srv.store.getCommits(from, to)).map((c) => toHex(sha256(c)));
}

describe("buf curl", () => {
  test("--list-methods shows every StateSync method, Admin/GetStatus and Health/Check", async () => {
    const methods = (await bufCurl("--list-methods", url())).split("\n").filter((l) => l !== "");
    for (const m of [
      "dagsync.v1.StateSync/GetCommitAvailability",
      "dagsync.v1.StateSync/FetchCommits",
      "dagsync.v1.StateSync/FetchBlocks",
      "dagsync.v1.StateSync/PushCommit",
      "dagsync.v1.StateSync/SubscribeCommits",
      "dagsync.v1.StateSync/GetKnownPeers",
      "dagsync.v1.Admin/GetStatus",
      "grpc.health.v1.Health/Check",
    ])
      assert.ok(methods.includes(m), `${m} is not listed:\n${methods.join("\n")}`);
    // The internal wire twins are not part of the public schema.
    assert.ok(!methods.some((m) => m.includes("wire")), methods.join("\n"));
  });

  test("GetCommitAvailability as JSON", async () => {
    const a = JSON.parse(await bufCurl(url("dagsync.v1.StateSync/GetCommitAvailability"))) as Record<
      string,
      string
    >;
    assert.equal(a.highestSyncedCommit, String(HIGHEST));
    assert.equal(a.lowestAvailableCommit, "1");
    assert.equal(a.epoch, "1");
    assert.equal(Buffer.from(a.genesisDigest ?? "", "base64").toString("hex"), fx.summary.genesisDigest);
    const highest = (await srv.store.getCommit(HIGHEST))!;
    assert.equal(Buffer.from(a.highestCommitDigest ?? "", "base64").toString("hex"), toHex(sha256(highest)));
  });

  test('FetchCommits -d \'{"start":1,"end":3}\' as JSON', async () => {
    const r = JSON.parse(
      await bufCurl("-d", '{"start":1,"end":3}', url("dagsync.v1.StateSync/FetchCommits")),
    ) as {
      commits: {
        index: string;
        epoch?: string;
        previousDigest: string;
        blocks: unknown[];
        leader: unknown;
      }[];
      certifierBlocks: { block: { round: number; commitVotes: { index: string }[] }; signature: string }[];
    };
    assert.deepEqual(
      r.commits.map((c) => c.index),
      ["1", "2", "3"],
    );
    // Commit 1 links to genesis.
    assert.equal(
      Buffer.from(r.commits[0]!.previousDigest, "base64").toString("hex"),
      fx.summary.genesisDigest,
    );
    for (const c of r.commits) {
      assert.ok(c.blocks.length >= 1);
      assert.notEqual(c.leader, undefined);
    }
    assert.ok(r.certifierBlocks.length >= 3, "a quorum of certifier blocks");
    for (const b of r.certifierBlocks) {
      assert.equal(Buffer.from(b.signature, "base64").length, 64);
      assert.ok(
        b.block.commitVotes.some((v) => v.index === "3"),
        "certifier blocks vote for commit 3",
      );
    }
  });

  test("FetchBlocks with a base64 digest from a commit, and Admin/GetStatus, as JSON", async () => {
    const commit = parseCommit((await srv.store.getCommit(2))!);
    const ref = commit.commit.blocks[0]!;
    const body = JSON.stringify({
      refs: [{ round: ref.round, author: ref.author, digest: Buffer.from(ref.digest).toString("base64") }],
    });
    const r = JSON.parse(await bufCurl("-d", body, url("dagsync.v1.StateSync/FetchBlocks"))) as {
      blocks: { block: { round: number; author?: number } }[];
    };
    assert.equal(r.blocks.length, 1);
    assert.equal(r.blocks[0]!.block.round, ref.round);
    assert.equal(r.blocks[0]!.block.author ?? 0, ref.author);

    const s = JSON.parse(await bufCurl(url("dagsync.v1.Admin/GetStatus"))) as Record<string, string>;
    assert.equal(s.chainId, fx.summary.chainId);
    assert.equal(s.highestSyncedCommit, String(HIGHEST));
    assert.equal(s.syncState, "serving");
  });

  test("GetKnownPeers as JSON: NodeInfo fields by their DESIGN §9 names", async () => {
    const a = JSON.parse(await bufCurl(url("dagsync.v1.StateSync/GetKnownPeers"))) as {
      self: { info: Record<string, string>; signature: string };
      peers: { info: Record<string, string> }[];
    };
    assert.equal(
      Buffer.from(a.self.info.networkKey ?? "", "base64").toString("hex"),
      toHex(NODE_KEY.publicKey),
    );
    assert.equal(a.self.info.syncAddress, srv.address);
    assert.equal(a.self.info.gossipAddress, "127.0.0.1:9101");
    assert.match(a.self.info.timestampMs ?? "", /^\d+$/);
    assert.equal(Buffer.from(a.self.signature, "base64").length, 64);
    assert.deepEqual(
      a.peers.map((p) => p.info.syncAddress),
      ["10.9.9.9:9100"],
    );
  });

  test("health Check says SERVING, overall and per service", async () => {
    const overall = JSON.parse(await bufCurl(url("grpc.health.v1.Health/Check"))) as { status: string };
    assert.equal(overall.status, "SERVING");
    const perService = JSON.parse(
      await bufCurl("-d", '{"service":"dagsync.v1.StateSync"}', url("grpc.health.v1.Health/Check")),
    ) as { status: string };
    assert.equal(perService.status, "SERVING");
  });

  test("an invalid request fails with invalid_argument and the server's message", async () => {
    const e = await bufCurl("-d", '{"start":0,"end":3}', url("dagsync.v1.StateSync/FetchCommits")).then(
      () => undefined,
      (x: unknown) => x as { code?: number; stdout?: string; stderr?: string },
    );
    assert.ok(e !== undefined, "buf curl succeeded on start = 0");
    assert.notEqual(e.code, 0);
    const output = `${e.stdout ?? ""}${e.stderr ?? ""}`;
    assert.match(output, /invalid_argument/);
    assert.match(output, /start must be ≥ 1/);
  });
});

describe("python grpcio through reflection only", () => {
  let pythonGrpc: string | undefined;

  before(async () => {
    try {
      const { stdout } = await run(
        PYTHON,
        ["-c", "import grpc, google.protobuf; print(grpc.__version__, google.protobuf.__version__)"],
        { timeout: 30_000 },
      );
      pythonGrpc = stdout.trim();
    } catch {
      pythonGrpc = undefined;
    }
  });

  interface ReflectFetchOutput {
    reflection: string;
    services: string[];
    highest: number;
    lowest: number;
    epoch: number;
    genesis_digest: string;
    commits: number;
    indices: number[];
    commit_sha256: string[];
    certifier_blocks: number;
  }

  /** Skips locally without python3-grpcio; under CI (which installs it) its absence is a failure. */
  function noPython(t: { skip(message: string): void }): void {
    const message = `${PYTHON} cannot import grpc: install python3-grpcio (apt-get install python3-grpcio)`;
    if (process.env.CI) assert.fail(message);
    t.skip(message);
  }

  async function reflectFetch(...args: string[]): Promise<ReflectFetchOutput> {
    const { stdout } = await run(PYTHON, [REFLECT_FETCH, srv.address, ...args], { timeout: 60_000 });
    return JSON.parse(stdout) as ReflectFetchOutput;
  }

  for (const version of ["v1", "v1alpha"] as const)
    test(`reflection ${version}: GetCommitAvailability and FetchCommits(1, 5), digests match`, async (t) => {
      if (pythonGrpc === undefined) {
        noPython(t);
        return;
      }
      t.diagnostic(`python grpcio, protobuf: ${pythonGrpc}`);
      const out = await reflectFetch("1", "5", "--reflection", version);
      assert.equal(out.reflection, version);
      assert.ok(out.services.includes("dagsync.v1.StateSync"), out.services.join(", "));
      assert.ok(out.services.includes("dagsync.v1.Admin"), out.services.join(", "));
      assert.equal(out.highest, HIGHEST);
      assert.equal(out.lowest, 1);
      assert.equal(out.epoch, 1);
      assert.equal(out.genesis_digest, fx.summary.genesisDigest);
      assert.equal(out.commits, 5);
      assert.deepEqual(out.indices, [1, 2, 3, 4, 5]);
      assert.deepEqual(out.commit_sha256, await storedDigests(1, 5));
      assert.ok(out.certifier_blocks >= 3);
    });

  test("GetKnownPeers: each side verifies the other's signed NodeInfo", async (t) => {
    if (pythonGrpc === undefined) {
      noPython(t);
      return;
    }
    const seed = "33".repeat(32);
    const before = callers.length;
    const { stdout } = await run(
      PYTHON,
      [KNOWN_PEERS, srv.address, fx.summary.chainId, seed, "127.0.0.1:9300"],
      { timeout: 60_000 },
    );
    interface Described {
      network_key: string;
      sync_address: string;
      gossip_address: string;
      timestamp_ms: number;
      verified: boolean;
    }
    const out = JSON.parse(stdout) as { self: Described | null; peers: Described[]; caller_key: string };
    // Python verified ours.
    assert.equal(out.self?.network_key, toHex(NODE_KEY.publicKey));
    assert.equal(out.self?.sync_address, srv.address);
    assert.equal(out.self?.verified, true);
    assert.deepEqual(
      out.peers.map((p) => [p.network_key, p.sync_address, p.verified]),
      [[toHex(PEER_KEY.publicKey), "10.9.9.9:9100", true]],
    );
    // And ours verifies Python's: its caller info, signed by Python, reached onCaller.
    assert.equal(callers.length, before + 1);
    const v = validateSignedNodeInfo(callers.at(-1)!, {
      chainId: fx.summary.chainId,
      verifier: new NativeVerifier(),
      nowMs: Date.now(),
    });
    assert.ok(v.ok, v.ok ? "" : v.detail);
    assert.equal(toHex(v.entry.networkKey), out.caller_key);
    assert.equal(v.entry.syncAddress, "127.0.0.1:9300");
    assert.equal(v.entry.gossipAddress, "");
  });

  test("a batch across an epoch boundary ends at the end_of_epoch commit, digests match", async (t) => {
    if (pythonGrpc === undefined) {
      noPython(t);
      return;
    }
    const out = await reflectFetch(String(COMMITS_PER_EPOCH - 4), String(HIGHEST));
    assert.deepEqual(
      out.indices,
      Array.from({ length: 5 }, (_, i) => COMMITS_PER_EPOCH - 4 + i),
    );
    assert.deepEqual(out.commit_sha256, await storedDigests(COMMITS_PER_EPOCH - 4, COMMITS_PER_EPOCH));
  });
});

/**
 * One reading of every byte (issue 10): Python's protobuf, knowing only the schema, reads honest
 * blocks exactly as dagsync does, and where it would read the issue's bytes otherwise (a known
 * field of the wrong wire type, skipped as unknown), dagsync refuses them instead of reading
 * something else. Over grpcio, the issue's raw FetchCommits request is refused too.
 */
describe("interop: Python's protobuf reads what dagsync reads, or dagsync refuses", () => {
  const READ_BYTES = `${ROOT}test/interop/read_bytes.py`;
  const DESCRIPTORS = `${ROOT}src/gen/dagsync.binpb`;

  interface ReadBytesOutput {
    readings: ({ fields: Record<string, unknown>; unknown: number } | { error: string })[];
    fetch_commits_raw: { code: string; details: string };
  }

  test("honest blocks read alike; 0d0110100d0d10022018 is epoch 0 with unknown fields to Python and refused by dagsync", async (t) => {
    try {
      await run(PYTHON, ["-c", "import grpc, google.protobuf"], { timeout: 10_000 });
    } catch {
      const message = `${PYTHON} cannot import grpc: install python3-grpcio (apt-get install python3-grpcio)`;
      if (process.env.CI) assert.fail(message);
      t.skip(message);
      return;
    }
    const commits = (await srv.store.getCommits(1, 3)).map(parseCommit);
    const refs = commits.flatMap((c) => c.commit.blocks);
    const signed = await srv.store.getBlocks(refs);
    const honest = signed.map((b) => parseSignedBlock(b!).blockBytes);
    assert.ok(honest.length >= 5);
    const issueBlock = fromHex("0d0110100d0d10022018");
    const cases = [...honest, issueBlock].map((b) => ({ type: "dagsync.v1.Block", hex: toHex(b) }));
    const child = execFile(PYTHON, [READ_BYTES, DESCRIPTORS, srv.address], { timeout: 60_000 });
    child.stdin!.end(JSON.stringify(cases));
    let stdout = "";
    child.stdout!.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    assert.equal(code, 0, "read_bytes.py failed");
    const out = JSON.parse(stdout) as ReadBytesOutput;

    honest.forEach((bytes, k) => {
      const python = out.readings[k]!;
      assert.ok("fields" in python, JSON.stringify(python));
      assert.equal(python.unknown, 0);
      const ours = toJson(BlockSchema, decodeStrict(BlockSchema, bytes), { useProtoFieldName: true });
      assert.deepEqual(python.fields, ours, `block ${k} read alike`);
    });
    const python = out.readings.at(-1)!;
    assert.ok("fields" in python, JSON.stringify(python));
    assert.equal(python.fields.epoch, undefined, "Python reads no epoch (field 1 has the wrong wire type)");
    assert.ok(python.unknown >= 1, "Python keeps it as an unknown field");
    assert.throws(
      () => decodeStrict(BlockSchema, issueBlock),
      /field 1 \(epoch\) of dagsync\.v1\.Block has wire type 5/,
    );
    assert.throws(
      () => parseSignedBlock(fromHex(`0a0a${toHex(issueBlock)}1240${"00".repeat(64)}`)),
      /field 1 \(epoch\)/,
    );

    assert.equal(out.fetch_commits_raw.code, "INVALID_ARGUMENT");
    assert.match(out.fetch_commits_raw.details, /field 1 \(start\)/);
  });
});
