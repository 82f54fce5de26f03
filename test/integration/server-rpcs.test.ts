/**
 * The StateSync and Admin RPCs of a real SyncServer over real LevelDB stores and real gRPC
 * clients (DESIGN.md §3): happy paths, every error code with its message, truncation rules, and
 * that hostile requests never change the store.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, readdir, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer as createNetServer, type Server as NetServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { status } from "@grpc/grpc-js";
import { Level } from "level";
import { PeerClient, PeerError } from "../../src/client/index.js";
import {
  bytesEqual,
  formatBlockRef,
  parseCommit,
  rawFieldSize,
  sha256,
  shortHex,
  verifyBlocksAgainstRefs,
} from "../../src/core/index.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import { PeerStatusSchema } from "../../src/gen/dagsync/v1/admin_pb.js";
import { FetchCommitsRequestSchema, type PushCommitRequest } from "../../src/gen/dagsync/v1/sync_pb.js";
import { type BlockRef, CommitRefSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { Store, storeDatabases } from "../../src/store/index.js";
import { SubDagBroadcast } from "../../src/sync/broadcast.js";
import { run, spawnNode } from "../fixtures/child-process.js";
import {
  assertBatchVerifies,
  buildStore,
  type DevnetFixture,
  makeDevnet,
  openSubscribers,
  type RunningServer,
  rawUnary,
  removeDir,
  serveStoreDir,
  startServer,
  tempDir,
  toUnit,
  typedClients,
  waitFor,
  wireSize,
} from "../helpers/server.js";

const COMMITS_PER_EPOCH = 150;
const EPOCHS = 2;
const HIGHEST = COMMITS_PER_EPOCH * EPOCHS;

/** Rejects with a ConnectError of `code` whose message matches `message`; returns it. */
async function expectCode(call: Promise<unknown>, code: Code, message: RegExp): Promise<ConnectError> {
  const outcome = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(outcome instanceof ConnectError, `expected ${Code[code]}, got ${String(outcome)}`);
  assert.equal(
    outcome.code,
    code,
    `expected ${Code[code]}, got ${Code[outcome.code]}: ${outcome.rawMessage}`,
  );
  assert.match(outcome.rawMessage, message);
  return outcome;
}

/** Refs of the blocks of commits [from, to] of a store, in commit order. */
async function refsOf(store: Store, from: number, to: number): Promise<BlockRef[]> {
  const refs: BlockRef[] = [];
  for (const bytes of await store.getCommits(from, to)) refs.push(...parseCommit(bytes).commit.blocks);
  return refs;
}

/** What the hostile-request tests compare before and after: watermarks and a few reads. */
async function storeSnapshot(store: Store): Promise<string> {
  const m = store.watermarks;
  const refs = await refsOf(store, 5, 6);
  const blocks = await store.getBlocks(refs);
  const certifiers = await store.getCertifiers(m.highestSynced);
  const parts = [
    JSON.stringify({ ...m, highestSyncedDigest: Buffer.from(m.highestSyncedDigest).toString("hex") }),
    await store.highestCertifiedIn(1, m.highestSynced),
    await store.epochEnd(0),
    ...[1, 2, m.highestSynced].map(async (i) => sha256((await store.getCommit(i)) ?? new Uint8Array())),
    ...blocks.map((b) => sha256(b ?? new Uint8Array())),
    ...(certifiers ?? []).map((b) => sha256(b)),
  ];
  const resolved = await Promise.all(parts);
  return resolved
    .map((p) => (p instanceof Uint8Array ? Buffer.from(p).toString("hex") : String(p)))
    .join("|");
}

