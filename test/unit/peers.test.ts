/**
 * PeerSet (src/sync/peers.ts): heights, off-chain peers, the balancer's choices (range, throughput,
 * exploration, failing peers last, bans) and the backoff schedule, with an injected `random` and
 * explicit clock values.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DEFAULT_SYNC_OPTIONS, type SyncOptions } from "../../src/sync/options.js";
import { PeerSet, type PeerState } from "../../src/sync/peers.js";

const GENESIS = new Uint8Array(32).fill(7);
const OTHER_GENESIS = new Uint8Array(32).fill(8);
const OPTIONS: SyncOptions = {
  ...DEFAULT_SYNC_OPTIONS,
  maxRequestsPerPeer: 4,
  banDurationMs: 10_000,
  backoffBaseMs: 100,
  backoffMaxMs: 5_000,
  explorationRate: 0.2,
};
const NOW = 1_000_000;

/** A random source that returns the given values in turn, then `fallback`. */
/** A small deterministic PRNG (mulberry32) in [0, 1). */
function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function sequence(values: number[], fallback = 0.99): () => number {
  let i = 0;
  return () => (i < values.length ? values[i++]! : fallback);
}

function peerSet(addresses: string[], random: () => number = () => 0.99, options = OPTIONS): PeerSet {
  return new PeerSet(addresses, GENESIS, options, random);
}

function report(highest: number, lowest = 1, genesisDigest = GENESIS) {
  return { highest, lowest, genesisDigest };
}

/** Gives the peer a measured throughput (bytes per second), as a completed fetch would. */
function measure(set: PeerSet, p: PeerState, bytesPerSecond: number): void {
  set.recordSuccess(p, 1_000_000, 1_000_000_000 / bytesPerSecond);
  assert.ok(Math.abs(p.bytesPerSecond! - bytesPerSecond) / bytesPerSecond < 1e-9);
}

function address(p: PeerState | undefined): string | undefined {
  return p?.address;
}

describe("PeerSet heights", () => {
  test("a peer is unusable until its heights are known", () => {
    const set = peerSet(["a:1"]);
    const a = set.get("a:1")!;
    assert.equal(a.known, false);
    assert.equal(set.isUsable(a, NOW), false);
    assert.equal(set.pick(1, 1, NOW), undefined);
    assert.equal(set.target(NOW), 0);
    assert.equal(set.updateHeights("a:1", report(50)), true);
    assert.equal(set.isUsable(a, NOW), true);
    assert.equal(set.target(NOW), 50);
    assert.equal(address(set.pick(1, 1, NOW)), "a:1");
  });

  test("a peer with another genesis is off-chain: never picked, excluded from target()", () => {
    const set = peerSet(["good:1", "other:1"]);
    set.updateHeights("good:1", report(10));
    assert.equal(set.updateHeights("other:1", report(1_000, 1, OTHER_GENESIS)), false);
    const other = set.get("other:1")!;
    assert.equal(other.offChain, true);
    assert.equal(other.known, true);
    assert.match(other.lastError, /genesis/);
    assert.equal(set.isUsable(other, NOW), false);
    assert.equal(set.target(NOW), 10, "the off-chain peer's height does not count");
    // Even for indices only it claims, and for many draws of the balancer.
    assert.equal(set.pick(500, 500, NOW), undefined);
    for (let i = 0; i < 50; i++) assert.equal(address(set.pick(1, 1, NOW)), "good:1");
    // Off-chain is for good: a later report with our genesis or a hint does not bring it back.
    set.hint("other:1", 2_000);
    assert.notEqual(other.highest, 2_000);
    set.updateHeights("other:1", report(20));
    assert.equal(other.offChain, true);
    assert.equal(set.isUsable(other, NOW), false);
    assert.equal(set.target(NOW), 10);
  });

  test("target() is the highest height among usable peers", () => {
    const set = peerSet(["a:1", "b:1", "c:1"]);
    set.updateHeights("a:1", report(10));
    set.updateHeights("b:1", report(30));
    set.updateHeights("c:1", report(20));
    assert.equal(set.target(NOW), 30);
    set.ban(set.get("b:1")!, "test", NOW);
    assert.equal(set.target(NOW), 20, "a banned peer's height does not count");
    assert.equal(set.target(NOW + OPTIONS.banDurationMs), 30, "nor until its ban ends");
  });

  test("hint() raises a peer's height, never lowers it, and ignores unknown peers", () => {
    const set = peerSet(["a:1"]);
    set.updateHeights("a:1", report(40, 5));
    const a = set.get("a:1")!;
    set.hint("a:1", 60);
    assert.equal(a.highest, 60);
    set.hint("a:1", 30);
    assert.equal(a.highest, 60);
    assert.equal(a.lowest, 5);
    set.hint("stranger:1", 100);
    assert.equal(set.get("stranger:1"), undefined);
    assert.equal(set.all().length, 1);
    // A height report is authoritative (it may lower the height again).
    set.updateHeights("a:1", report(45, 5));
    assert.equal(a.highest, 45);
  });

  test("add() is idempotent and all() lists every peer", () => {
    const set = peerSet(["a:1", "b:1"]);
    const a = set.get("a:1")!;
    assert.equal(set.add("a:1"), a);
    set.add("c:1");
    assert.deepEqual(
      set.all().map((p) => p.address),
      ["a:1", "b:1", "c:1"],
    );
  });
});

