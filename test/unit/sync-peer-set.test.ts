/**
 * The sync engine's dynamic peer set (issue 13 item 3, DESIGN §9), driven through injected network
 * functions (FakeSyncNetwork over the 3-epoch devnet chain) and a real LevelDB store:
 *
 * - a peer added at runtime is asked its heights at once (not at the next interval) and used;
 * - a peer removed mid-fetch: its calls end, its work is retried elsewhere, the chain is applied
 *   completely and in order, and nobody is banned;
 * - the working set holds at most `maxSyncPeers`, committee first, and only working peers are
 *   asked anything; a committee peer added at runtime takes a bootstrap peer's place;
 * - a peer failing `maxDialFailures` calls in a row leaves the working set for a standby peer and
 *   is retried after a backoff that doubles;
 * - every working peer pruned below our head: `onNeedPeers` is called (rate-limited) and an
 *   untried known peer is rotated in; sync completes;
 * - dials are rate-limited (`maxDialsPerSecond`), counted per window of a fake clock;
 * - PeerSet properties (fast-check): the working set is capped and ranked by source whatever the
 *   joins and leaves; the dial limiter never exceeds its bucket in any window.
 */
import assert from "node:assert/strict";
import { describe, type TestContext, test } from "node:test";
import fc from "fast-check";
import { Registry } from "prom-client";
import type { CommittedSubDagView } from "../../src/sync/broadcast.js";
import { DialLimiter } from "../../src/sync/dial-limiter.js";
import type { SyncEngine, SyncEngineConfig } from "../../src/sync/engine.js";
import { SyncMetrics } from "../../src/sync/metrics.js";
import { DEFAULT_SYNC_OPTIONS, type SyncOptions } from "../../src/sync/options.js";
import { PEER_SOURCES, type PeerEntry, PeerSet, type PeerSource } from "../../src/sync/peers.js";
import type { StallReason } from "../../src/sync/stall.js";
import { type FakePeerBehaviour, FakeSyncNetwork } from "../helpers/sync-fake-network.js";
import {
  assertBytes,
  assertStoreExact,
  committeesHeld,
  makeEngine,
  seededRandom,
  type TempStore,
  tempStore,
  testChain,
  waitFor,
  withTimeout,
} from "../helpers/sync-harness.js";

const { chain, commits } = testChain();
const TIP = commits.length;
const SYNC_TIMEOUT_MS = 20_000;
/** No height round comes from the interval during a test: only "at once" paths ask. */
const NO_ROUNDS = { peerQueryIntervalMs: 600_000 } as const satisfies Partial<SyncOptions>;

interface Setup {
  readonly ts: TempStore;
  readonly network: FakeSyncNetwork;
  readonly engine: SyncEngine;
}

async function setup(
  t: TestContext,
  behaviours: Record<string, FakePeerBehaviour>,
  initial: readonly PeerEntry[],
  options: Partial<SyncOptions> = {},
  extra: Partial<Pick<SyncEngineConfig, "metrics" | "now" | "onNeedPeers">> = {},
  deadlineMs?: number,
): Promise<Setup> {
  const ts = await tempStore(chain);
  const network = new FakeSyncNetwork(
    commits,
    chain.genesis.digest,
    behaviours,
    deadlineMs === undefined ? {} : { deadlineMs },
  );
  const engine = makeEngine(ts.store, network, initial, options, seededRandom(3), extra);
  t.after(async () => {
    await engine.stop();
    await ts.cleanup();
  });
  return { ts, network, engine };
}

function statusOf(engine: SyncEngine, address: string) {
  return engine.peerStatuses().find((p) => p.address === address);
}

function assertNobodyBanned(engine: SyncEngine): void {
  for (const p of engine.peerStatuses()) {
    assert.equal(p.banCount, 0, `${p.address} was banned: ${p.lastError}`);
    assert.equal(p.offChain, false, `${p.address} is off-chain`);
  }
}

