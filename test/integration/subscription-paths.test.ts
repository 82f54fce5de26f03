/**
 * The three subscription paths fail alike and deliver alike, over one store (issue 12):
 * - in-process: SubDagFeed.iterate (what the engine's broadcast and createFullNode use);
 * - the server's SubscribeCommits, read raw (gRPC status codes);
 * - subscribeVerified over that server (the subscriber verifies; typed errors).
 * The store holds commits 11..40 of a 2-epoch chain (1..10 pruned), and commit 25 lacks a block.
 * Pruned start → OUT_OF_RANGE / out_of_range; missing block → NOT_FOUND / not_found after the
 * commits before it; a caught-up subscriber gets the just-applied sub-DAGs from memory.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Client } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { subscribeVerified } from "../../src/client/index.js";
import { SubscriptionError, VerifyError } from "../../src/core/index.js";
import { DevnetChain, type GeneratedCommit } from "../../src/devnet/chain.js";
import type { StateSync } from "../../src/gen/dagsync/v1/sync_pb.js";
import { Store, SubDagFeed } from "../../src/store/index.js";
import {
  type RunningServer,
  removeDir,
  startServer,
  tempDir,
  toUnit,
  typedClients,
} from "../helpers/server.js";
import { checkpointAt } from "../helpers/sync-harness.js";

const chain = new DevnetChain({ epochs: 2, commitsPerEpoch: 30, txsPerBlock: 1, txBytes: 32, seed: 21 });
const commits: GeneratedCommit[] = [...chain.commits()];
const MISSING = 25;
const TIP = 40;
const LOWEST = 11;

let dir: string;
let store: Store;
let feed: SubDagFeed;
let srv: RunningServer;
let sync: Client<typeof StateSync>;

const chainId = chain.genesis.genesis.chainId;
const checkpoint = (index: number) => ({ chainId, ...checkpointAt(chain, commits, index) });

/** Indices delivered until the stream fails (or `until` is reached), and the failure. */
async function drain(it: AsyncIterable<{ index: number }>, until = Number.POSITIVE_INFINITY) {
  const got: number[] = [];
  try {
    for await (const v of it) {
      got.push(v.index);
      if (v.index >= until) return { got, error: undefined };
    }
  } catch (e) {
    return { got, error: e };
  }
  return { got, error: undefined };
}

async function* serverIndices(start: number, signal?: AbortSignal) {
  for await (const m of sync.subscribeCommits(
    { start: BigInt(start) },
    signal === undefined ? {} : { signal },
  ))
    yield { index: Number(m.commit?.index) };
}

async function* verifiedIndices(it: ReturnType<typeof subscribeVerified>) {
  for await (const s of it) yield { index: Number(s.commit?.index) };
}