/** Applies the next `n` commits of a live chain to `store` and notifies the feed, as the engine does. */
async function applyNext(
  store: Store,
  feed: SubDagBroadcast,
  generated: ReturnType<DevnetChain["commits"]>,
  n: number,
): Promise<void> {
  const units = [];
  for (let i = 0; i < n; i++) {
    const next = generated.next();
    assert.ok(next.done !== true, "the chain ran out");
    units.push(toUnit(next.value));
  }
  await store.apply(units);
  feed.notify();
}
describe("server RPCs on a devnet store", () => {
  let fx: DevnetFixture;
  let srv: RunningServer;
  let client: PeerClient;
  let sync: ReturnType<typeof typedClients>["sync"];
  let admin: ReturnType<typeof typedClients>["admin"];
  const pushes: { peer: string; request: PushCommitRequest }[] = [];

  before(async () => {
    fx = await makeDevnet({
      epochs: EPOCHS,
      commitsPerEpoch: COMMITS_PER_EPOCH,
      txsPerBlock: 8,
      txBytes: 256,
      seed: 11,
    });
    srv = await serveStoreDir(fx.storePath(0), {
      onPushCommit: (peer, request) => pushes.push({ peer, request }),
    });
    client = new PeerClient(srv.address);
    ({ sync, admin } = typedClients(srv.baseUrl));
  });

  after(async () => {
    client?.close();
    await srv?.stop();
    await fx?.remove();
  });

  test("the devnet store is what the tests assume", () => {
    assert.equal(srv.store.watermarks.highestSynced, HIGHEST);
    assert.equal(srv.store.epochBoundsOf(1).end, COMMITS_PER_EPOCH);
  });

  test("GetCommitAvailability: watermarks, epoch, genesis digest and highest commit digest", async () => {
    const a = await sync.getCommitAvailability({});
    assert.equal(a.highestSyncedCommit, BigInt(HIGHEST));
    assert.equal(a.lowestAvailableCommit, 1n);
    const highestBytes = (await srv.store.getCommit(HIGHEST))!;
    assert.equal(a.epoch, BigInt(parseCommit(highestBytes).epoch), "epoch of the highest synced commit");
    assert.equal(a.epoch, BigInt(EPOCHS - 1));
    assert.equal(a.genesisDigest.length, 32);
    const { readFile } = await import("node:fs/promises");
    const genesisFileDigest = sha256(await readFile(fx.summary.genesisFile));
    assert.ok(bytesEqual(a.genesisDigest, genesisFileDigest), "genesis digest = SHA-256(genesis.pb)");
    assert.equal(Buffer.from(a.genesisDigest).toString("hex"), fx.summary.genesisDigest);
    assert.ok(bytesEqual(a.highestCommitDigest, sha256(highestBytes)));

    const viaPeer = await client.getCommitAvailability();
    assert.deepEqual(
      { highest: viaPeer.highest, lowest: viaPeer.lowest, epoch: viaPeer.epoch },
      { highest: HIGHEST, lowest: 1, epoch: EPOCHS - 1 },
    );
  });

  test("FetchCommits: contiguous canonical commits whose certifier blocks verify", async () => {
    const res = await client.fetchCommits(1, 10);
    assert.equal(res.commits.length, 10);
    const stored = await srv.store.getCommits(1, 10);
    res.commits.forEach((c, i) => {
      assert.ok(bytesEqual(c, stored[i]!), `commit ${i + 1} is not the stored bytes`);
    });
    const entries = await assertBatchVerifies(srv.store, 1, res);
    assert.deepEqual(
      entries.map((e) => e.index),
      Array.from({ length: 10 }, (_, i) => i + 1),
    );
    assert.ok(res.certifierBlocks.length >= 3, "a quorum of 4 equal stakes is 3 certifier blocks");

    // The decoding client sees the same commits.
    const decoded = await sync.fetchCommits({ start: 1n, end: 10n });
    assert.deepEqual(
      decoded.commits.map((c) => c.index),
      entries.map((e) => BigInt(e.index)),
    );
    assert.equal(decoded.certifierBlocks.length, res.certifierBlocks.length);
  });

  test("FetchCommits truncates at maxCommitsPerFetch (100)", async () => {
    const res = await client.fetchCommits(1, HIGHEST);
    assert.equal(res.commits.length, 100);
    const entries = await assertBatchVerifies(srv.store, 1, res);
    assert.equal(entries.at(-1)!.index, 100);
  });

  test("FetchCommits never crosses an epoch boundary: it ends at the end_of_epoch commit", async () => {
    const start = COMMITS_PER_EPOCH - 29;
    const res = await client.fetchCommits(start, HIGHEST);
    const entries = await assertBatchVerifies(srv.store, start, res);
    assert.equal(entries.length, 30);
    const last = entries.at(-1)!;
    assert.equal(last.index, COMMITS_PER_EPOCH);
    assert.notEqual(last.commit.endOfEpoch, undefined, "the batch ends at the end_of_epoch commit");
    assert.equal(last.epoch, 0);

    // The next batch starts the next epoch and verifies under that epoch's committee.
    const next = await client.fetchCommits(COMMITS_PER_EPOCH + 1, HIGHEST);
    const nextEntries = await assertBatchVerifies(srv.store, COMMITS_PER_EPOCH + 1, next);
    assert.equal(nextEntries[0]!.epoch, 1);
    assert.equal(nextEntries.length, 100);
    // The previous epoch's committee does not certify it (a key rotated and a stake changed).
    const old = await srv.store.getCommittee(0);
    const cur = await srv.store.getCommittee(1);
    assert.ok(old !== undefined && cur !== undefined);
    assert.notDeepEqual(old.committee.validators, cur.committee.validators);
  });

  test("FetchCommits stops at the highest commit, even for end = 2^53 - 1 (the largest index accepted)", async () => {
    const res = await client.fetchCommits(HIGHEST - 9, Number.MAX_SAFE_INTEGER);
    const entries = await assertBatchVerifies(srv.store, HIGHEST - 9, res);
    assert.equal(entries.at(-1)!.index, HIGHEST);
    const decoded = await sync.fetchCommits({ start: BigInt(HIGHEST - 1), end: 2n ** 53n - 1n });
    assert.deepEqual(
      decoded.commits.map((c) => c.index),
      [BigInt(HIGHEST - 1), BigInt(HIGHEST)],
    );
  });

  test("FetchCommits: every batch of a whole-chain walk verifies and the walk covers the chain", async () => {
    let next = 1;
    let batches = 0;
    while (next <= HIGHEST) {
      const res = await client.fetchCommits(next, HIGHEST);
      const entries = await assertBatchVerifies(srv.store, next, res);
      next = entries.at(-1)!.index + 1;
      batches++;
    }
    assert.equal(next, HIGHEST + 1);
    assert.equal(batches, 4, "100 + 50 (epoch end) + 100 + 50");
  });

  test("FetchBlocks: blocks in request order, each hashing to its ref", async () => {
    const refs = await refsOf(srv.store, 20, 30);
    assert.ok(refs.length >= 20);
    // An order different from the store's key order: reversed, then interleaved.
    const shuffled = [...refs].reverse().filter((_, i) => i % 2 === 0);
    shuffled.push(...[...refs].reverse().filter((_, i) => i % 2 === 1));
    const res = await client.fetchBlocks(shuffled);
    assert.equal(res.blocks.length, shuffled.length);
    const checked = verifyBlocksAgainstRefs(shuffled, res.blocks);
    assert.equal(checked.error, undefined);
    res.blocks.forEach((b, i) => {
      assert.ok(bytesEqual(sha256(b), shuffled[i]!.digest), `block ${i} does not hash to its ref`);
    });
    // The same ref twice is served twice.
    const twice = await client.fetchBlocks([refs[0]!, refs[0]!]);
    assert.equal(twice.blocks.length, 2);
    assert.ok(bytesEqual(twice.blocks[0]!, twice.blocks[1]!));
    // The decoding client decodes them as SignedBlocks of the right round and author.
    const decoded = await sync.fetchBlocks({ refs: shuffled.slice(0, 3) });
    decoded.blocks.forEach((b, i) => {
      assert.equal(b.block?.round, shuffled[i]!.round);
      assert.equal(b.block?.author, shuffled[i]!.author);
    });
  });

  test("PushCommit returns OK and hands the hint to onPushCommit", async () => {
    const before = pushes.length;
    const digest = sha256((await srv.store.getCommit(42))!);
    await client.pushCommit(create(CommitRefSchema, { index: 42n, digest }), 41);
    assert.equal(pushes.length, before + 1);
    const push = pushes.at(-1)!;
    assert.equal(push.peer, "127.0.0.1");
    assert.equal(push.request.commit?.index, 42n);
    assert.ok(bytesEqual(push.request.commit?.digest ?? new Uint8Array(), digest));
    assert.equal(push.request.highestSyncedCommit, 41n);
    // A hint is never trusted: the store does not move.
    assert.equal(srv.store.watermarks.highestSynced, HIGHEST);
    // A malformed hint is refused and not passed on.
    await expectCode(
      sync.pushCommit({ commit: { index: 1n, digest: new Uint8Array(5) }, highestSyncedCommit: 1n }),
      Code.InvalidArgument,
      /commit\.digest must be 32 bytes/,
    );
    assert.equal(pushes.length, before + 1);
  });

  test("Admin/GetStatus reports chain, genesis, watermarks and epoch", async () => {
    const s = await admin.getStatus({});
    assert.equal(s.chainId, fx.summary.chainId);
    assert.equal(Buffer.from(s.genesisDigest).toString("hex"), fx.summary.genesisDigest);
    assert.equal(s.highestSyncedCommit, BigInt(HIGHEST));
    assert.equal(s.highestVerifiedCommit, BigInt(HIGHEST));
    assert.equal(s.lowestAvailableCommit, 1n);
    assert.equal(s.epoch, BigInt(EPOCHS), "the epoch the next commit belongs to");
    assert.equal(s.syncState, "serving");
    assert.equal(s.role, "validator");
    const viaPeer = await client.getStatus();
    assert.equal(viaPeer.chainId, fx.summary.chainId);
  });

  test("SubscribeCommits replays committed sub-DAGs from start", async () => {
    const ac = new AbortController();
    const got: number[] = [];
    const start = HIGHEST - 5;
    for await (const m of client.subscribeCommits(start, ac.signal)) {
      const entry = parseCommit(m.commit);
      got.push(entry.index);
      assert.ok(bytesEqual(m.commit, (await srv.store.getCommit(entry.index))!));
      assert.equal(verifyBlocksAgainstRefs(entry.commit.blocks, m.blocks).error, undefined);
      assert.equal(m.blocks.length, entry.commit.blocks.length);
      if (entry.index === HIGHEST) break;
    }
    ac.abort();
    assert.deepEqual(
      got,
      Array.from({ length: 6 }, (_, i) => start + i),
    );
    // The stream is gone on the server too (no feed: nothing else would end it).
    await waitFor(
      async () => (await openSubscribers(srv)) === 0,
      5_000,
      "the subscriber gauge to return to 0",
    );
  });

  test("a cancelled subscriber that the server was blocked writing to releases its slot", async () => {
    // A server allowing 2 calls in flight per peer; the decoding client has a 64 KiB HTTP/2 window,
    // so an unread stream blocks the server's writes.
    const tight = await startServer(srv.store, { options: { maxInflightPerPeer: 2 } });
    const { sync } = typedClients(tight.baseUrl);
    try {
      for (let k = 0; k < 3; k++) {
        const ac = new AbortController();
        const it = sync.subscribeCommits({ start: 1n }, { signal: ac.signal })[Symbol.asyncIterator]();
        const first = await it.next();
        assert.equal(first.done, false);
        await new Promise((r) => setTimeout(r, 300)); // the server fills the window and waits for drain
        ac.abort();
        await it.next().catch(() => undefined);
      }
      // Had a slot leaked per cancelled stream, the cap of 2 would now refuse every call.
      await waitFor(
        async () => (await openSubscribers(tight)) === 0,
        5_000,
        "the subscriber gauge to return to 0",
      );
      const a = await sync.getCommitAvailability({});
      assert.equal(a.highestSyncedCommit, BigInt(HIGHEST));
    } finally {
      await tight.stop();
    }
  });

  describe("errors carry the right code and an actionable message", () => {
    test("FetchCommits start = 0 is INVALID_ARGUMENT", async () => {
      await expectCode(sync.fetchCommits({ start: 0n, end: 5n }), Code.InvalidArgument, /start must be ≥ 1/);
    });

    test("FetchCommits start > end is INVALID_ARGUMENT", async () => {
      await expectCode(
        sync.fetchCommits({ start: 9n, end: 3n }),
        Code.InvalidArgument,
        /start 9 is after end 3/,
      );
    });

    test("FetchCommits beyond the highest commit is OUT_OF_RANGE naming what is served", async () => {
      await expectCode(
        sync.fetchCommits({ start: BigInt(HIGHEST + 1), end: BigInt(HIGHEST + 10) }),
        Code.OutOfRange,
        new RegExp(`commit ${HIGHEST + 1} is not available: this node serves commits 1\\.\\.${HIGHEST}`),
      );
      await expectCode(
        sync.fetchCommits({ start: 2n ** 53n - 1n, end: 2n ** 53n - 1n }),
        Code.OutOfRange,
        /commit 9007199254740991 is not available/,
      );
      const e = await client.fetchCommits(HIGHEST + 1, HIGHEST + 1).catch((x: unknown) => x);
      assert.ok(e instanceof PeerError && e.kind === "unavailable_range", String(e));
    });

    test("FetchBlocks with more than 1000 refs is INVALID_ARGUMENT", async () => {
      const ref = (await refsOf(srv.store, 1, 1))[0]!;
      const refs = Array.from({ length: 1001 }, () => ({
        round: ref.round,
        author: ref.author,
        digest: ref.digest,
      }));
      await expectCode(
        sync.fetchBlocks({ refs }),
        Code.InvalidArgument,
        /1001 refs requested; at most 1000 per FetchBlocks/,
      );
      // Exactly 1000 is allowed.
      const ok = await sync.fetchBlocks({ refs: refs.slice(0, 1000) });
      assert.ok(ok.blocks.length > 0);
    });

    test("FetchBlocks with a malformed ref (5-byte digest) is INVALID_ARGUMENT naming it", async () => {
      const good = (await refsOf(srv.store, 3, 3))[0]!;
      await expectCode(
        sync.fetchBlocks({ refs: [good, { round: 7, author: 2, digest: new Uint8Array(5) }] }),
        Code.InvalidArgument,
        /refs\[1\] \(round 7, author 2\) has a 5-byte digest; digests are 32 bytes/,
      );
    });

    test("FetchBlocks with no refs is INVALID_ARGUMENT", async () => {
      await expectCode(sync.fetchBlocks({ refs: [] }), Code.InvalidArgument, /refs is empty/);
    });

    test("FetchBlocks with an unknown ref is NOT_FOUND naming the ref", async () => {
      const good = (await refsOf(srv.store, 3, 3))[0]!;
      const unknown = { round: good.round, author: good.author, digest: new Uint8Array(randomBytes(32)) };
      const e = await expectCode(sync.fetchBlocks({ refs: [good, unknown] }), Code.NotFound, /not stored/);
      assert.ok(e.rawMessage.includes(`refs[1] ${formatBlockRef(unknown)}`), e.rawMessage);
      assert.ok(e.rawMessage.includes(shortHex(unknown.digest)));
    });

    test("an undecodable request body is INVALID_ARGUMENT, not INTERNAL", async () => {
      // Field 1 (varint) with a truncated varint.
      const r1 = await rawUnary(srv.address, "/dagsync.v1.StateSync/FetchCommits", Uint8Array.of(0x08, 0x80));
      assert.equal(r1.code, status.INVALID_ARGUMENT, r1.details);
      assert.match(r1.details, /request does not decode as dagsync\.v1\.FetchCommitsRequest/);
      // A ref whose length prefix runs past the end of the message.
      const r2 = await rawUnary(
        srv.address,
        "/dagsync.v1.StateSync/FetchBlocks",
        Uint8Array.of(0x0a, 0x40, 1),
      );
      assert.equal(r2.code, status.INVALID_ARGUMENT, r2.details);
      assert.match(r2.details, /request does not decode as dagsync\.v1\.FetchBlocksRequest/);
    });

    test("SubscribeCommits start = 0 is INVALID_ARGUMENT", async () => {
      const e = await (async () => {
        for await (const _ of sync.subscribeCommits({ start: 0n })) return undefined;
        return undefined;
      })().catch((x: unknown) => x);
      assert.ok(e instanceof ConnectError, String(e));
      assert.equal(e.code, Code.InvalidArgument);
      assert.match(e.rawMessage, /start must be ≥ 1/);
    });
  });

  describe("one reading of every byte: wire types and 64-bit indices (issue 10)", () => {
    const MAX = "9007199254740991";

    /** The first message or error of a SubscribeCommits stream, within 5 s (a hang fails the test). */
    async function firstOfSubscribe(start: bigint): Promise<unknown> {
      const signal = AbortSignal.timeout(5_000);
      try {
        for await (const m of sync.subscribeCommits({ start }, { signal })) return m;
        return undefined;
      } catch (e) {
        return e;
      }
    }

    test("a request field of the wrong wire type is INVALID_ARGUMENT naming the field", async () => {
      // 0d 23 = field 1 (start) as I32; protobuf-es alone reads it as start = 35, other readers as 0.
      const r = await rawUnary(
        srv.address,
        "/dagsync.v1.StateSync/FetchCommits",
        Uint8Array.of(0x0d, 0x23, 0x10, 0x99, 0x01),
      );
      assert.equal(r.code, status.INVALID_ARGUMENT, r.details);
      assert.match(
        r.details,
        /field 1 \(start\) of dagsync\.v1\.FetchCommitsRequest has wire type 5 \(I32\), expected VARINT/,
      );
      // Nested: PushCommit's CommitRef with index (field 1) as LEN.
      const r2 = await rawUnary(
        srv.address,
        "/dagsync.v1.StateSync/PushCommit",
        Uint8Array.of(0x0a, 0x03, 0x0a, 0x01, 0x05, 0x10, 0x01),
      );
      assert.equal(r2.code, status.INVALID_ARGUMENT, r2.details);
      assert.match(
        r2.details,
        /field 1 \(index\) of dagsync\.v1\.CommitRef has wire type 2 \(LEN\), expected VARINT, in field 1 \(commit\) of dagsync\.v1\.PushCommitRequest/,
      );
      // The same values with the right wire types are served.
      const ok = await rawUnary(
        srv.address,
        "/dagsync.v1.StateSync/FetchCommits",
        toBinary(FetchCommitsRequestSchema, create(FetchCommitsRequestSchema, { start: 35n, end: 153n })),
      );
      assert.equal(ok.code, status.OK, ok.details);
    });

    test("FetchCommits start 2^53 + 1 is INVALID_ARGUMENT naming 9007199254740993", async () => {
      await expectCode(
        sync.fetchCommits({ start: 2n ** 53n + 1n, end: 2n ** 53n + 1n }),
        Code.InvalidArgument,
        new RegExp(
          `^start 9007199254740993 is above 2\\^53 − 1 \\(${MAX}\\), the largest index dagsync accepts$`,
        ),
      );
      await expectCode(
        sync.fetchCommits({ start: 2n ** 53n, end: 2n ** 53n }),
        Code.InvalidArgument,
        /^start 9007199254740992 is above/,
      );
    });

    test("FetchCommits end 2^64 - 1 is INVALID_ARGUMENT naming 18446744073709551615", async () => {
      await expectCode(
        sync.fetchCommits({ start: 1n, end: 2n ** 64n - 1n }),
        Code.InvalidArgument,
        /^end 18446744073709551615 is above 2\^53 − 1/,
      );
    });

    test("SubscribeCommits start 2^64 - 1 is INVALID_ARGUMENT at once, not a stream that never ends", async () => {
      const started = Date.now();
      const e = await firstOfSubscribe(2n ** 64n - 1n);
      assert.ok(e instanceof ConnectError, String(e));
      assert.equal(e.code, Code.InvalidArgument, e.rawMessage);
      assert.match(e.rawMessage, /^start 18446744073709551615 is above 2\^53 − 1/);
      assert.ok(Date.now() - started < 4_000, "answered promptly");
      await waitFor(async () => (await openSubscribers(srv)) === 0, 5_000, "no subscriber left");
    });

    test("PushCommit indices above 2^53 - 1 are INVALID_ARGUMENT and never reach the engine", async () => {
      const before = pushes.length;
      await expectCode(
        sync.pushCommit({
          commit: { index: 1n, digest: new Uint8Array(32) },
          highestSyncedCommit: 2n ** 64n - 1n,
        }),
        Code.InvalidArgument,
        /^highest_synced_commit 18446744073709551615 is above 2\^53 − 1/,
      );
      await expectCode(
        sync.pushCommit({
          commit: { index: 2n ** 53n, digest: new Uint8Array(32) },
          highestSyncedCommit: 1n,
        }),
        Code.InvalidArgument,
        /^commit\.index 9007199254740992 is above 2\^53 − 1/,
      );
      assert.equal(pushes.length, before);
    });
  });

  test("hostile requests never change the store and never stop the server", async () => {
    const snapshotBefore = await storeSnapshot(srv.store);
    const good = (await refsOf(srv.store, 5, 5))[0]!;
    const hostile: Promise<unknown>[] = [
      sync.fetchCommits({ start: 0n, end: 0n }),
      sync.fetchCommits({ start: 5n, end: 1n }),
      sync.fetchCommits({ start: 2n ** 64n - 1n, end: 2n ** 64n - 1n }),
      sync.fetchBlocks({ refs: Array.from({ length: 1001 }, () => good) }),
      sync.fetchBlocks({ refs: [{ round: 1, author: 0, digest: new Uint8Array(5) }] }),
      sync.fetchBlocks({ refs: [{ round: 2 ** 32 - 1, author: 2 ** 32 - 1, digest: new Uint8Array(32) }] }),
      sync.pushCommit({ commit: { index: 2n ** 53n - 1n, digest: new Uint8Array(32).fill(7) } }),
      sync.pushCommit({ commit: { index: 2n ** 64n - 1n, digest: new Uint8Array(32).fill(7) } }),
      sync.pushCommit({ commit: { index: 1n, digest: new Uint8Array(3) } }),
    ];
    const raw = [
      rawUnary(srv.address, "/dagsync.v1.StateSync/FetchCommits", Uint8Array.of(0xff, 0xff, 0xff)),
      rawUnary(srv.address, "/dagsync.v1.StateSync/FetchBlocks", Uint8Array.of(0x0a, 0xff, 0xff, 0xff, 0x0f)),
      rawUnary(srv.address, "/dagsync.v1.StateSync/PushCommit", Uint8Array.of(0x0a, 0x02, 0x12, 0x40)),
      // Field 1 (start) as I32: what protobuf-es alone would read as start = 35.
      rawUnary(
        srv.address,
        "/dagsync.v1.StateSync/FetchCommits",
        Uint8Array.of(0x0d, 0x23, 0x10, 0x99, 0x01),
      ),
      // Over maxReceiveMessageBytes (1 MiB).
      rawUnary(srv.address, "/dagsync.v1.StateSync/FetchBlocks", new Uint8Array(2 * 1024 * 1024).fill(0x0a)),
      rawUnary(srv.address, "/dagsync.v1.StateSync/NoSuchMethod", new Uint8Array(0)),
    ];
    const outcomes = await Promise.allSettled(hostile);
    // Every hostile typed call is refused except the well-formed (if absurd) PushCommit hint.
    const codes = outcomes.map((o) => (o.status === "rejected" ? ConnectError.from(o.reason).code : "ok"));
    assert.deepEqual(codes, [
      Code.InvalidArgument,
      Code.InvalidArgument,
      Code.InvalidArgument,
      Code.InvalidArgument,
      Code.InvalidArgument,
      Code.NotFound,
      "ok",
      Code.InvalidArgument,
      Code.InvalidArgument,
    ]);
    const rawResults = await Promise.all(raw);
    assert.deepEqual(
      rawResults.map((r) => status[r.code]),
      [
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "RESOURCE_EXHAUSTED",
        "UNIMPLEMENTED",
      ],
      rawResults.map((r) => r.details).join("; "),
    );
    assert.equal(await storeSnapshot(srv.store), snapshotBefore);
    // Still serving, with the same data.
    const res = await client.fetchCommits(1, 3);
    await assertBatchVerifies(srv.store, 1, res);
  });

  describe("FetchCommits and FetchBlocks under a small maxFetchResponseBytes", () => {
    let small: RunningServer;
    let smallClient: PeerClient;
    const BUDGET = 20_000;
    before(async () => {
      small = await startServer(srv.store, { options: { maxFetchResponseBytes: BUDGET } });
      smallClient = new PeerClient(small.address);
    });
    after(async () => {
      smallClient?.close();
      await small?.stop();
    });

    test("responses stay within the byte budget, hold ≥ 1 commit and verify, across the chain", async () => {
      let next = 1;
      let batches = 0;
      let largest = 0;
      while (next <= HIGHEST) {
        const res = await smallClient.fetchCommits(next, HIGHEST);
        const size = wireSize(res.commits, res.certifierBlocks);
        largest = Math.max(largest, size);
        assert.ok(size <= BUDGET, `batch from ${next} is ${size} bytes, over ${BUDGET}`);
        assert.ok(res.commits.length >= 1);
        const entries = await assertBatchVerifies(srv.store, next, res);
        next = entries.at(-1)!.index + 1;
        batches++;
      }
      assert.equal(next, HIGHEST + 1);
      assert.ok(batches > 6, `only ${batches} batches: the budget did not truncate`);
      assert.ok(largest > BUDGET / 2, `largest batch ${largest} bytes: the budget is badly under-used`);
    });

    test("FetchBlocks returns a prefix of the refs within the budget", async () => {
      const refs = await refsOf(srv.store, 40, 60);
      const res = await smallClient.fetchBlocks(refs);
      assert.ok(res.blocks.length >= 1 && res.blocks.length < refs.length, `${res.blocks.length} blocks`);
      assert.ok(wireSize(res.blocks) <= BUDGET);
      assert.equal(verifyBlocksAgainstRefs(refs, res.blocks).error, undefined, "a prefix, in order");
      // The rest comes on the next ask.
      const rest = await smallClient.fetchBlocks(refs.slice(res.blocks.length));
      assert.ok(rest.blocks.length >= 1);
      assert.equal(verifyBlocksAgainstRefs(refs.slice(res.blocks.length), rest.blocks).error, undefined);
    });

    test("a budget smaller than one commit with its certifiers still returns exactly one commit", async () => {
      const tiny = await startServer(srv.store, { options: { maxFetchResponseBytes: 1_000 } });
      const c = new PeerClient(tiny.address);
      try {
        const res = await c.fetchCommits(10, 90);
        assert.equal(res.commits.length, 1);
        await assertBatchVerifies(srv.store, 10, res);
        const blocks = await c.fetchBlocks(await refsOf(srv.store, 10, 12));
        assert.equal(blocks.blocks.length, 1, "one block even when it alone exceeds the budget");
      } finally {
        c.close();
        await tiny.stop();
      }
    });
  });

  describe("rate limiting", () => {
    let limited: RunningServer;
    before(async () => {
      limited = await startServer(srv.store, {
        options: { rateLimits: { fetchCommits: { perSecond: 1, burst: 2 } } },
      });
    });
    after(async () => {
      await limited?.stop();
    });

    test("over quota is RESOURCE_EXHAUSTED with a retry-after-ms trailer; after the hint it succeeds", async () => {
      const c = new PeerClient(limited.address);
      try {
        await c.fetchCommits(1, 2);
        await c.fetchCommits(1, 2);
        // Third call at once: refused, with the hint as a trailer (grpc-js status metadata).
        const body = toBinary(
          FetchCommitsRequestSchema,
          create(FetchCommitsRequestSchema, { start: 1n, end: 2n }),
        );
        const r = await rawUnary(limited.address, "/dagsync.v1.StateSync/FetchCommits", body);
        assert.equal(r.code, status.RESOURCE_EXHAUSTED, r.details);
        assert.match(r.details, /rate limit for FetchCommits exceeded for 127\.0\.0\.1: retry in \d+ ms/);
        const hint = Number(r.trailers?.get("retry-after-ms")[0]);
        assert.ok(Number.isInteger(hint) && hint > 0 && hint <= 1000, `retry-after-ms = ${hint}`);
        // The peer client types it as rate_limited with the hint.
        const e = await c.fetchCommits(1, 2).catch((x: unknown) => x);
        assert.ok(e instanceof PeerError, String(e));
        assert.equal(e.kind, "rate_limited");
        assert.ok(e.retryAfterMs !== undefined && e.retryAfterMs > 0 && e.retryAfterMs <= 1000);
        // Other RPCs have their own quotas.
        await c.getCommitAvailability();
        await c.fetchBlocks(await refsOf(srv.store, 1, 1));
        // After the hint, the call is admitted.
        await new Promise((resolve) => setTimeout(resolve, e.retryAfterMs! + 20));
        const ok = await c.fetchCommits(1, 2);
        assert.equal(ok.commits.length, 2);
        const limitedCount = await limited.server.registry.getSingleMetricAsString(
          "dagsync_server_rate_limited_total",
        );
        assert.match(limitedCount, /method="FetchCommits",reason="rate"} 2/);
      } finally {
        c.close();
      }
    });
  });
});

