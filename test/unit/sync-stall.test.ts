/**
 * A node never waits silently (DESIGN §4 item 7), and its wake-ups are bounded (issue 10 item 4):
 * - when no source can serve the next commit it reports "stalled" with the reason (status, one log
 *   line per reason, metric), keeps retrying, and under run(untilSynced) gives up after maxStallMs;
 * - unreachable, off-chain, pruned or busy peers are never banned for it;
 * - PushCommit hints coalesce into at most one height round in flight and one queued, and height
 *   queries count against the per-peer request cap;
 * - a handler that throws stops the engine with SyncError("internal"), never an unhandled rejection.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, type TestContext, test } from "node:test";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import pino from "pino";
import { Registry } from "prom-client";
import { type CommitsResponse, PeerError } from "../../src/client/index.js";
import { NativeVerifier } from "../../src/crypto/index.js";
import { CommitSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import { SyncEngine } from "../../src/sync/engine.js";
import { SyncError } from "../../src/sync/errors.js";
import { SyncMetrics } from "../../src/sync/metrics.js";
import type { FetchOptions, SyncNetwork } from "../../src/sync/network.js";
import type { SyncOptions } from "../../src/sync/options.js";
import { type FakePeerBehaviour, FakeSyncNetwork } from "../helpers/sync-fake-network.js";
import {
  assertStoreExact,
  checkpointAt,
  committeesHeld,
  SMALL_OPTIONS,
  tempStore,
  testChain,
  waitFor,
  withTimeout,
} from "../helpers/sync-harness.js";

const { chain, commits } = testChain();
const FAST: Partial<SyncOptions> = { stallGraceMs: 100, tickIntervalMs: 20, maxStallMs: 60_000 };

interface LogLine {
  level: number;
  msg: string;
  reason?: string;
}

/** An engine with a capturing logger and metrics, over the fake network of `peers`. */
async function setup(
  t: TestContext,
  peers: Record<string, FakePeerBehaviour>,
  options: Partial<SyncOptions> = {},
  wrap?: (n: FakeSyncNetwork) => SyncNetwork,
) {
  const ts = await tempStore(chain);
  const network = new FakeSyncNetwork(commits, chain.genesis.digest, peers);
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n")) if (l.trim() !== "") lines.push(JSON.parse(l) as LogLine);
      done();
    },
  });
  const registry = new Registry();
  const metrics = new SyncMetrics(registry);
  const engine = new SyncEngine({
    store: ts.store,
    network: wrap?.(network) ?? network,
    peers: Object.keys(peers),
    verifier: new NativeVerifier(),
    log: pino({ level: "debug" }, sink),
    options: { ...SMALL_OPTIONS, ...FAST, ...options },
    metrics,
  });
  t.after(async () => {
    await engine.stop();
    await ts.cleanup();
  });
  const stalledGauge = async (reason: string) =>
    (await registry.getSingleMetric("dagsync_sync_stalled")!.get()).values.find(
      (v) => v.labels.reason === reason,
    )?.value;
  const warnings = (re: RegExp) => lines.filter((l) => l.level === 40 && re.test(l.msg));
  return { ts, network, engine, lines, warnings, stalledGauge };
}

function assertNobodyBanned(engine: SyncEngine): void {
  for (const p of engine.peerStatuses()) assert.equal(p.banCount, 0, `${p.address} banned: ${p.lastError}`);
}

