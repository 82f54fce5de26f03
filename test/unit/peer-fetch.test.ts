/**
 * PeerFetch (src/sync/peer-fetch.ts) with an injected network: deadlines cover the bytes already
 * in flight to the peer, and throughput samples are the peer's rate, not one request's share.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { BlocksResponse } from "../../src/client/index.js";
import { ByteBudget } from "../../src/sync/byte-budget.js";
import type { FetchOptions, SyncNetwork } from "../../src/sync/network.js";
import { DEFAULT_SYNC_OPTIONS } from "../../src/sync/options.js";
import { PeerFetch } from "../../src/sync/peer-fetch.js";
import { PeerSet } from "../../src/sync/peers.js";

const GENESIS = new Uint8Array(32).fill(7);

/** A network whose FetchBlocks answers `bytes` when the test resolves it, recording each call's options. */
function heldNetwork() {
  const calls: { options: FetchOptions; resolve: (r: BlocksResponse) => void }[] = [];
  const network: SyncNetwork = {
    getCommitAvailability: () => Promise.reject(new Error("unused")),
    fetchCommits: () => Promise.reject(new Error("unused")),
    fetchBlocks: (_peer, _refs, options) =>
      new Promise<BlocksResponse>((resolve) => calls.push({ options, resolve })),
    pushCommit: () => Promise.resolve(),
    close: () => {},
  };
  return { network, calls };
}

function setup() {
  const { network, calls } = heldNetwork();
  const peers = new PeerSet(["a:1"], GENESIS, DEFAULT_SYNC_OPTIONS);
  const fetch = new PeerFetch({
    network,
    peers,
    budget: new ByteBudget(DEFAULT_SYNC_OPTIONS),
    options: DEFAULT_SYNC_OPTIONS,
    metrics: undefined,
    signal: new AbortController().signal,
    spawn: (_what, task, onOk, onError) => {
      task().then(onOk, onError);
    },
  });
  return { fetch, calls, peer: peers.get("a:1")! };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const answer = (bytes: number): BlocksResponse => ({ blocks: [], bytes });

test("a FetchBlocks deadline covers the bytes already in flight to the same peer", async () => {
  const { fetch, calls, peer } = setup();
  const MB = 1_000_000;
  for (let i = 0; i < 3; i++)
    fetch.fetchBlocks(
      peer,
      [],
      { first: 1, last: 1 },
      MB,
      () => {},
      (e) => assert.fail(String(e)),
    );
  assert.deepEqual(
    calls.map((c) => c.options.expectedBytes),
    [MB, 2 * MB, 3 * MB],
    "each request's deadline is sized for what is queued ahead of it on the link, plus itself",
  );
  assert.equal(peer.inflightBytes, 3 * MB);
  for (const c of calls) c.resolve(answer(MB));
  await sleep(0);
  assert.equal(peer.inflightBytes, 0, "released as they settle");
  assert.equal(peer.inflight, 0);
});

test("the throughput sample is the peer's rate: a request's own rate times the calls beside it", async () => {
  const { fetch, calls, peer } = setup();
  // Four requests in flight together for ≈200 ms, each bringing 100 kB: the peer delivered
  // 400 kB in 200 ms (2 MB/s), while each request alone saw 0.5 MB/s.
  for (let i = 0; i < 4; i++)
    fetch.fetchBlocks(
      peer,
      [],
      { first: 1, last: 1 },
      100_000,
      () => {},
      (e) => assert.fail(String(e)),
    );
  await sleep(200);
  for (const c of calls) c.resolve(answer(100_000));
  await sleep(0);
  const rate = peer.bytesPerSecond!;
  assert.ok(rate > 1.4e6 && rate < 2.2e6, `the peer's rate ≈ 2 MB/s, got ${(rate / 1e6).toFixed(2)} MB/s`);
});