describe("server on a pruned store", () => {
  let fx: DevnetFixture;
  let reference: Store;
  let srv: RunningServer;
  const KEEP_FROM = 51;

  before(async () => {
    fx = await makeDevnet({ epochs: 1, commitsPerEpoch: 120, txsPerBlock: 2, txBytes: 64, seed: 12 });
    const store = await Store.open(fx.storePath(1));
    const pruned = await store.prune(KEEP_FROM);
    assert.equal(pruned, KEEP_FROM - 1);
    await store.close();
    srv = await serveStoreDir(fx.storePath(1));
    reference = await Store.open(fx.storePath(0));
  });

  after(async () => {
    await srv?.stop();
    await reference?.close();
    await fx?.remove();
  });

  test("availability reports the lowest unpruned commit", async () => {
    const { sync } = typedClients(srv.baseUrl);
    const a = await sync.getCommitAvailability({});
    assert.equal(a.lowestAvailableCommit, BigInt(KEEP_FROM));
    assert.equal(a.highestSyncedCommit, 120n);
  });

  test("FetchCommits below the lowest available commit is OUT_OF_RANGE naming the served range", async () => {
    const { sync } = typedClients(srv.baseUrl);
    await expectCode(
      sync.fetchCommits({ start: 10n, end: 60n }),
      Code.OutOfRange,
      new RegExp(`commit 10 is not available: this node serves commits ${KEEP_FROM}\\.\\.120`),
    );
    await expectCode(
      sync.fetchCommits({ start: BigInt(KEEP_FROM - 1), end: BigInt(KEEP_FROM) }),
      Code.OutOfRange,
      /is not available/,
    );
    const e = await (async () => {
      for await (const _ of sync.subscribeCommits({ start: 1n })) return undefined;
      return undefined;
    })().catch((x: unknown) => x);
    assert.ok(e instanceof ConnectError && e.code === Code.OutOfRange, String(e));
    assert.match(e.rawMessage, new RegExp(`commit 1 was pruned: this node serves from ${KEEP_FROM}`));
  });

  test("from the lowest available commit on, batches verify against the unpruned chain", async () => {
    const c = new PeerClient(srv.address);
    try {
      const res = await c.fetchCommits(KEEP_FROM, 120);
      const entries = await assertBatchVerifies(reference, KEEP_FROM, res);
      assert.equal(entries.at(-1)!.index, 120);
      // Pruned blocks are gone: NOT_FOUND.
      const prunedRef = (await refsOf(reference, 10, 10))[0]!;
      const e = await c.fetchBlocks([prunedRef]).catch((x: unknown) => x);
      assert.ok(e instanceof PeerError && e.kind === "unavailable_range", String(e));
    } finally {
      c.close();
    }
  });
});