describe("sync engine: a node never waits silently", () => {
  const cases: { name: string; peers: Record<string, FakePeerBehaviour>; reason: string; detail: RegExp }[] =
    [
      {
        name: "every peer unreachable",
        peers: {
          "a:9100": { fail: { kind: "network", methods: ["availability", "commits", "blocks"] } },
          "b:9100": { fail: { kind: "network", methods: ["availability", "commits", "blocks"] } },
        },
        reason: "unreachable",
        detail: /no peer can serve commit 1 \(unreachable: a:9100, b:9100\)/,
      },
      {
        name: "every peer of another chain",
        peers: { "a:9100": { genesisDigest: new Uint8Array(32).fill(7) } },
        reason: "off_chain",
        detail: /off-chain: a:9100/,
      },
      {
        name: "every peer pruned above our head",
        peers: { "a:9100": { lowest: 50 }, "b:9100": { lowest: 90 } },
        reason: "pruned",
        detail: /no peer can serve commit 1 \(pruned: a:9100, b:9100\)/,
      },
      {
        name: "the only peer busy (rate-limited with a retry hint)",
        peers: {
          "a:9100": { fail: { kind: "rate_limited", methods: ["commits"], retryAfterMs: 400 } },
        },
        reason: "busy",
        detail: /busy: a:9100/,
      },
    ];
  for (const c of cases)
    test(`${c.name}: "stalled" (${c.reason}) within the grace, one warning, the metric, no ban, and still retrying`, async (t) => {
      const { engine, network, warnings, stalledGauge } = await setup(t, c.peers);
      const running = engine.run(false);
      await waitFor(() => engine.progress.phase === "stalled", 5_000, "the stalled phase");
      const stall = engine.progress.stall;
      assert.equal(stall?.reason, c.reason);
      assert.match(stall!.detail, c.detail);
      assert.equal(await stalledGauge(c.reason), 1);
      for (const other of ["unreachable", "off_chain", "pruned", "busy", "banned", "no_peers", "behind"])
        if (other !== c.reason) assert.equal(await stalledGauge(other), 0, `gauge for ${other}`);
      const callsAtStall = network.calls.length;
      await new Promise((r) => setTimeout(r, 600)); // dozens of ticks
      assert.equal(warnings(/sync stalled/).length, 1, "one warning line, not one per tick");
      if (c.reason !== "off_chain")
        assert.ok(network.calls.length > callsAtStall, "it keeps asking (with backoff)");
      assertNobodyBanned(engine);
      await engine.stop();
      await running;
    });

  test("run(untilSynced) gives up after maxStallMs with SyncError('stalled') naming the reason", async (t) => {
    const { engine } = await setup(
      t,
      { "a:9100": { fail: { kind: "network", methods: ["availability"] } } },
      { maxStallMs: 300 },
    );
    const started = performance.now();
    await assert.rejects(withTimeout(engine.run(true), 5_000, "run"), (e: unknown) => {
      assert.ok(e instanceof SyncError);
      assert.equal(e.code, "stalled");
      assert.match(e.message, /without a source \(unreachable\).*no peer can serve commit 1/);
      return true;
    });
    const elapsed = performance.now() - started;
    // maxStallMs counts from when no source could serve any more (the grace is part of it).
    assert.ok(elapsed >= 300 - 20, `not before maxStallMs (${Math.round(elapsed)} ms)`);
  });

  test("a stall that ends: the node resumes, says so once, the gauge drops, and the store is exact", async (t) => {
    const { ts, engine, network, lines, stalledGauge } = await setup(t, {
      "a:9100": { fail: { kind: "network", methods: ["availability", "commits", "blocks"] } },
    });
    const running = engine.run(false);
    await waitFor(() => engine.progress.phase === "stalled", 5_000, "stalled");
    network.update("a:9100", { fail: { kind: "network", methods: [] } });
    await waitFor(
      () => ts.store.watermarks.highestSynced === commits.length,
      20_000,
      "the sync after the stall",
    );
    await waitFor(() => engine.progress.phase === "synced", 5_000, "synced");
    assert.equal(engine.progress.stall, undefined);
    assert.equal(await stalledGauge("unreachable"), 0);
    assert.equal(lines.filter((l) => /sync resumed/.test(l.msg)).length, 1);
    assertNobodyBanned(engine);
    await engine.stop();
    await running;
    await assertStoreExact(ts.store, commits, committeesHeld(commits));
  });

  test("synced with every peer level with us is not a stall", async (t) => {
    const { engine } = await setup(t, { "a:9100": {}, "b:9100": {} });
    await withTimeout(engine.run(true), 20_000, "sync");
    const running = engine.run(false);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(engine.progress.phase, "synced");
    assert.equal(engine.progress.stall, undefined);
    await engine.stop();
    await running;
  });
});