describe("subscription paths: one set of errors, live sub-DAGs from memory", () => {
  before(async () => {
    dir = await tempDir();
    store = await Store.open(dir, { genesis: chain.genesis.bytes });
    await store.apply(
      commits
        .slice(0, TIP)
        .map((c) => (c.index === MISSING ? { ...toUnit(c), blocks: c.blocks.slice(1) } : c)),
    );
    await store.prune(LOWEST);
    assert.equal(store.watermarks.lowestAvailable, LOWEST);
    feed = new SubDagFeed(store);
    srv = await startServer(store, { feed });
    sync = typedClients(srv.baseUrl).sync;
  });
  after(async () => {
    await srv?.stop();
    await store?.close();
    await removeDir(dir);
  });

  test("a pruned start is OUT_OF_RANGE on every path", async () => {
    const local = await drain(feed.iterate(5));
    assert.deepEqual(local.got, []);
    assert.ok(local.error instanceof SubscriptionError);
    assert.equal(local.error.code, "out_of_range");
    assert.match(local.error.message, /commit 5 was pruned: this node serves from 11/);

    const remote = await drain(serverIndices(5));
    assert.ok(remote.error instanceof ConnectError, String(remote.error));
    assert.equal(remote.error.code, Code.OutOfRange);
    assert.equal(remote.error.rawMessage, local.error.message);

    const verified = await drain(
      verifiedIndices(subscribeVerified(srv.address, 5, { genesis: chain.genesis.bytes })),
    );
    assert.ok(verified.error instanceof SubscriptionError, String(verified.error));
    assert.equal(verified.error.code, "out_of_range");
  });

  test("a missing block is NOT_FOUND on every path, after the commits before it (never skipped)", async () => {
    const expected = [20, 21, 22, 23, 24];
    const local = await drain(feed.iterate(20));
    assert.deepEqual(local.got, expected);
    assert.ok(local.error instanceof SubscriptionError);
    assert.equal(local.error.code, "not_found");
    assert.match(local.error.message, /commit 25: block .* is missing/);

    const remote = await drain(serverIndices(20));
    assert.deepEqual(remote.got, expected);
    assert.ok(remote.error instanceof ConnectError, String(remote.error));
    assert.equal(remote.error.code, Code.NotFound);
    assert.equal(remote.error.rawMessage, local.error.message);

    const verified = await drain(
      verifiedIndices(subscribeVerified(srv.address, 20, { checkpoint: checkpoint(19) })),
    );
    assert.deepEqual(verified.got, expected);
    assert.ok(verified.error instanceof SubscriptionError, String(verified.error));
    assert.equal(verified.error.code, "not_found");
  });

  test("subscribeVerified verifies across an epoch boundary, and refuses a chain that does not link to its checkpoint", async () => {
    const ok = await drain(
      verifiedIndices(subscribeVerified(srv.address, 26, { checkpoint: checkpoint(25) })),
      TIP,
    );
    assert.equal(ok.error, undefined, String(ok.error));
    assert.deepEqual(
      ok.got,
      Array.from({ length: TIP - 25 }, (_, k) => 26 + k),
    );
    const forged = { ...checkpoint(25), digest: new Uint8Array(32).fill(7) };
    const bad = await drain(verifiedIndices(subscribeVerified(srv.address, 26, { checkpoint: forged })));
    assert.deepEqual(bad.got, []);
    assert.ok(bad.error instanceof VerifyError, String(bad.error));
    assert.equal(bad.error.code, "broken_link");
  });

  test("caught-up subscribers on every path get the sub-DAGs just applied from memory, not from the store", async () => {
    const ac = new AbortController();
    const sources: string[] = [];
    const local = drain(
      feed.iterate(TIP + 1, { signal: ac.signal, onSource: (s) => sources.push(s) }),
      TIP + 3,
    );
    const remote = drain(serverIndices(TIP + 1, ac.signal), TIP + 3);
    const verified = drain(
      verifiedIndices(
        subscribeVerified(srv.address, TIP + 1, { checkpoint: checkpoint(TIP), signal: ac.signal }),
      ),
      TIP + 3,
    );
    const deadline = Date.now() + 5_000;
    while (feed.subscriberCount < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(feed.subscriberCount, 3, "all three subscribers caught up and following");

    // From here on, no subscription may read commits from the store.
    let storeReads = 0;
    const original = store.getCommits.bind(store);
    store.getCommits = async (...args: Parameters<Store["getCommits"]>) => {
      storeReads++;
      return original(...args);
    };
    try {
      for (const c of commits.slice(TIP, TIP + 3)) {
        await store.apply([c]);
        feed.publish([c]);
      }
      const results = await Promise.all([local, remote, verified]);
      for (const r of results) {
        assert.equal(r.error, undefined, String(r.error));
        assert.deepEqual(r.got, [TIP + 1, TIP + 2, TIP + 3]);
      }
      assert.deepEqual(sources, ["memory", "memory", "memory"]);
      // subscribeVerified certifies through FetchCommits (the server's read of certifier blocks
      // and commits); the streams themselves read nothing.
      const fetches = storeReads;
      assert.ok(fetches <= 3, `only subscribeVerified's FetchCommits read commits (${fetches})`);
    } finally {
      store.getCommits = original;
      ac.abort();
    }
  });

  test("aborting a subscription ends it quietly on every path", async () => {
    const ac = new AbortController();
    const tip = store.watermarks.highestSynced;
    const runs = [
      drain(feed.iterate(tip + 1, { signal: ac.signal })),
      drain(
        verifiedIndices(
          subscribeVerified(srv.address, tip + 1, { checkpoint: checkpoint(tip), signal: ac.signal }),
        ),
      ),
    ];
    const deadline = Date.now() + 5_000;
    while (feed.subscriberCount < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    ac.abort();
    for (const r of await Promise.all(runs)) assert.deepEqual(r, { got: [], error: undefined });
  });
});