describe("FetchCommits on a store whose certifier blocks exist only at some indices", () => {
  let dir: string;
  let store: Store;
  let srv: RunningServer;
  let c: PeerClient;
  const CERTIFIED = new Set([7, 40, 90, 130, 180, 200]);

  before(async () => {
    dir = await tempDir();
    const chain = new DevnetChain({ epochs: 1, commitsPerEpoch: 200, txsPerBlock: 1, txBytes: 32, seed: 13 });
    ({ store } = await buildStore(dir, chain, { certified: (i) => CERTIFIED.has(i) }));
    srv = await startServer(store);
    c = new PeerClient(srv.address);
  });

  after(async () => {
    c?.close();
    await srv?.stop();
    await store?.close();
    await removeDir(dir);
  });

  test("the store holds certifiers exactly where the test put them", async () => {
    assert.equal(await store.highestCertifiedIn(1, 200), 200);
    assert.equal(await store.highestCertifiedIn(91, 129), undefined);
    assert.equal(await store.highestCertifiedIn(8, 40), 40);
  });

  for (const [start, end, last] of [
    [1, 300, 90], // cap 1..100: the highest certified ≤ 100 is 90
    [1, 60, 40],
    [41, 200, 130], // cap 41..140
    [91, 200, 180], // cap 91..190
    [131, 135, 180], // nothing certified in 131..135: extends to the first certified commit
    [200, 200, 200],
  ] as const)
    test(`FetchCommits(${start}, ${end}) ends at certified commit ${last} and verifies`, async () => {
      const res = await c.fetchCommits(start, end);
      const entries = await assertBatchVerifies(store, start, res);
      assert.equal(entries[0]!.index, start);
      assert.equal(entries.at(-1)!.index, last);
      assert.ok(CERTIFIED.has(last));
    });
});