describe("sync engine: bounded wake-ups", () => {
  test("a flood of PushCommit hints costs at most one height round in flight and one queued", async (t) => {
    const peers = { "a:9100": { latencyMs: 30 }, "b:9100": { latencyMs: 30 } };
    const { engine, network } = await setup(t, peers, { peerQueryIntervalMs: 60_000 });
    await withTimeout(engine.run(true), 20_000, "sync");
    const running = engine.run(false);
    await new Promise((r) => setTimeout(r, 100)); // run()'s own round
    const before = network.calls.filter((c) => c.method === "availability").length;
    for (let i = 0; i < 1000; i++) engine.onPushCommit("10.0.0.1", commits.length + i);
    await new Promise((r) => setTimeout(r, 300));
    const rounds = (network.calls.filter((c) => c.method === "availability").length - before) / 2;
    assert.ok(
      rounds >= 1 && rounds <= 2,
      `1000 hints made ${rounds} height rounds (at most 2: one in flight, one queued)`,
    );
    await engine.stop();
    await running;
  });

  test("height queries count against maxRequestsPerPeer: a peer never has more calls in flight", async (t) => {
    const peers = { "a:9100": { latencyMs: 3 }, "b:9100": { latencyMs: 3 } };
    const { ts, engine, network } = await setup(t, peers, {
      maxRequestsPerPeer: 2,
      peerQueryIntervalMs: 5,
      commitsPerRequest: 5,
    });
    const running = engine.run(false);
    // Hints on top of a 5 ms interval: height rounds keep wanting slots during the whole sync.
    const hints = setInterval(() => engine.onPushCommit("10.0.0.1", 1), 1);
    try {
      await waitFor(() => ts.store.watermarks.highestSynced === commits.length, 30_000, "sync");
    } finally {
      clearInterval(hints);
    }
    for (const [peer, max] of network.maxInflight) assert.ok(max <= 2, `${peer} had ${max} calls in flight`);
    assert.ok(
      network.calls.filter((c) => c.method === "availability").length > 10,
      "heights were asked throughout",
    );
    await engine.stop();
    await running;
  });

  test("a handler that throws stops the engine with SyncError('internal'), not an unhandled rejection", async (t) => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on("unhandledRejection", onUnhandled);
    t.after(() => process.off("unhandledRejection", onUnhandled));
    const { engine } = await setup(t, { "a:9100": {} }, {}, (n) => ({
      getCommitAvailability: (p, s) => n.getCommitAvailability(p, s),
      // An answer the engine cannot read: its handler throws.
      fetchCommits: async (_p: string, _s: number, _e: number, _o: FetchOptions) =>
        ({ commits: null, certifierBlocks: [], bytes: 0 }) as unknown as CommitsResponse,
      fetchBlocks: (p, r, o) => n.fetchBlocks(p, r, o),
      pushCommit: (p, c, h) => n.pushCommit(p, c, h),
      close: () => n.close(),
    }));
    await assert.rejects(withTimeout(engine.run(true), 5_000, "run"), (e: unknown) => {
      assert.ok(e instanceof SyncError, String(e));
      assert.equal(e.code, "internal");
      assert.match(e.message, /FetchCommits answer failed/);
      return true;
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(unhandled, []);
  });
});

describe("sync engine: hostile or failing peers cannot hide a stall or stop the node (review cases)", () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  test("segments fetched from a peer whose heights are then doubted are dropped: the node is synced at what honest peers hold", async (t) => {
    // honest holds 1..50; x holds everything but refuses FetchCommits starting in 51..75.
    const { ts, engine } = await setup(
      t,
      { "honest:9100": { height: 50 }, "x:9100": {} },
      { maxStallMs: 5_000, commitsPerRequest: 25 },
      (n) => {
        const w = Object.create(n) as FakeSyncNetwork;
        w.fetchCommits = (peer, start, end, o) =>
          peer === "x:9100" && start >= 51 && start <= 75
            ? Promise.reject(new PeerError("unavailable_range", peer, "FetchCommits: not available"))
            : n.fetchCommits(peer, start, end, o);
        return w;
      },
    );
    await withTimeout(engine.run(true), 5_000, "run(true) to end synced at the honest height");
    assert.equal(ts.store.watermarks.highestSynced, 50);
    assert.equal(engine.progress.phase, "synced");
    assertNobodyBanned(engine);
  });

  test("a peer that advertises more and answers RESOURCE_EXHAUSTED (50 ms hint) forever is reported busy, and run(untilSynced) gives up", async (t) => {
    const { engine } = await setup(
      t,
      {
        "honest:9100": { height: 50 },
        "x:9100": { fail: { kind: "rate_limited", methods: ["commits", "blocks"], retryAfterMs: 50 } },
      },
      { maxStallMs: 500 },
    );
    await assert.rejects(withTimeout(engine.run(true), 5_000, "run"), (e: unknown) => {
      assert.ok(e instanceof SyncError && e.code === "stalled", String(e));
      assert.match(e.message, /\(busy\).*busy: x:9100/);
      return true;
    });
    assertNobodyBanned(engine);
  });

  test("one hostile peer answering first with an uncertified commit that does not link to the checkpoint is banned; the node completes", async (t) => {
    const ts = await tempStore(chain, checkpointAt(chain, commits, 50));
    t.after(() => ts.cleanup());
    const network = new FakeSyncNetwork(commits, chain.genesis.digest, {
      "evil:9100": {
        rewriteCommits: (r) => {
          const c = fromBinary(CommitSchema, r.commits[0]!);
          c.previousDigest = new Uint8Array(32).fill(9);
          return { commits: [toBinary(CommitSchema, c)], certifierBlocks: [] };
        },
      },
      "honest:9100": { latencyMs: 100 },
    });
    const engine = new SyncEngine({
      store: ts.store,
      network,
      peers: ["evil:9100", "honest:9100"],
      verifier: new NativeVerifier(),
      log: pino({ level: "silent" }),
      options: SMALL_OPTIONS,
    });
    t.after(() => engine.stop());
    await withTimeout(engine.run(true), 10_000, "sync past the hostile answer");
    assert.equal(ts.store.watermarks.highestSynced, commits.length);
    const evil = engine.peerStatuses().find((p) => p.address === "evil:9100")!;
    assert.ok(evil.banCount >= 1, "the hostile peer is banned");
    assert.match(evil.lastError, /broken_link/);
  });

  test("blocks of a long batch are fetched from a peer that holds part of it, chunk by chunk; a peer down for blocks shows as a stall", async (t) => {
    // a certifies only 37 (and the epoch end 40) and never answers FetchBlocks; b holds 1..30 only.
    const epochEnds = new Set(commits.filter((c) => c.nextCommittee !== undefined).map((c) => c.index));
    const { ts, engine, network } = await setup(
      t,
      {
        "a:9100": {
          certifies: (i) => i % 37 === 0 || epochEnds.has(i),
          fail: { kind: "network", methods: ["blocks"] },
        },
        "b:9100": { height: 30, latencyMs: 50 },
      },
      { commitsPerRequest: 10, blocksPerRequest: 1000 },
    );
    const running = engine.run(false);
    await waitFor(
      () => ts.store.watermarks.highestSynced >= 0 && engine.progress.phase === "stalled",
      10_000,
      "stalled",
    );
    // b served the blocks of the commits it holds, although the batch (1..37) runs past its height.
    assert.ok(
      network.callsTo("b:9100", "blocks").some((c) => c.error === undefined),
      "b was asked for blocks",
    );
    assert.match(engine.progress.stall!.detail, /a:9100/);
    await sleep(10);
    await engine.stop();
    await running;
  });
});