/** Collects the in-process stream from commit 1 to the tip. */
function collect(
  t: TestContext,
  engine: SyncEngine,
): { received: CommittedSubDagView[]; done: Promise<void> } {
  const controller = new AbortController();
  t.after(() => controller.abort());
  const received: CommittedSubDagView[] = [];
  const done = (async () => {
    for await (const v of engine.broadcast.iterate(1, controller.signal)) {
      received.push(v);
      if (v.index >= TIP) break;
    }
  })();
  return { received, done };
}

function assertInOrder(received: readonly CommittedSubDagView[]): void {
  assert.deepEqual(
    received.map((v) => v.index),
    Array.from({ length: TIP }, (_, k) => k + 1),
    "every sub-DAG, in order",
  );
  for (const v of received)
    assertBytes(v.commit.digest, commits[v.index - 1]!.commitDigest, `sub-DAG ${v.index}`);
}

const distinctAsked = (network: FakeSyncNetwork) =>
  new Set(network.calls.filter((c) => c.method === "availability").map((c) => c.peer));

describe("sync engine: peers join and leave at runtime", () => {
  test("a peer added at runtime is asked its heights at once and used: an engine with no peers syncs", async (t) => {
    const { ts, network, engine } = await setup(t, { "late:9100": {} }, [], NO_ROUNDS);
    const run = engine.run(true);
    await waitFor(() => engine.progress.phase === "syncing", 2_000, "the engine to start");
    assert.deepEqual(engine.peerStatuses(), []);
    assert.equal(engine.addPeer("late:9100", "exchange"), true);
    assert.equal(engine.addPeer("late:9100", "exchange"), false, "adding it again is no news");
    const s = statusOf(engine, "late:9100");
    assert.equal(s?.source, "exchange");
    assert.equal(s?.working, true);
    await withTimeout(run, SYNC_TIMEOUT_MS, "sync from the peer added at runtime");
    // Its heights were asked at once: the interval (10 minutes) never fired.
    assert.ok(network.callsTo("late:9100", "availability").length >= 1);
    assert.equal(engine.progress.highestSynced, TIP);
    assert.equal(statusOf(engine, "late:9100")?.source, "exchange", "its answers do not change its source");
    await assertStoreExact(ts.store, commits, committeesHeld(commits));
  });

  test("a peer removed mid-fetch: its calls end, its work is retried elsewhere, the chain applies completely and in order, nobody is banned", async (t) => {
    // "leaver" answers heights at once but never answers a fetch (within a 30 s deadline): only
    // its removal can free its work. "stayer" is slow, so that the leaver gets work first.
    const behaviours: Record<string, FakePeerBehaviour> = {
      "leaver:9100": { stall: ["commits", "blocks"] },
      "stayer:9100": { latencyMs: 20 },
    };
    const { ts, network, engine } = await setup(
      t,
      behaviours,
      ["leaver:9100", "stayer:9100"],
      { commitsPerRequest: 10, ...NO_ROUNDS },
      {},
      30_000,
    );
    const { received, done } = collect(t, engine);
    const run = engine.run(true);
    // Once its heights are in (no other round comes), what it holds is fetches.
    await waitFor(
      () =>
        network.callsTo("leaver:9100", "availability").some((c) => c.error === undefined) &&
        statusOf(engine, "leaver:9100")!.inFlight >= 1,
      5_000,
      "the leaver to hold a fetch",
    );
    const held = statusOf(engine, "leaver:9100")!.inFlight;
    assert.ok(held >= 1);
    assert.equal(engine.removePeer("leaver:9100"), true);
    assert.equal(engine.removePeer("leaver:9100"), false, "it is gone already");
    assert.equal(statusOf(engine, "leaver:9100"), undefined);
    await withTimeout(run, SYNC_TIMEOUT_MS, "sync after the leaver left");
    await withTimeout(done, 5_000, "the stream to deliver the last sub-DAG");
    assertInOrder(received);
    // Its fetches ended as cancelled (no deadline passed), and were done by the stayer.
    const leaverFetches = network.calls.filter(
      (c) => c.peer === "leaver:9100" && c.method !== "availability",
    );
    assert.ok(leaverFetches.length >= 1, "the leaver's fetches ended");
    assert.ok(
      leaverFetches.every((c) => c.error === "cancelled"),
      "ended by its removal",
    );
    assertNobodyBanned(engine);
    await assertStoreExact(ts.store, commits, committeesHeld(commits));
  });

  test("setPeers(source, …) replaces what a source names; a peer another source names stays", async (t) => {
    const { engine } = await setup(t, {}, [
      { address: "v1:9100", source: "committee" },
      { address: "v2:9100", source: "committee" },
      "v2:9100",
    ]);
    engine.setPeers("committee", ["v3:9100"]);
    const byAddress = new Map(engine.peerStatuses().map((p) => [p.address, p.source]));
    assert.deepEqual(
      byAddress,
      new Map<string, PeerSource>([
        ["v2:9100", "bootstrap"],
        ["v3:9100", "committee"],
      ]),
    );
  });
});