describe("SubscribeCommits follows a growing store through a feed", () => {
  let dir: string;
  let store: Store;
  let chain: DevnetChain;
  let generated: ReturnType<DevnetChain["commits"]>;
  let feed: SubDagBroadcast;
  let srv: RunningServer;
  let c: PeerClient;
  const INITIAL = 40;

  const grow = (n: number) => applyNext(store, feed, generated, n);

  before(async () => {
    dir = await tempDir();
    chain = new DevnetChain({ epochs: 1, commitsPerEpoch: 500, txsPerBlock: 1, txBytes: 32, seed: 14 });
    store = await Store.open(dir, { genesis: chain.genesis.bytes });
    generated = chain.commits();
    feed = new SubDagBroadcast(store, 1024);
    srv = await startServer(store, { feed, options: { subscriberBufferCommits: 8 } });
    c = new PeerClient(srv.address);
    await grow(INITIAL);
  });

  after(async () => {
    c?.close();
    await srv?.stop();
    await store?.close();
    await removeDir(dir);
  });

  test("replays from start, then delivers commits applied after subscribing", async () => {
    const ac = new AbortController();
    const got: number[] = [];
    const stream = c.subscribeCommits(1, ac.signal);
    for await (const m of stream) {
      const entry = parseCommit(m.commit);
      got.push(entry.index);
      assert.ok(bytesEqual(m.commit, (await store.getCommit(entry.index))!), `commit ${entry.index}`);
      assert.equal(verifyBlocksAgainstRefs(entry.commit.blocks, m.blocks).error, undefined);
      assert.equal(m.blocks.length, entry.commit.blocks.length);
      if (entry.index === INITIAL) {
        // Replay done: the server is (or soon will be) waiting on the feed. Grow in two steps.
        setTimeout(() => {
          grow(3)
            .then(() => new Promise((r) => setTimeout(r, 50)))
            .then(() => grow(4))
            .catch((e: unknown) => ac.abort(e));
        }, 100);
      }
      if (entry.index === INITIAL + 7) break;
    }
    ac.abort();
    assert.deepEqual(
      got,
      Array.from({ length: INITIAL + 7 }, (_, i) => i + 1),
    );
    await waitFor(() => feed.subscriberCount === 0, 5_000, "the server to drop its feed listener");
  });

  test("a subscriber starting above the tip gets only live commits", async () => {
    const ac = new AbortController();
    const from = store.watermarks.highestSynced + 1;
    const first = (async () => {
      for await (const m of c.subscribeCommits(from, ac.signal)) return parseCommit(m.commit).index;
      return undefined;
    })();
    await waitFor(() => feed.subscriberCount === 1, 5_000, "the subscription to reach the server");
    await grow(1);
    assert.equal(await first, from);
    ac.abort();
    await waitFor(() => feed.subscriberCount === 0, 5_000, "the server to drop its feed listener");
  });

  test("a live subscriber that falls behind its buffer gets RESOURCE_EXHAUSTED naming where to resume", async () => {
    const { sync } = typedClients(srv.baseUrl);
    const from = store.watermarks.highestSynced + 1;
    const ac = new AbortController();
    const outcome = (async () => {
      const seen: bigint[] = [];
      for await (const m of sync.subscribeCommits({ start: BigInt(from) }, { signal: ac.signal })) {
        seen.push(m.commit?.index ?? 0n);
      }
      return seen;
    })().catch((e: unknown) => e);
    await waitFor(() => feed.subscriberCount === 1, 5_000, "the subscription to reach the server");
    await grow(20); // one step of 20 > subscriberBufferCommits (8)
    const e = await outcome;
    ac.abort();
    assert.ok(e instanceof ConnectError, `expected an error, got ${String(e)}`);
    assert.equal(e.code, Code.ResourceExhausted);
    assert.match(
      e.rawMessage,
      new RegExp(`fell more than 8 commits behind the tip: resubscribe with start = ${from}`),
    );
    await waitFor(() => feed.subscriberCount === 0, 5_000, "the server to drop its feed listener");
  });
});

