/**
 * SubDagFeed (src/store/subscription.ts), the one replay-then-follow primitive: start checks,
 * no silent skips, published units served from memory (bounded), admission around replay steps
 * only, lag bound.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SubscriberLagError, SubscriptionError } from "../../src/core/index.js";
import { SubDagFeed } from "../../src/store/index.js";
import { assertBytes, type TempStore, tempStore, testChain, withTimeout } from "../helpers/sync-harness.js";

const { chain, commits } = testChain();

describe("SubDagFeed", () => {
  let ts: TempStore;

  before(async () => {
    ts = await tempStore(chain);
    await ts.store.apply(commits.slice(0, 30));
  });
  after(async () => {
    await ts.cleanup();
  });

  test("a start below 1 is invalid_argument; below the lowest available, out_of_range", async () => {
    const feed = new SubDagFeed(ts.store);
    await assert.rejects(feed.iterate(0).next(), (e: unknown) => {
      assert.ok(e instanceof SubscriptionError);
      assert.equal(e.code, "invalid_argument");
      return true;
    });
    const pruned = await tempStore(chain);
    try {
      await pruned.store.apply(commits.slice(0, 20));
      await pruned.store.prune(8);
      const f = new SubDagFeed(pruned.store);
      await assert.rejects(f.iterate(7).next(), { code: "out_of_range", message: /commit 7 was pruned/ });
      assert.equal((await f.iterate(8).next()).value?.index, 8);
    } finally {
      await pruned.cleanup();
    }
  });

  test("replay steps are admitted one by one (read-ahead); following live needs no admission", async () => {
    const feed = new SubDagFeed(ts.store, { readAhead: 10 });
    let admitted = 0;
    let released = 0;
    const ac = new AbortController();
    const it = feed.iterate(1, {
      signal: ac.signal,
      admitReplayStep: async () => {
        admitted++;
        return () => {
          released++;
        };
      },
    });
    for (let i = 1; i <= 30; i++) assert.equal((await it.next()).value?.index, i);
    assert.equal(admitted, 3, "30 commits in steps of 10");
    const waiting = it.next();
    await ts.store.apply(commits.slice(30, 32));
    feed.publish(commits.slice(30, 32));
    assert.equal((await withTimeout(waiting, 2_000, "commit 31")).value?.index, 31);
    assert.equal((await it.next()).value?.index, 32);
    assert.equal(admitted, 3, "live delivery took no admission");
    ac.abort();
    assert.equal((await it.next()).done, true);
    assert.equal(released, admitted);
  });

  test("published units are served from memory, at most memoryCommits of them", async () => {
    const feed = new SubDagFeed(ts.store, { memoryCommits: 2, readAhead: 1 });
    // Published with nobody following: nothing is held.
    await ts.store.apply(commits.slice(32, 33));
    feed.publish(commits.slice(32, 33));
    const sources: string[] = [];
    const it = feed.iterate(33, { onSource: (s) => sources.push(s) });
    assert.equal((await it.next()).value?.index, 33);
    const waiting = it.next(); // caught up: follows live
    await ts.store.apply(commits.slice(33, 36));
    feed.publish(commits.slice(33, 36)); // 34, 35, 36: only 35 and 36 are held
    for (const i of [34, 35, 36]) {
      const v = (i === 34 ? await waiting : await it.next()).value;
      assert.equal(v?.index, i);
      assert.equal(v?.blocks.length, commits[i - 1]!.blocks.length);
      for (const [k, b] of commits[i - 1]!.blocks.entries()) assertBytes(v?.blocks[k], b.bytes, `block ${k}`);
    }
    await it.return(undefined);
    assert.deepEqual(sources, ["store", "store", "memory", "memory"]);
  });

  test("a live subscriber more than bufferCommits behind fails with SubscriberLagError (lagged)", async () => {
    const feed = new SubDagFeed(ts.store, { bufferCommits: 3 });
    const it = feed.iterate(37);
    const first = it.next();
    await ts.store.apply(commits.slice(36, 37));
    feed.publish(commits.slice(36, 37));
    assert.equal((await withTimeout(first, 2_000, "commit 37")).value?.index, 37);
    const next = it.next(); // waits live for 38
    await new Promise((r) => setTimeout(r, 20));
    await ts.store.apply(commits.slice(37, 42)); // 38..42: 5 > 3 behind
    feed.publish(commits.slice(37, 42));
    // Woken, it finds itself 5 commits behind: it fails rather than hold them.
    await assert.rejects(next, (e: unknown) => {
      assert.ok(e instanceof SubscriberLagError);
      assert.equal(e.code, "lagged");
      assert.equal(e.resumeFrom, 38);
      return true;
    });
  });
});
