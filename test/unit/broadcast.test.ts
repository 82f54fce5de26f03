/**
 * SubDagBroadcast (src/sync/broadcast.ts) over a real store: replay from the store then live
 * delivery, in order with blocks in commit order; a live subscriber that falls more than
 * `bufferCommits` behind fails with SubscriberLagError naming where to resume, and others are
 * unaffected.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { GeneratedCommit } from "../../src/devnet/chain.js";
import type { Store } from "../../src/store/index.js";
import { type CommittedSubDagView, SubDagBroadcast, SubscriberLagError } from "../../src/sync/broadcast.js";
import {
  assertBytes,
  type TempStore,
  tempStore,
  testChain,
  waitFor,
  withTimeout,
} from "../helpers/sync-harness.js";

const { chain, commits } = testChain();

/** Applies commits [from, to] (1-based, inclusive) and notifies, as the engine does after apply. */
async function applyRange(store: Store, broadcast: SubDagBroadcast, from: number, to: number): Promise<void> {
  await store.apply(commits.slice(from - 1, to));
  broadcast.notify();
}

function assertSubDag(view: CommittedSubDagView, expected: GeneratedCommit): void {
  assert.equal(view.index, expected.index);
  assert.equal(view.commit.index, expected.index);
  assertBytes(view.commit.bytes, expected.commitBytes, `commit ${expected.index}`);
  assertBytes(view.commit.digest, expected.commitDigest, `commit ${expected.index} digest`);
  assert.equal(view.blocks.length, expected.blocks.length, `commit ${expected.index}: block count`);
  for (const [k, b] of view.blocks.entries()) {
    assertBytes(b, expected.blocks[k]!.bytes, `commit ${expected.index} block ${k}`);
  }
}

/** Consumes `it` in the background until `until` is received (or it fails), recording everything. */
function consume(it: AsyncGenerator<CommittedSubDagView>, until: number) {
  const received: CommittedSubDagView[] = [];
  const done = (async () => {
    for await (const v of it) {
      received.push(v);
      if (v.index >= until) break;
    }
  })();
  return { received, done };
}