describe("sync engine: the working set", () => {
  test("at most maxSyncPeers work, committee first then bootstrap then exchange; only they are asked; a committee peer added later takes a bootstrap peer's place", async (t) => {
    const behaviours: Record<string, FakePeerBehaviour> = {};
    const initial: PeerEntry[] = [];
    for (let i = 0; i < 5; i++) initial.push({ address: `x${i}:9100`, source: "exchange" });
    for (let i = 0; i < 4; i++) initial.push(`b${i}:9100`);
    for (let i = 0; i < 3; i++) initial.push({ address: `c${i}:9100`, source: "committee" });
    for (const e of [...initial, "clate:9100"]) behaviours[typeof e === "string" ? e : e.address] = {};
    const metrics = new SyncMetrics(new Registry());
    const { ts, network, engine } = await setup(
      t,
      behaviours,
      initial,
      { maxSyncPeers: 5, maxDialsPerSecond: 100 },
      { metrics },
    );
    const working = () =>
      engine
        .peerStatuses()
        .filter((p) => p.working)
        .map((p) => p.address)
        .sort();
    assert.deepEqual(working(), ["b0:9100", "b1:9100", "c0:9100", "c1:9100", "c2:9100"]);
    assert.equal(engine.peerStatuses().length, 12, "the others are known");
    await withTimeout(engine.run(true), SYNC_TIMEOUT_MS, "sync from the working set");
    const asked = new Set(network.calls.map((c) => c.peer));
    assert.deepEqual([...asked].sort(), working(), "nobody outside the working set was asked anything");
    assert.equal(
      (await metrics.knownPeers.get()).values.find((v) => v.labels.source === "exchange")?.value,
      5,
    );
    assert.equal(
      (await metrics.workingPeers.get()).values.find((v) => v.labels.source === "committee")?.value,
      3,
    );

    engine.addPeer("clate:9100", "committee");
    assert.deepEqual(working(), ["b0:9100", "c0:9100", "c1:9100", "c2:9100", "clate:9100"]);
    await assertStoreExact(ts.store, commits, committeesHeld(commits));
  });

  test("a peer failing maxDialFailures calls in a row leaves the working set for a known peer, and is retried after a backoff that doubles", async (t) => {
    const behaviours: Record<string, FakePeerBehaviour> = {
      "dead:9100": { fail: { kind: "network", methods: ["availability", "commits", "blocks"] } },
      "spare:9100": {},
    };
    const metrics = new SyncMetrics(new Registry());
    const { ts, network, engine } = await setup(
      t,
      behaviours,
      [
        { address: "dead:9100", source: "committee" },
        { address: "spare:9100", source: "exchange" },
      ],
      {
        maxSyncPeers: 1,
        maxDialFailures: 3,
        dialBackoffBaseMs: 400,
        dialBackoffMaxMs: 10_000,
        peerQueryIntervalMs: 30,
        tickIntervalMs: 20,
      },
      { metrics },
    );
    assert.equal(statusOf(engine, "dead:9100")?.working, true, "committee first");
    assert.equal(statusOf(engine, "spare:9100")?.working, false);
    const benches: { at: number; until: number }[] = [];
    let lastUntil = 0;
    const watch = setInterval(() => {
      const until = statusOf(engine, "dead:9100")?.benchedUntilMs ?? 0;
      if (until !== 0 && until !== lastUntil) benches.push({ at: Date.now(), until });
      lastUntil = until;
    }, 5);
    t.after(() => clearInterval(watch));
    const run = engine.run(false);
    await waitFor(() => ts.store.watermarks.highestSynced === TIP, SYNC_TIMEOUT_MS, "sync from the spare");
    await waitFor(() => benches.length >= 2, 10_000, "the dead peer to be retried and benched again");
    const first = benches[0]!;
    const second = benches[1]!;
    // Benched for dialBackoffBaseMs, then (after it came back and failed again) twice that.
    assert.ok(first.until - first.at <= 400 + 50, `first bench ${first.until - first.at} ms`);
    assert.ok(second.until - second.at > 600, `second bench ${second.until - second.at} ms: doubled`);
    // It came back after the first bench: it was asked again after it.
    assert.ok(
      network.callsTo("dead:9100", "availability").some((c) => c.at > first.until - performance.timeOrigin),
    );
    const dead = statusOf(engine, "dead:9100")!;
    assert.equal(dead.banCount, 0, "failing is no misbehaviour");
    assert.ok(
      ((await metrics.dialFailures.get()).values.find((v) => v.labels.reason === "network")?.value ?? 0) >= 6,
    );
    assert.ok(
      ((await metrics.workingSetExits.get()).values.find((v) => v.labels.reason === "dial_failures")?.value ??
        0) >= 2,
    );
    await engine.stop();
    await run;
    await assertStoreExact(ts.store, commits, committeesHeld(commits));
  });

  test("every working peer pruned below our head: onNeedPeers is called (rate-limited) and an untried known peer is rotated in; sync completes", async (t) => {
    const behaviours: Record<string, FakePeerBehaviour> = {
      "pruned1:9100": { lowest: 61 },
      "pruned2:9100": { lowest: 61 },
      "fresh:9100": {},
    };
    const needs: StallReason[] = [];
    const metrics = new SyncMetrics(new Registry());
    const { ts, network, engine } = await setup(
      t,
      behaviours,
      ["pruned1:9100", "pruned2:9100", { address: "fresh:9100", source: "exchange" }],
      { maxSyncPeers: 2, needPeersIntervalMs: 60_000 },
      { metrics, onNeedPeers: (reason) => needs.push(reason) },
    );
    assert.equal(statusOf(engine, "fresh:9100")?.working, false, "standby at first");
    const { received, done } = collect(t, engine);
    await withTimeout(engine.run(true), SYNC_TIMEOUT_MS, "sync after rotating the fresh peer in");
    await withTimeout(done, 5_000, "the stream to deliver the last sub-DAG");
    assertInOrder(received);
    assert.deepEqual(needs, ["pruned"], "asked for peers once (rate-limited), saying why");
    assert.ok(network.callsTo("fresh:9100", "commits").length >= 1, "the fresh peer served");
    assert.equal(statusOf(engine, "fresh:9100")?.working, true);
    const benched = engine.peerStatuses().filter((p) => p.benchedUntilMs > 0);
    assert.equal(benched.length, 1, "one pruned peer made room for it");
    assertNobodyBanned(engine);
    assert.equal(
      (await metrics.workingSetExits.get()).values.find((v) => v.labels.reason === "cannot_serve")?.value,
      1,
    );
    await assertStoreExact(ts.store, commits, committeesHeld(commits));
  });

  test("dials are rate-limited: with a frozen clock only maxDialsPerSecond peers are first contacted, then that many more per second", async (t) => {
    const behaviours: Record<string, FakePeerBehaviour> = {};
    const initial: string[] = [];
    for (let i = 0; i < 20; i++) {
      initial.push(`p${i}:9100`);
      behaviours[`p${i}:9100`] = {};
    }
    let clock = 1_000_000;
    const { engine, network } = await setup(
      t,
      behaviours,
      initial,
      { maxSyncPeers: 20, maxDialsPerSecond: 4, tickIntervalMs: 10, ...NO_ROUNDS },
      { now: () => clock },
    );
    void engine.run(false).catch(() => {});
    const settle = () => new Promise((r) => setTimeout(r, 150));
    await settle();
    assert.equal(distinctAsked(network).size, 4, "the bucket's worth at once");
    clock += 1_000;
    await settle();
    assert.equal(distinctAsked(network).size, 8, "4 more after a second");
    clock += 500;
    await settle();
    assert.equal(distinctAsked(network).size, 10, "2 more after half a second");
    clock += 10_000;
    await settle();
    assert.equal(distinctAsked(network).size, 14, "a long pause saves up no more than the bucket");
  });
});