describe("PeerSet.pick", () => {
  test("only returns peers with lowest ≤ index ≤ highest", () => {
    const set = peerSet(["low:1", "mid:1", "high:1"], Math.random);
    set.updateHeights("low:1", report(100, 1));
    set.updateHeights("mid:1", report(200, 50));
    set.updateHeights("high:1", report(300, 150));
    const allowed = (index: number) =>
      new Set(
        set
          .all()
          .filter((p) => p.lowest <= index && index <= p.highest)
          .map((p) => p.address),
      );
    for (const index of [1, 49, 50, 100, 101, 149, 150, 200, 201, 300]) {
      const ok = allowed(index);
      for (let i = 0; i < 30; i++) {
        const p = set.pick(index, index, NOW);
        assert.ok(p !== undefined && ok.has(p.address), `index ${index}: picked ${p?.address}`);
      }
    }
    assert.equal(set.pick(301, 301, NOW), undefined, "nobody holds 301");
    assert.equal(set.pick(0, 0, NOW), undefined, "nobody serves below its lowest");
    // A range needs one peer holding all of it.
    assert.equal(set.pick(120, 250, NOW), undefined, "no single peer holds 120..250");
    assert.equal(address(set.pick(160, 250, NOW)), "high:1");
    assert.equal(address(set.pick(60, 180, NOW)), "mid:1");
  });

  test("prefers the higher measured throughput (per request in flight)", () => {
    const set = peerSet(["slow:1", "fast:1", "mid:1"], () => 0.99);
    for (const p of set.all()) set.updateHeights(p.address, report(100));
    measure(set, set.get("slow:1")!, 1_000);
    measure(set, set.get("fast:1")!, 100_000);
    measure(set, set.get("mid:1")!, 10_000);
    for (let i = 0; i < 10; i++) assert.equal(address(set.pick(1, 10, NOW)), "fast:1");
    // Requests in flight divide the score: 100,000 / (1 + 3) > 10,000, the fast peer still wins...
    set.get("fast:1")!.inflight = 3;
    assert.equal(address(set.pick(1, 10, NOW)), "fast:1");
    // ...while a peer at maxRequestsPerPeer is not picked at all: an idle peer gets the work if
    // one more request there can expect at least 1/busyPeerPreference of what the busy one gives
    // (100,000 / 5 = 20,000 against mid's 10,000: wait for the fast one)...
    set.get("fast:1")!.inflight = OPTIONS.maxRequestsPerPeer;
    assert.equal(set.pick(1, 10, NOW), undefined, "20,000 > 1.5 × 10,000: the work waits");
    set.get("mid:1")!.bytesPerSecond = 15_000;
    assert.equal(address(set.pick(1, 10, NOW)), "mid:1", "20,000 < 1.5 × 15,000: the idle peer helps");
    // ...and a busy peer in a failure streak is never waited for.
    set.get("mid:1")!.bytesPerSecond = 2_000; // still above slow's 1,000
    set.recordFailure(set.get("fast:1")!, "deadline", NOW);
    set.get("fast:1")!.retryAt = NOW;
    assert.equal(address(set.pick(1, 10, NOW)), "mid:1");
    set.get("fast:1")!.consecutiveFailures = 0;
    // ...and with a higher cap, enough requests in flight make a slower idle peer the better choice.
    const wide = peerSet(["a:1", "b:1"], () => 0.99, { ...OPTIONS, maxRequestsPerPeer: 100 });
    for (const p of wide.all()) wide.updateHeights(p.address, report(100));
    measure(wide, wide.get("a:1")!, 10_000);
    measure(wide, wide.get("b:1")!, 1_000);
    wide.get("a:1")!.inflight = 10;
    assert.equal(address(wide.pick(1, 1, NOW)), "b:1", "10,000 / 11 < 1,000 / 1");
    wide.get("a:1")!.inflight = 8;
    assert.equal(address(wide.pick(1, 1, NOW)), "a:1", "10,000 / 9 > 1,000 / 1");
  });

  test("explores an unmeasured peer when random < explorationRate, else takes the best measured", () => {
    let next = 0.5;
    const set = peerSet(["known:1", "new1:1", "new2:1"], () => next);
    for (const p of set.all()) set.updateHeights(p.address, report(100));
    measure(set, set.get("known:1")!, 50_000);

    next = 0.5; // ≥ 0.2: exploit
    assert.equal(address(set.pick(1, 1, NOW)), "known:1");
    next = OPTIONS.explorationRate; // not < rate: exploit
    assert.equal(address(set.pick(1, 1, NOW)), "known:1");

    // random < rate: explore; the second draw chooses among the unmeasured peers.
    const explore = peerSet(["known:1", "new1:1", "new2:1"], sequence([0.1, 0.0, 0.19, 0.75]));
    for (const p of explore.all()) explore.updateHeights(p.address, report(100));
    measure(explore, explore.get("known:1")!, 50_000);
    assert.equal(address(explore.pick(1, 1, NOW)), "new1:1");
    assert.equal(address(explore.pick(1, 1, NOW)), "new2:1");
    // Exploration stays within the peers that can serve the range.
    const onlyKnown = peerSet(["known:1", "new1:1"], () => 0);
    onlyKnown.updateHeights("known:1", report(100));
    onlyKnown.updateHeights("new1:1", report(5));
    measure(onlyKnown, onlyKnown.get("known:1")!, 50_000);
    assert.equal(address(onlyKnown.pick(10, 10, NOW)), "known:1");
    assert.equal(address(onlyKnown.pick(5, 5, NOW)), "new1:1", "random 0 < rate: explores");
  });

  test("with no peer measured yet, it spreads over all of them", () => {
    const set = peerSet(["a:1", "b:1", "c:1"], sequence([0.0, 0.34, 0.7]));
    for (const p of set.all()) set.updateHeights(p.address, report(100));
    assert.deepEqual([set.pick(1, 1, NOW), set.pick(1, 1, NOW), set.pick(1, 1, NOW)].map(address), [
      "a:1",
      "b:1",
      "c:1",
    ]);
  });

  test("failing peers (consecutiveFailures > 0) only when no healthy peer can serve", () => {
    const set = peerSet(["failing:1", "healthy:1"], () => 0.99);
    set.updateHeights("failing:1", report(200));
    set.updateHeights("healthy:1", report(100));
    const failing = set.get("failing:1")!;
    // The failing peer is faster, but failing.
    measure(set, failing, 1_000_000);
    measure(set, set.get("healthy:1")!, 1_000);
    set.recordFailure(failing, "network: reset", NOW);
    assert.equal(failing.consecutiveFailures, 1);
    const later = failing.retryAt + 1;
    assert.equal(address(set.pick(50, 50, later)), "healthy:1", "a healthy peer can serve: it is preferred");
    assert.equal(address(set.pick(150, 150, later)), "failing:1", "only the failing peer holds 150");
    assert.equal(set.pick(150, 150, failing.retryAt - 1), undefined, "not before its retry time");
    // The healthy peer at its request cap: it cannot serve, so the failing one is the last resort.
    set.get("healthy:1")!.inflight = OPTIONS.maxRequestsPerPeer;
    assert.equal(address(set.pick(50, 50, later)), "failing:1");
    set.get("healthy:1")!.inflight = 0;
    // A success clears the failure: it is healthy (and the fastest) again.
    set.recordSuccess(failing, 100_000, 100);
    assert.equal(failing.consecutiveFailures, 0);
    assert.equal(failing.retryAt, 0);
    assert.equal(address(set.pick(50, 50, NOW)), "failing:1");
  });

  test("a banned peer is not usable until bannedUntil passes", () => {
    const set = peerSet(["bad:1", "good:1"], () => 0.99);
    set.updateHeights("bad:1", report(200));
    set.updateHeights("good:1", report(100));
    const bad = set.get("bad:1")!;
    measure(set, bad, 1_000_000);
    measure(set, set.get("good:1")!, 1_000);
    set.ban(bad, "digest_mismatch", NOW);
    assert.equal(bad.bannedUntil, NOW + OPTIONS.banDurationMs);
    assert.equal(bad.banCount, 1);
    assert.equal(bad.lastError, "digest_mismatch");
    for (const t of [NOW, NOW + 1, NOW + OPTIONS.banDurationMs - 1]) {
      assert.equal(set.isUsable(bad, t), false);
      assert.equal(address(set.pick(50, 50, t)), "good:1");
      assert.equal(set.pick(150, 150, t), undefined, "even when only it could serve");
    }
    const after = NOW + OPTIONS.banDurationMs;
    assert.equal(set.isUsable(bad, after), true);
    assert.equal(address(set.pick(150, 150, after)), "bad:1");
    assert.equal(address(set.pick(50, 50, after)), "bad:1", "its throughput counts again");
    set.ban(bad, "again", after);
    assert.equal(bad.banCount, 2);
    assert.equal(bad.bannedUntil, after + OPTIONS.banDurationMs);
  });

  test("exclude skips the given peers", () => {
    const set = peerSet(["a:1", "b:1"], () => 0.99);
    for (const p of set.all()) set.updateHeights(p.address, report(10));
    measure(set, set.get("a:1")!, 10_000);
    measure(set, set.get("b:1")!, 1_000);
    assert.equal(address(set.pick(1, 1, NOW)), "a:1");
    assert.equal(address(set.pick(1, 1, NOW, new Set(["a:1"]))), "b:1");
    assert.equal(set.pick(1, 1, NOW, new Set(["a:1", "b:1"])), undefined);
  });
});