describe("SubDagBroadcast", () => {
  let ts: TempStore;
  let store: Store;

  before(async () => {
    ts = await tempStore(chain);
    store = ts.store;
  });
  after(async () => {
    await ts.cleanup();
  });

  // The tests share one store, applied in order: 1..20, then 21..30, 31..45, 46..70, 71..120.

  test("replays from the store, then delivers live, in order, with blocks in commit order", async () => {
    const broadcast = new SubDagBroadcast(store, 64);
    await applyRange(store, broadcast, 1, 20);
    const controller = new AbortController();
    const it = broadcast.iterate(1, controller.signal);
    const { received, done } = consume(it, 30);
    await waitFor(() => received.length === 20, 5_000, "the replay of 1..20");
    assert.equal(broadcast.subscriberCount, 1);
    await applyRange(store, broadcast, 21, 25);
    await applyRange(store, broadcast, 26, 30);
    await withTimeout(done, 5_000, "live delivery of 21..30");
    assert.deepEqual(
      received.map((v) => v.index),
      Array.from({ length: 30 }, (_, k) => k + 1),
    );
    for (const [k, v] of received.entries()) assertSubDag(v, commits[k]!);
    assert.equal(broadcast.subscriberCount, 0, "leaving the loop unsubscribes");
    controller.abort();
  });

  test("a subscriber may start anywhere, and an abort ends its iteration", async () => {
    const broadcast = new SubDagBroadcast(store, 64);
    const controller = new AbortController();
    const it = broadcast.iterate(28, controller.signal);
    assert.equal((await it.next()).value?.index, 28);
    assert.equal((await it.next()).value?.index, 29);
    assert.equal((await it.next()).value?.index, 30);
    const waiting = it.next(); // caught up: waits for the next apply
    await new Promise((r) => setTimeout(r, 20));
    controller.abort();
    const end = await withTimeout(waiting, 2_000, "the iterator to end on abort");
    assert.equal(end.done, true);
    assert.equal(broadcast.subscriberCount, 0);
  });

  test("a live subscriber more than bufferCommits behind gets SubscriberLagError; others are unaffected", async () => {
    const buffer = 5;
    const broadcast = new SubDagBroadcast(store, buffer);
    const controller = new AbortController();
    // Both caught up at 30 and waiting live.
    const slow = broadcast.iterate(31, controller.signal);
    const slowFirst = slow.next();
    const fast = consume(broadcast.iterate(31, controller.signal), 70);
    await waitFor(() => broadcast.subscriberCount === 2, 2_000, "both subscribers");

    // The slow one takes commit 31, then stops consuming while 32..45 (14 > 5 commits) are applied,
    // in applies of at most `buffer` commits that the fast one keeps up with.
    await applyRange(store, broadcast, 31, 31);
    const first = await withTimeout(slowFirst, 2_000, "commit 31");
    assert.equal(first.value?.index, 31);
    for (const [from, to] of [
      [32, 36],
      [37, 41],
      [42, 45],
    ] as const) {
      await waitFor(
        () => fast.received.at(-1)?.index === from - 1,
        5_000,
        `the fast subscriber at ${from - 1}`,
      );
      await applyRange(store, broadcast, from, to);
    }
    await waitFor(() => fast.received.length === 15, 5_000, "the fast subscriber at 45");

    await assert.rejects(slow.next(), (e: unknown) => {
      assert.ok(e instanceof SubscriberLagError);
      assert.equal(e.resumeFrom, 32, "the next index it should have received");
      assert.equal(e.code, "lagged");
      assert.match(e.message, /resubscribe from 32/);
      return true;
    });
    assert.equal((await slow.next()).done, true, "a failed iterator is finished");

    // The fast subscriber goes on unaffected; resuming from resumeFrom replays what was missed.
    for (let from = 46; from <= 70; from += buffer) {
      await waitFor(
        () => fast.received.at(-1)?.index === from - 1,
        5_000,
        `the fast subscriber at ${from - 1}`,
      );
      await applyRange(store, broadcast, from, from + buffer - 1);
    }
    await withTimeout(fast.done, 5_000, "the fast subscriber up to 70");
    assert.deepEqual(
      fast.received.map((v) => v.index),
      Array.from({ length: 40 }, (_, k) => k + 31),
    );
    for (const v of fast.received) assertSubDag(v, commits[v.index - 1]!);
    const resumed = consume(broadcast.iterate(32, controller.signal), 70);
    await withTimeout(resumed.done, 5_000, "the resumed subscriber");
    assert.deepEqual(
      resumed.received.map((v) => v.index),
      Array.from({ length: 39 }, (_, k) => k + 32),
    );
    controller.abort();
  });

  test("exactly bufferCommits behind is tolerated; a replaying subscriber is never lagged", async () => {
    const buffer = 10;
    const broadcast = new SubDagBroadcast(store, buffer);
    const controller = new AbortController();
    // Live at 70: falls exactly `buffer` behind (71..80), and must still get everything.
    const edge = broadcast.iterate(71, controller.signal);
    const edgeFirst = edge.next();
    await waitFor(() => broadcast.subscriberCount === 1, 2_000, "the subscriber");
    await applyRange(store, broadcast, 71, 80);
    const received = [(await withTimeout(edgeFirst, 2_000, "commit 71")).value!];
    for (let i = 72; i <= 80; i++) received.push((await edge.next()).value!);
    assert.deepEqual(
      received.map((v) => v.index),
      Array.from({ length: 10 }, (_, k) => k + 71),
    );
    await edge.return(undefined);

    // A subscriber replaying from 1 reads the store at its own pace: 80 commits behind, not lagged,
    // even while more are applied under it.
    const replay = broadcast.iterate(1, controller.signal);
    const got: number[] = [];
    for (let i = 0; i < 5; i++) got.push((await replay.next()).value!.index);
    await applyRange(store, broadcast, 81, 120);
    for (let i = 5; i < 120; i++) got.push((await replay.next()).value!.index);
    assert.deepEqual(
      got,
      Array.from({ length: 120 }, (_, k) => k + 1),
    );
    // Caught up now: from here on it is live and bounded.
    const waiting = replay.next();
    controller.abort();
    assert.equal((await withTimeout(waiting, 2_000, "the end on abort")).done, true);
  });
});