describe("PeerSet: the working set (properties)", () => {
  const GENESIS = new Uint8Array(32).fill(7);
  const rank = (s: PeerSource) => PEER_SOURCES.indexOf(s);
  const op = fc.oneof(
    fc.record({
      kind: fc.constant("add" as const),
      peer: fc.nat(30),
      source: fc.constantFrom(...PEER_SOURCES),
    }),
    fc.record({
      kind: fc.constant("remove" as const),
      peer: fc.nat(30),
      source: fc.option(fc.constantFrom(...PEER_SOURCES), { nil: undefined }),
    }),
  );

  test("whatever joins and leaves, at most maxSyncPeers work (archives apart, always working), every place is filled when peers are known, and no standby peer outranks a working one", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(op, { maxLength: 60 }), (max, ops) => {
        const set = new PeerSet([], GENESIS, { ...DEFAULT_SYNC_OPTIONS, maxSyncPeers: max });
        for (const o of ops) {
          if (o.kind === "add") set.add(`p${o.peer}:1`, o.source);
          else set.remove(`p${o.peer}:1`, o.source);
          set.rebalance(0);
          const all = set.all();
          // Archives (an operator's --archive) always work and take no place of maxSyncPeers.
          const archives = all.filter((p) => p.source === "archive");
          assert.ok(
            archives.every((p) => p.working),
            "every archive works",
          );
          const counted = all.filter((p) => p.source !== "archive");
          const working = counted.filter((p) => p.working);
          assert.equal(working.length, Math.min(max, counted.length));
          const worstWorking = Math.max(...working.map((p) => rank(p.source)), -1);
          for (const p of counted.filter((q) => !q.working)) assert.ok(rank(p.source) >= worstWorking);
          for (const p of all)
            assert.ok(p.sources.has(p.source) && [...p.sources].every((s) => rank(s) >= rank(p.source)));
        }
      }),
    );
  });

  test("the dial limiter never allows more than the bucket plus the rate in any window", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.integer({ min: 0, max: 400 }), { minLength: 1, maxLength: 200 }),
        (rate, gaps) => {
          const limiter = new DialLimiter(rate);
          const granted: number[] = [];
          let t = 0;
          for (const g of gaps) {
            t += g;
            if (limiter.take(t)) granted.push(t);
          }
          for (let i = 0; i < granted.length; i++) {
            const from = granted[i]!;
            for (const windowMs of [0, 250, 1_000, 5_000]) {
              const n = granted.filter((x) => x >= from && x <= from + windowMs).length;
              assert.ok(
                n <= rate + (rate * windowMs) / 1000 + 1e-9,
                `${n} dials in ${windowMs} ms at ${rate}/s`,
              );
            }
          }
        },
      ),
    );
  });
});