describe("Admin/GetStatus with the node's status", () => {
  test("the node's sync state, role, target and peers override the defaults", async () => {
    const dir = await tempDir();
    const chain = new DevnetChain({ epochs: 1, commitsPerEpoch: 20, txsPerBlock: 1, txBytes: 16, seed: 15 });
    const { store } = await buildStore(dir, chain, { count: 10 });
    const srv = await startServer(store, {
      status: () => ({
        syncState: "catching_up",
        role: "full_node",
        targetCommit: 20n,
        peers: [
          create(PeerStatusSchema, {
            address: "10.0.0.1:9100",
            highest: 20n,
            lowest: 1n,
            score: 0.5,
            inFlight: 3,
            bytesPerSecond: 1e6,
          }),
        ],
      }),
    });
    try {
      const { admin } = typedClients(srv.baseUrl);
      const s = await admin.getStatus({});
      assert.equal(s.syncState, "catching_up");
      assert.equal(s.role, "full_node");
      assert.equal(s.targetCommit, 20n);
      assert.equal(s.highestSyncedCommit, 10n);
      assert.equal(s.chainId, chain.chainId);
      assert.equal(s.peers.length, 1);
      assert.equal(s.peers[0]?.address, "10.0.0.1:9100");
      assert.equal(s.peers[0]?.inFlight, 3);
    } finally {
      await srv.stop();
      await store.close();
      await removeDir(dir);
    }
  });
});

