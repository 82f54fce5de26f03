/**
 * FetchCommits' extended batch (DESIGN §3 batch contract; README "Deviations"): when nothing in
 * the bounds is certifiable, the server runs past them to the first commit it can certify, past
 * `maxCommitsPerFetch` if need be, but never out of start's epoch and never past the response
 * budget; otherwise NOT_FOUND naming the range searched. Real server on loopback, real LevelDB.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { PeerClient } from "../../src/client/index.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import { FetchCommitsRequestSchema } from "../../src/gen/dagsync/v1/sync_pb.js";
import { STATE_SYNC_SERVICE } from "../../src/server/index.js";
import type { Store } from "../../src/store/index.js";
import {
  assertBatchVerifies,
  buildStore,
  type RunningServer,
  rawUnary,
  removeDir,
  startServer,
  tempDir,
  wireSize,
} from "../helpers/server.js";

const PER_EPOCH = 300;
/** Epoch 0 is 1..300, epoch 1 is 301..600. Commit 300 (epoch 0's last) keeps no certifiers. */
const CERTIFIED = new Set([5, 250, 600]);

function fetchRaw(address: string, start: number, end: number) {
  return rawUnary(
    address,
    STATE_SYNC_SERVICE.fetchCommits.path,
    toBinary(
      FetchCommitsRequestSchema,
      create(FetchCommitsRequestSchema, { start: BigInt(start), end: BigInt(end) }),
    ),
  );
}

describe("FetchCommits past the bounds to the first certifiable commit", () => {
  let dir: string;
  let store: Store;
  let srv: RunningServer;
  let c: PeerClient;

  before(async () => {
    dir = await tempDir();
    const chain = new DevnetChain({
      epochs: 2,
      commitsPerEpoch: PER_EPOCH,
      txsPerBlock: 1,
      txBytes: 32,
      seed: 31,
    });
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

  test("runs past maxCommitsPerFetch (the documented deviation) and verifies", async () => {
    assert.equal(store.epochBoundsOf(6).end, PER_EPOCH);
    const res = await c.fetchCommits(6, 10);
    const entries = await assertBatchVerifies(store, 6, res);
    assert.equal(entries.at(-1)!.index, 250);
    assert.ok(entries.length > srv.server.options.maxCommitsPerFetch);
  });

  test("never leaves start's epoch: NOT_FOUND naming the range searched", async () => {
    // Commit 600 (epoch 1) is certified, but a batch never crosses an epoch end.
    const r = await fetchRaw(srv.address, 251, 260);
    assert.equal(r.code, status.NOT_FOUND, r.details);
    assert.match(r.details, /no certified commit in 251\.\.300 on this node/);
    assert.match(r.details, /300 ends epoch 0/);
  });

  test("obeys the response budget: at the exact size it answers, one byte less it is NOT_FOUND", async () => {
    const full = await c.fetchCommits(6, 10);
    const size = wireSize(full.commits, full.certifierBlocks);
    const exact = await startServer(store, { options: { maxFetchResponseBytes: size } });
    const tight = await startServer(store, { options: { maxFetchResponseBytes: size - 1 } });
    const ce = new PeerClient(exact.address);
    try {
      const res = await ce.fetchCommits(6, 10);
      assert.equal((await assertBatchVerifies(store, 6, res)).at(-1)!.index, 250);
      const r = await fetchRaw(tight.address, 6, 10);
      assert.equal(r.code, status.NOT_FOUND, r.details);
      assert.match(r.details, new RegExp(`within the ${size - 1}-byte response budget`));
      assert.match(r.details, /searched 6\.\.300, 300 ends epoch 0; the first commit it can certify is 250/);
    } finally {
      ce.close();
      await exact.stop();
      await tight.stop();
    }
  });

  test("a small budget: the usual batch within the bounds is unaffected", async () => {
    const small = await startServer(store, { options: { maxFetchResponseBytes: 64 * 1024 } });
    const cs = new PeerClient(small.address);
    try {
      // 1..5 is within the bounds (5 is certified): no extension.
      const entries = await assertBatchVerifies(store, 1, await cs.fetchCommits(1, 100));
      assert.equal(entries.at(-1)!.index, 5);
    } finally {
      cs.close();
      await small.stop();
    }
  });

  test("in the current epoch it searches to the highest synced commit", async () => {
    const res = await c.fetchCommits(301, 305);
    const entries = await assertBatchVerifies(store, 301, res);
    assert.equal(entries.at(-1)!.index, 600);
  });
});