describe("PeerSet backoff", () => {
  test("recordFailure backs off exponentially, capped at backoffMaxMs", () => {
    // random → 1: the full exponential step.
    const set = peerSet(["a:1"], () => 1 - Number.EPSILON);
    const a = set.get("a:1")!;
    const delays: number[] = [];
    for (let n = 1; n <= 10; n++) {
      set.recordFailure(a, `failure ${n}`, NOW);
      delays.push(a.retryAt - NOW);
      assert.equal(a.consecutiveFailures, n);
      assert.equal(a.lastError, `failure ${n}`);
    }
    const expected = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000];
    for (const [k, d] of delays.entries())
      assert.ok(Math.abs(d - expected[k]!) < 1e-6, `failure ${k + 1}: ${d}`);
    for (let k = 1; k < 6; k++) assert.ok(delays[k]! > delays[k - 1]!, "retryAt grows");
  });

  test("jitter keeps each delay within [0.5, 1] of its exponential step", () => {
    const random = seededRandom(3);
    const set = peerSet(["a:1"], random);
    const a = set.get("a:1")!;
    let sawLow = false;
    let sawHigh = false;
    for (let round = 0; round < 20; round++) {
      a.consecutiveFailures = 0;
      for (let n = 1; n <= 9; n++) {
        set.recordFailure(a, "x", NOW);
        const step = Math.min(OPTIONS.backoffMaxMs, OPTIONS.backoffBaseMs * 2 ** (n - 1));
        const delay = a.retryAt - NOW;
        assert.ok(
          delay >= 0.5 * step && delay <= step,
          `failure ${n}: ${delay} not in [${step / 2}, ${step}]`,
        );
        if (delay < 0.6 * step) sawLow = true;
        if (delay > 0.9 * step) sawHigh = true;
      }
    }
    assert.ok(sawLow && sawHigh, "the jitter spreads over the interval");
    // The bounds themselves, with random at its extremes.
    const low = peerSet(["a:1"], () => 0);
    const b = low.get("a:1")!;
    low.recordFailure(b, "x", NOW);
    assert.equal(b.retryAt - NOW, 50);
    low.recordFailure(b, "x", NOW);
    assert.equal(b.retryAt - NOW, 100);
  });

  test("a retryAfterMs hint replaces the computed delay", () => {
    const set = peerSet(["a:1"], () => 0.5);
    const a = set.get("a:1")!;
    set.updateHeights("a:1", report(10));
    set.recordFailure(a, "rate limited", NOW, 1_234);
    assert.equal(a.retryAt, NOW + 1_234);
    assert.equal(a.consecutiveFailures, 1);
    assert.equal(set.pick(1, 1, NOW + 1_233), undefined);
    assert.equal(address(set.pick(1, 1, NOW + 1_234)), "a:1");
    // A hint above the cap is honoured too: the peer knows its own limits.
    set.recordFailure(a, "rate limited", NOW, 60_000);
    assert.equal(a.retryAt, NOW + 60_000);
  });
});