describe("FetchCommits and FetchBlocks at the default 4 MiB response budget", () => {
  // Blocks of ≈ 1 MiB: a commit's 4 certifier blocks take all but ≈ 2.5 KB of the 4 MiB budget,
  // so a batch is cut by bytes after a handful of (≈ 250-byte) commits, well before 100 commits
  // or the epoch's end; 4 blocks fit in a FetchBlocks response and a 5th does not.
  const BUDGET = 4 * 1024 * 1024;
  const COMMITS = 14;
  let dir: string;
  let store: Store;
  let srv: RunningServer;
  let c: PeerClient;

  before(async () => {
    dir = await tempDir();
    const chain = new DevnetChain({
      epochs: 1,
      commitsPerEpoch: COMMITS,
      txsPerBlock: 1,
      txBytes: 1_047_700,
      seed: 16,
    });
    ({ store } = await buildStore(dir, chain));
    srv = await startServer(store);
    assert.equal(srv.server.options.maxFetchResponseBytes, BUDGET, "the default budget is 4 MiB");
    c = new PeerClient(srv.address);
  });

  after(async () => {
    c?.close();
    await srv?.stop();
    await store?.close();
    await removeDir(dir);
  });

  /** Wire size of the commits [start, last] plus the certifier blocks of `last`, from the store. */
  async function batchSize(start: number, last: number): Promise<number> {
    return wireSize(await store.getCommits(start, last), (await store.getCertifiers(last)) ?? []);
  }

  test("every batch of a whole-chain walk verifies, fits 4 MiB and is the longest that fits", async (t) => {
    let next = 1;
    const lengths: number[] = [];
    while (next <= COMMITS) {
      const res = await c.fetchCommits(next, COMMITS);
      const size = wireSize(res.commits, res.certifierBlocks);
      assert.ok(size <= BUDGET, `batch from ${next} is ${size} bytes, over 4 MiB`);
      const entries = await assertBatchVerifies(store, next, res);
      const last = entries.at(-1)!.index;
      assert.equal(size, await batchSize(next, last), "the response is the stored commits and certifiers");
      // Maximal: one more commit (ending at its own certifiers) would not fit.
      if (last < COMMITS)
        assert.ok(
          (await batchSize(next, last + 1)) > BUDGET,
          `batch from ${next} stops at ${last} though ${last + 1} would fit`,
        );
      lengths.push(entries.length);
      next = last + 1;
    }
    t.diagnostic(`batch lengths ${lengths.join(", ")}`);
    assert.equal(next, COMMITS + 1);
    assert.ok(lengths.length >= 2, `one batch of ${lengths[0]}: the byte budget did not truncate`);
    assert.ok(
      lengths.every((n) => n < 100),
      `${lengths.join(", ")}: cut by the budget, not by maxCommitsPerFetch`,
    );
  });

  test("FetchBlocks returns the longest prefix of ≈ 1 MiB blocks within 4 MiB", async () => {
    const refs = await refsOf(store, 3, COMMITS);
    assert.ok(refs.length >= 8, `${refs.length} refs`);
    const sizes = (await store.getBlocks(refs)).map((b) => b!.length);
    let expected = 0;
    let total = 0;
    while (expected < sizes.length && total + rawFieldSize(sizes[expected]!) <= BUDGET)
      total += rawFieldSize(sizes[expected++]!);
    assert.ok(expected >= 2 && expected < refs.length, `${expected} of ${refs.length} blocks fit`);
    const res = await c.fetchBlocks(refs);
    assert.equal(res.blocks.length, expected, "the longest prefix that fits 4 MiB");
    assert.ok(wireSize(res.blocks) <= BUDGET);
    assert.equal(verifyBlocksAgainstRefs(refs, res.blocks).error, undefined, "a prefix, in order");
  });
});

describe("SubscribeCommits: a lagging subscriber is cut off, a fast one is not", () => {
  // Sub-DAGs of ≈ 130 KB (4 blocks of 32 KB). A subscriber that stops reading stops taking data
  // once its client's buffers are full (measured: ≈ 18 sub-DAGs with connect-node, then the 64 KiB
  // HTTP/2 window), so the server's writes to it block while the tip moves on by 60 commits.
  const BUFFER = 4;
  const STEP = 2;
  const STEPS = 30;
  let dir: string;
  let store: Store;
  let generated: ReturnType<DevnetChain["commits"]>;
  let feed: SubDagBroadcast;
  let srv: RunningServer;

  const grow = (n: number) => applyNext(store, feed, generated, n);

  before(async () => {
    dir = await tempDir();
    const chain = new DevnetChain({
      epochs: 1,
      commitsPerEpoch: 80,
      txsPerBlock: 4,
      txBytes: 8192,
      seed: 17,
    });
    store = await Store.open(dir, { genesis: chain.genesis.bytes });
    generated = chain.commits();
    feed = new SubDagBroadcast(store, 1024);
    srv = await startServer(store, { feed, options: { subscriberBufferCommits: BUFFER } });
    await grow(3);
  });

  after(async () => {
    await srv?.stop();
    await store?.close();
    await removeDir(dir);
  });

  test("the slow one gets RESOURCE_EXHAUSTED naming its resume index; the fast one gets every commit", async (t) => {
    const from = store.watermarks.highestSynced + 1;
    const fastAc = new AbortController();
    const slowAc = new AbortController();
    // Separate connections: each typedClients has its own transport.
    const fastSeen: number[] = [];
    let fastError: unknown;
    const fast = (async () => {
      const { sync } = typedClients(srv.baseUrl);
      for await (const m of sync.subscribeCommits({ start: BigInt(from) }, { signal: fastAc.signal })) {
        fastSeen.push(Number(m.commit?.index ?? 0n));
      }
    })().catch((e: unknown) => {
      fastError = e;
    });
    const slow = typedClients(srv.baseUrl)
      .sync.subscribeCommits({ start: BigInt(from) }, { signal: slowAc.signal })
      [Symbol.asyncIterator]();
    const slowFirst = slow.next();
    try {
      await waitFor(() => feed.subscriberCount === 2, 5_000, "both subscriptions to reach the server");
      // Grow in steps the fast subscriber keeps up with (STEP < BUFFER), waiting for it each time.
      for (let s = 0; s < STEPS; s++) {
        await grow(STEP);
        const target = store.watermarks.highestSynced;
        await waitFor(
          () => fastSeen.at(-1) === target || fastError !== undefined,
          10_000,
          `the fast subscriber to reach ${target}`,
        );
        assert.equal(fastError, undefined, `the fast subscriber failed: ${String(fastError)}`);
      }
      const tip = store.watermarks.highestSynced;
      assert.deepEqual(
        fastSeen,
        Array.from({ length: tip - from + 1 }, (_, i) => from + i),
        "the fast subscriber saw every commit, in order",
      );
      // Now read the slow one: what the server had written, then the cut-off.
      const slowSeen: number[] = [];
      const first = await slowFirst;
      assert.equal(first.done, false);
      slowSeen.push(Number(first.value?.commit?.index ?? 0n));
      const outcome = await (async () => {
        for (;;) {
          const r = await slow.next();
          if (r.done === true) return undefined;
          slowSeen.push(Number(r.value.commit?.index ?? 0n));
        }
      })().catch((e: unknown) => e);
      assert.ok(outcome instanceof ConnectError, `the slow subscriber was not cut off: ${String(outcome)}`);
      assert.equal(outcome.code, Code.ResourceExhausted, outcome.rawMessage);
      const last = slowSeen.at(-1)!;
      t.diagnostic(`slow subscriber: ${from}..${last} then cut off at tip ${tip}`);
      assert.deepEqual(
        slowSeen,
        Array.from({ length: last - from + 1 }, (_, i) => from + i),
        "the slow subscriber got a contiguous prefix",
      );
      assert.ok(tip - last > BUFFER, `the slow subscriber got up to ${last} of ${tip}: it did not lag`);
      assert.match(
        outcome.rawMessage,
        new RegExp(`fell more than ${BUFFER} commits behind the tip: resubscribe with start = ${last + 1}$`),
      );
      // The fast subscriber is still live after the cut-off.
      await waitFor(() => feed.subscriberCount === 1, 5_000, "the server to drop the slow subscriber");
      await grow(1);
      await waitFor(() => fastSeen.at(-1) === tip + 1, 5_000, "the fast subscriber to get one more commit");
      assert.equal(fastError, undefined);
      // Resubscribing where the message says resumes without a gap.
      const resumed: number[] = [];
      const ac = new AbortController();
      for await (const m of typedClients(srv.baseUrl).sync.subscribeCommits(
        { start: BigInt(last + 1) },
        { signal: ac.signal },
      )) {
        resumed.push(Number(m.commit?.index ?? 0n));
        if (resumed.at(-1) === tip + 1) break;
      }
      ac.abort();
      assert.deepEqual(
        resumed,
        Array.from({ length: tip + 1 - last }, (_, i) => last + 1 + i),
      );
    } finally {
      fastAc.abort();
      slowAc.abort();
      await fast;
      await slowFirst.catch(() => undefined);
    }
  });
});

describe("health while draining", () => {
  test("Watch goes SERVING → NOT_SERVING as stop() starts draining; stop waits for in-flight calls", async () => {
    const dir = await tempDir();
    const chain = new DevnetChain({ epochs: 1, commitsPerEpoch: 10, txsPerBlock: 1, txBytes: 16, seed: 18 });
    const { store } = await buildStore(dir, chain);
    const srv = await startServer(store, { options: { drainTimeoutMs: 20_000 } });
    const health = createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
    const ac = new AbortController();
    const seen: Record<string, HealthCheckResponse_ServingStatus[]> = { "": [], "dagsync.v1.StateSync": [] };
    const watches = Object.keys(seen).map((service) =>
      (async () => {
        for await (const r of health.watch({ service }, { signal: ac.signal })) seen[service]!.push(r.status);
      })().catch(() => undefined),
    );
    let stopping: Promise<void> | undefined;
    try {
      const { SERVING, NOT_SERVING } = HealthCheckResponse_ServingStatus;
      await waitFor(
        () => Object.values(seen).every((s) => s.at(-1) === SERVING),
        5_000,
        "both watches to report SERVING",
      );
      assert.equal((await health.check({})).status, SERVING);
      let stopped = false;
      stopping = srv.stop().then(() => {
        stopped = true;
      });
      await waitFor(
        () => Object.values(seen).every((s) => s.at(-1) === NOT_SERVING),
        5_000,
        "both watches to report NOT_SERVING",
      );
      assert.deepEqual(seen, { "": [SERVING, NOT_SERVING], "dagsync.v1.StateSync": [SERVING, NOT_SERVING] });
      // Still draining: the watch streams are calls in flight, and the grace period is 20 s.
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(stopped, false, "stop() returned while calls were in flight");
      // Once they end, stop completes long before the grace period.
      const cancelledAt = performance.now();
      ac.abort();
      await stopping;
      assert.ok(performance.now() - cancelledAt < 10_000, "stop() waited for the grace period");
      // A new connection is refused.
      const after = await createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }))
        .check({}, { timeoutMs: 3_000 })
        .catch((e: unknown) => e);
      assert.ok(after instanceof ConnectError, `a stopped server answered: ${String(after)}`);
      assert.equal(after.code, Code.Unavailable, after.rawMessage);
    } finally {
      ac.abort();
      await Promise.all(watches);
      await (stopping ?? srv.stop());
      await store.close();
      await removeDir(dir);
    }
  });
});

describe("dagsync serve refuses to start with a one-line error and no stack trace", () => {
  let fx: DevnetFixture;
  let root: string;
  let held: NetServer;
  let lockedStore: Store;
  let results: Map<string, Promise<{ code: number | null; stdout: string; stderr: string }>>;

  /** `dagsync serve --store STORE --listen LISTEN`, killed if it has not exited within 30 s. */
  function serve(store: string, listen = "127.0.0.1:0") {
    const child = spawnNode("bin/dagsync.js", ["serve", "--store", store, "--listen", listen]);
    const timer = setTimeout(() => child.process.kill("SIGKILL"), 30_000);
    return run(child).finally(() => clearTimeout(timer));
  }

  before(async () => {
    fx = await makeDevnet({ epochs: 1, commitsPerEpoch: 5, txsPerBlock: 1, txBytes: 16, seed: 19 });
    root = await tempDir("dagsync-serve-errors-");
    held = createNetServer();
    await new Promise<void>((resolve) => held.listen(0, "127.0.0.1", resolve));
    const heldPort = (held.address() as AddressInfo).port;
    // Not a dagsync store: a LevelDB with other data.
    const foreign = new Level(join(root, "foreign"));
    await foreign.put("hello", "world");
    await foreign.close();
    // A real dagsync store whose MANIFEST is damaged.
    await cp(fx.storePath(2), join(root, "corrupt"), { recursive: true });
    const corruptChain = storeDatabases(join(root, "corrupt")).chain;
    for (const f of await readdir(corruptChain))
      if (f.startsWith("MANIFEST-")) await writeFile(join(corruptChain, f), "");
    await writeFile(join(root, "a-file"), "not a directory");
    lockedStore = await Store.open(fx.storePath(3));
    const cases: [string, string, string?][] = [
      ["port taken", fx.storePath(0), `127.0.0.1:${heldPort}`],
      ["missing", join(root, "no-such-store")],
      ["foreign", join(root, "foreign")],
      ["corrupt", join(root, "corrupt")],
      ["file", join(root, "a-file")],
      ["in use", fx.storePath(3)],
    ];
    results = new Map(cases.map(([name, store, listen]) => [name, serve(store, listen)]));
    await Promise.allSettled(results.values());
  });

  after(async () => {
    await new Promise((r) => held?.close(r));
    await lockedStore?.close();
    await fx?.remove();
    if (root !== undefined) await removeDir(root);
  });

  /** Exit 1, nothing on stdout, and stderr exactly one line matching `message`. */
  async function assertOneLine(name: string, message: RegExp): Promise<void> {
    const r = await results.get(name)!;
    assert.equal(r.code, 1, `exit code ${r.code}; stderr:\n${r.stderr}`);
    assert.equal(r.stdout, "");
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, `more than one line on stderr:\n${r.stderr}`);
    assert.doesNotMatch(r.stderr, /\bat .*\(|Error:|node:internal/, "a stack trace");
    assert.match(lines[0]!, /^dagsync: /);
    assert.match(lines[0]!, message);
  }

  test("a port in use", async () => {
    const port = (held.address() as AddressInfo).port;
    await assertOneLine(
      "port taken",
      new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the port is already in use$`),
    );
  });

  test("a missing store (and nothing is created)", async () => {
    const path = join(root, "no-such-store");
    await assertOneLine("missing", new RegExp(`store ${path} does not exist \\(create one with`));
    assert.equal(existsSync(path), false);
  });

  test("a LevelDB that is not a dagsync store", async () => {
    await assertOneLine(
      "foreign",
      new RegExp(
        `store ${join(root, "foreign")} is a single LevelDB database, not a dagsync store of this version`,
      ),
    );
  });

  test("a dagsync store with a damaged MANIFEST", async () => {
    await assertOneLine(
      "corrupt",
      new RegExp(`store ${join(root, "corrupt")} cannot be opened: Corruption: `),
    );
  });

  test("a file instead of a store directory", async () => {
    await assertOneLine("file", new RegExp(`store ${join(root, "a-file")} cannot be opened: `));
  });

  test("a store in use by another process", async () => {
    await assertOneLine(
      "in use",
      new RegExp(
        `store ${fx.storePath(3)} is in use by another process \\(stop it, or use another --store\\)$`,
      ),
    );
  });
});
