/**
 * The sync engine (src/sync/engine.ts, DESIGN.md §4) driven through injected network functions:
 * a FakeSyncNetwork serving the 3-epoch devnet chain (120 commits, 40 per epoch) per peer, with
 * knobs to misbehave, and a real LevelDB store in a temporary directory.
 *
 * - from genesis, every commit/block/certifier/committee lands in the store exactly, and the
 *   in-process stream delivers every sub-DAG in order;
 * - requests larger than an epoch never produce a batch that crosses it, and committees switch;
 * - each fault (tampered blocks, a certified fork that does not link, too few or forged votes,
 *   votes of another epoch, a height liar, a staller, another genesis) is survived with one bad
 *   peer: the store is exact and the bad peer (only it) is banned, or marked off-chain;
 * - the in-flight byte budget bounds what is held, measured outside the engine and through its
 *   own gauge;
 * - a PushCommit hint alone makes a caught-up engine fetch new commits;
 * - a trusted checkpoint start works against pruned peers, and a wrong one fails and stores nothing;
 * - stop() mid-sync is prompt and the store resumes to completion in a new engine.
 */

import assert from "node:assert/strict";
import { describe, type TestContext, test } from "node:test";
import { Registry } from "prom-client";
import { sha256, toHex, utf8Bytes } from "../../src/core/index.js";
import type { GeneratedCommit } from "../../src/devnet/chain.js";
import type { BlockRef, CommitRef, Committee } from "../../src/gen/dagsync/v1/types_pb.js";
import { toPeerStatus } from "../../src/node/admin-status.js";
import { type ApplyUnit, Store, type TrustedCheckpoint } from "../../src/store/index.js";
import type { CommittedSubDagView } from "../../src/sync/broadcast.js";
import type { SyncEngine } from "../../src/sync/engine.js";
import { SyncError } from "../../src/sync/errors.js";
import { SyncMetrics } from "../../src/sync/metrics.js";
import type { FetchOptions, SyncNetwork } from "../../src/sync/network.js";
import type { SyncOptions } from "../../src/sync/options.js";
import { type FakeMethod, type FakePeerBehaviour, FakeSyncNetwork } from "../helpers/sync-fake-network.js";
import { certifiedFork, forgeCertifiers, wrongWireTypeCertifiers } from "../helpers/sync-forge.js";
import {
  assertBytes,
  assertSameCommittee,
  assertStoreExact,
  assertStoreHoldsChain,
  committeeOfEpoch,
  makeEngine,
  rawTableCounts,
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
/** 12 segments of 10 commits: the first peer to answer its height gets the first 4 (its limit). */
const TEN = { commitsPerRequest: 10 } as const satisfies Partial<SyncOptions>;

const committeeOf = (epoch: number): Committee => committeeOfEpoch(chain, commits, epoch);

function at(index: number): GeneratedCommit {
  const c = commits[index - 1];
  assert.ok(c !== undefined && c.index === index, `no commit ${index}`);
  return c;
}

interface Setup {
  readonly ts: TempStore;
  readonly network: FakeSyncNetwork;
  readonly engine: SyncEngine;
}

/** A store, a fake network of `peers` (in this order) and an engine; torn down after the test. */
async function setup(
  t: TestContext,
  peers: Record<string, FakePeerBehaviour>,
  options: Partial<SyncOptions> = {},
  extra: {
    checkpoint?: TrustedCheckpoint;
    deadlineMs?: number;
    wrap?: (n: FakeSyncNetwork, s: Store) => SyncNetwork;
    metrics?: SyncMetrics;
    seed?: number;
  } = {},
): Promise<Setup> {
  const ts = await tempStore(chain, extra.checkpoint);
  const network = new FakeSyncNetwork(
    commits,
    chain.genesis.digest,
    peers,
    extra.deadlineMs === undefined ? {} : { deadlineMs: extra.deadlineMs },
  );
  const engine = makeEngine(
    ts.store,
    extra.wrap?.(network, ts.store) ?? network,
    Object.keys(peers),
    options,
    seededRandom(extra.seed ?? 1),
    extra.metrics === undefined ? {} : { metrics: extra.metrics },
  );
  t.after(async () => {
    await engine.stop();
    await ts.cleanup();
  });
  return { ts, network, engine };
}

async function syncToEnd(engine: SyncEngine, what = "the engine to sync to the tip"): Promise<number> {
  const started = performance.now();
  await withTimeout(engine.run(true), SYNC_TIMEOUT_MS, what);
  return performance.now() - started;
}

/** A peer's status as Admin/GetStatus reports it. */
function statusOf(engine: SyncEngine, peer: string) {
  const s = engine.peerStatuses().find((p) => p.address === peer);
  assert.ok(s !== undefined, `no status for ${peer}`);
  return toPeerStatus(s);
}

function assertNotBanned(engine: SyncEngine, peers: readonly string[]): void {
  for (const p of peers) {
    const s = statusOf(engine, p);
    assert.equal(s.banned, false, `${p} is banned: ${s.lastError}`);
    assert.equal(s.banCount, 0, `${p} was banned: ${s.lastError}`);
    assert.equal(s.offChain, false, `${p} is off-chain`);
  }
}

/** Every sub-DAG of `received` is the chain's commit of that index, with its blocks, in order. */
function assertSubDags(received: readonly CommittedSubDagView[], from: number, to: number): void {
  assert.deepEqual(
    received.map((v) => v.index),
    Array.from({ length: to - from + 1 }, (_, k) => from + k),
    "sub-DAG indices, in order",
  );
  for (const v of received) {
    const c = at(v.index);
    assertBytes(v.commit.bytes, c.commitBytes, `sub-DAG ${v.index}: commit bytes`);
    assertBytes(v.commit.digest, c.commitDigest, `sub-DAG ${v.index}: commit digest`);
    assert.equal(v.blocks.length, c.blocks.length, `sub-DAG ${v.index}: block count`);
    for (const [k, b] of v.blocks.entries())
      assertBytes(b, c.blocks[k]!.bytes, `sub-DAG ${v.index}: block ${k}`);
  }
}

describe("sync engine: honest peers", () => {
  test("syncs from genesis from 3 peers: the store holds exactly the chain; the stream delivers every sub-DAG in order", async (t) => {
    const peers = { "p1:9100": {}, "p2:9100": {}, "p3:9100": {} };
    const { ts, network, engine } = await setup(t, peers);
    const controller = new AbortController();
    t.after(() => controller.abort());
    const received: CommittedSubDagView[] = [];
    const streamed = (async () => {
      for await (const v of engine.broadcast.iterate(1, controller.signal)) {
        received.push(v);
        if (v.index >= TIP) break;
      }
    })();

    await syncToEnd(engine);
    await withTimeout(streamed, 5_000, "the stream to deliver the last sub-DAG");
    assertSubDags(received, 1, TIP);

    const progress = engine.progress;
    assert.equal(progress.phase, "synced");
    assert.equal(progress.highestSynced, TIP);
    assert.equal(progress.target, TIP);
    assert.equal(progress.commitsApplied, TIP);
    assert.equal(
      progress.blocksApplied,
      commits.reduce((n, c) => n + c.blocks.length, 0),
    );
    assert.equal(
      progress.bytesApplied,
      commits.reduce((n, c) => n + c.blocks.reduce((m, b) => m + b.bytes.length, 0), 0),
    );
    assert.equal(progress.usablePeers, 3);
    assertNotBanned(engine, Object.keys(peers));
    assert.ok(
      network.calls.every((c) => c.error === undefined),
      `no call failed: ${JSON.stringify(network.calls.filter((c) => c.error !== undefined))}`,
    );
    await assertStoreExact(ts.store, commits, 4);
  });

  test("ready segments behind the head are written together, within maxApplyBatchBytes and one epoch", async (t) => {
    const { ts, engine } = await setup(
      t,
      { "p1:9100": {}, "p2:9100": {} },
      { ...TEN, maxApplyBatchBytes: 64 * 1024 },
    );
    const applied: ApplyUnit[][] = [];
    const apply = ts.store.apply.bind(ts.store);
    ts.store.apply = async (units) => {
      applied.push([...units]);
      await new Promise((r) => setTimeout(r, 20)); // a slow disk: segments queue up behind the head
      return apply(units);
    };
    await syncToEnd(engine);
    assert.deepEqual(
      applied.flat().map((u) => u.index),
      Array.from({ length: TIP }, (_, k) => k + 1),
      "every commit applied once, in order",
    );
    const size = (batch: ApplyUnit[]) =>
      batch.reduce((n, u) => n + u.blocks.reduce((m, b) => m + b.bytes.length, u.commitBytes.length), 0);
    assert.ok(
      applied.some((b) => b.length > TEN.commitsPerRequest),
      `some write holds several segments: ${applied.map((b) => b.length).join(",")}`,
    );
    for (const batch of applied) {
      assert.equal(new Set(batch.map((u) => u.epoch)).size, 1, `batch ${batch[0]!.index}.. is of one epoch`);
      if (batch.length > TEN.commitsPerRequest)
        assert.ok(size(batch) <= 64 * 1024 + 16 * 1024, `batch ${batch[0]!.index}.. is ${size(batch)} bytes`);
    }
    await assertStoreExact(ts.store, commits, 4);
  });

  test("requests larger than an epoch: no batch crosses an epoch boundary, and the committee switches", async (t) => {
    const big = { maxCommitsPerFetch: 100 };
    const { ts, network, engine } = await setup(
      t,
      { "p1:9100": big, "p2:9100": big },
      { commitsPerRequest: 100 },
    );
    const applied: ApplyUnit[][] = [];
    const apply = ts.store.apply.bind(ts.store);
    ts.store.apply = (units) => {
      applied.push([...units]);
      return apply(units);
    };
    await syncToEnd(engine);

    // The engine asked past epoch ends (so truncation happened), yet every applied batch is of
    // one epoch, and a commit that ends its epoch is the last of its batch.
    const commitCalls = network.calls.filter((c) => c.method === "commits");
    for (const end of [40, 80])
      assert.ok(
        commitCalls.some((c) => c.start! <= end && c.end! > end),
        `some FetchCommits spanned the end of epoch at ${end}: ${JSON.stringify(commitCalls)}`,
      );
    assert.deepEqual(
      applied.flat().map((u) => u.index),
      Array.from({ length: TIP }, (_, k) => k + 1),
      "every commit applied once, in order",
    );
    for (const batch of applied) {
      const epochs = new Set(batch.map((u) => u.epoch));
      assert.equal(epochs.size, 1, `batch ${batch[0]!.index}..${batch.at(-1)!.index} spans epochs`);
      batch.forEach((u, k) => {
        assert.equal(u.epoch, at(u.index).epoch, `commit ${u.index}: epoch`);
        if (u.nextCommittee !== undefined)
          assert.equal(k, batch.length - 1, `commit ${u.index} ends its epoch but not its batch`);
      });
    }
    assert.deepEqual(
      applied.filter((b) => b.at(-1)!.nextCommittee !== undefined).map((b) => b.at(-1)!.index),
      [40, 80, 120],
      "each epoch's last commit carried its next committee into the store",
    );

    // Committees: each epoch's is the chain's, and they differ (rotated keys), so a batch checked
    // against the wrong one would have failed and banned an honest peer.
    for (let e = 0; e <= 3; e++) {
      const stored = await ts.store.getCommittee(e);
      assert.ok(stored !== undefined, `the store holds the committee of epoch ${e}`);
      assertSameCommittee(stored.committee, committeeOf(e), `committee of epoch ${e}`);
      if (e > 0)
        assert.notDeepEqual(
          stored.committee.validators.map((v) => toHex(v.protocolKey)),
          committeeOf(e - 1).validators.map((v) => toHex(v.protocolKey)),
          `epoch ${e} rotates a key`,
        );
    }
    assert.equal(engine.currentCommittee()?.epoch, 3);
    assertSameCommittee(
      engine.currentCommittee()?.committee,
      committeeOf(3),
      "the engine's current committee",
    );
    assert.equal(ts.store.watermarks.epoch, 3);
    assertNotBanned(engine, ["p1:9100", "p2:9100"]);
    await assertStoreExact(ts.store, commits, 4);
  });
});

interface FaultCase {
  readonly name: string;
  readonly bad: FakePeerBehaviour;
  readonly honest: number;
  /** The call the fault rides on: the test checks that the bad peer did get such calls. */
  readonly used: FakeMethod;
  /** What the bad peer's ban reason (its status's last error) must say. */
  readonly reason: RegExp;
}

/** A vote for the last commit `served`, by a quorum of another epoch's committee. */
function votesOfAnotherEpoch(served: readonly GeneratedCommit[]): Uint8Array[] {
  const last = served.at(-1)!;
  const other = last.epoch === 0 ? 1 : last.epoch - 1;
  return forgeCertifiers(chain, { index: last.index, digest: last.commitDigest }, other);
}

const FAULTS: FaultCase[] = [
  {
    name: "tampered block bytes",
    bad: { tamperBlock: true },
    honest: 1,
    used: "blocks",
    reason: /FetchBlocks: \[digest_mismatch\]/,
  },
  {
    name: "a broken previous_digest (a fork certified by a quorum of real keys, linked elsewhere)",
    bad: {
      rewriteCommits: (_, served) =>
        certifiedFork(chain, served, sha256(utf8Bytes("not the previous commit"))),
    },
    honest: 2,
    used: "commits",
    reason: /FetchCommits \d+\.\.: \[broken_link\]/,
  },
  {
    name: "too few certifier votes (2 of 4)",
    bad: { keepCertifiers: 2 },
    honest: 2,
    used: "commits",
    reason: /\[missing_quorum\]/,
  },
  {
    name: "certifier blocks with a field of the wrong wire type, validly signed (issue 10)",
    bad: {
      rewriteCommits: (r, served) => ({
        commits: r.commits,
        certifierBlocks: wrongWireTypeCertifiers(chain, served),
      }),
    },
    honest: 2,
    used: "commits",
    reason:
      /\[malformed\] Block does not decode: field 1 \(epoch\) of dagsync\.v1\.Block has wire type 5 \(I32\)/,
  },
  {
    name: "a forged certifier vote (bad signature)",
    bad: { flipCertifierSignature: true },
    honest: 1,
    used: "commits",
    reason: /\[bad_signature\]/,
  },
  {
    name: "votes by another epoch's committee",
    bad: {
      rewriteCommits: (r, served) => ({ commits: r.commits, certifierBlocks: votesOfAnotherEpoch(served) }),
    },
    honest: 2,
    used: "commits",
    reason: /\[wrong_epoch\]/,
  },
];
describe("sync engine: one bad peer among honest ones", () => {
  for (const f of FAULTS) {
    test(`${f.name}: sync completes, the store is exact, only the bad peer is banned`, async (t) => {
      const honest = Array.from({ length: f.honest }, (_, k) => `honest${k + 1}:9100`);
      // The bad peer is listed (and so answers its height) first: it gets the first segments.
      const peers: Record<string, FakePeerBehaviour> = { "bad:9100": f.bad };
      for (const h of honest) peers[h] = {};
      const { ts, network, engine } = await setup(t, peers, TEN);
      await syncToEnd(engine);

      assert.ok(
        network.callsTo("bad:9100", f.used).length > 0,
        `the bad peer was never asked (${f.used}): the fault was not exercised`,
      );
      const bad = statusOf(engine, "bad:9100");
      assert.equal(bad.banned, true, `the bad peer is banned (last error: ${bad.lastError})`);
      assert.ok(bad.banCount >= 1);
      assert.ok(bad.bannedUntilMs > 0n);
      assert.match(bad.lastError, f.reason);
      assertNotBanned(engine, honest);
      assert.equal(engine.progress.phase, "synced");
      assert.equal(engine.progress.usablePeers, f.honest);
      await assertStoreExact(ts.store, commits, 4);
    });
  }

  test("a peer that stalls forever: its work moves to the others, it backs off (never banned: slowness is no evidence), sync completes", async (t) => {
    const deadlineMs = 250;
    const { ts, network, engine } = await setup(
      t,
      { "staller:9100": { stall: ["commits", "blocks"] }, "honest1:9100": {}, "honest2:9100": {} },
      TEN,
      { deadlineMs },
    );
    const elapsed = await syncToEnd(engine);

    const stalled = network.calls.filter((c) => c.peer === "staller:9100" && c.method !== "availability");
    assert.ok(stalled.length >= 1, `the staller held work: ${JSON.stringify(stalled)}`);
    assert.ok(
      stalled.every((c) => c.error === "deadline"),
      "the staller never answered a fetch: each one ended at its deadline",
    );
    // Each range the staller held was then served by an honest peer.
    for (const c of stalled.filter((x) => x.method === "commits"))
      assert.ok(
        network.calls.some(
          (h) =>
            h.peer !== "staller:9100" &&
            h.method === "commits" &&
            h.start === c.start &&
            h.error === undefined,
        ),
        `commits ${c.start}..${c.end} were re-fetched from an honest peer`,
      );
    // After its first failure it gets one probe at a time, spaced by a growing backoff.
    const overlapping = stalled.filter((c, k) =>
      stalled.slice(0, k).some((d) => d.at + deadlineMs > c.at + 1),
    );
    assert.ok(
      overlapping.length <= 4,
      `after the first deadline, probes do not overlap: ${overlapping.length}`,
    );
    assertNotBanned(engine, ["staller:9100", "honest1:9100", "honest2:9100"]);
    assert.match(statusOf(engine, "staller:9100").lastError, /deadline exceeded/);
    // The stall never ends; the sync costs about one deadline, not more.
    assert.ok(elapsed < 20 * deadlineMs, `synced in ${Math.round(elapsed)} ms despite the staller`);
    await assertStoreExact(ts.store, commits, 4);
  });

  test("a peer lying about its height (holds 60, advertises 1000): asked again, then not believed above 60; never banned, and the node is synced at the honest tip", async (t) => {
    const { ts, network, engine } = await setup(
      t,
      { "liar:9100": { height: 60, advertisedHeight: 1000 }, "honest1:9100": {}, "honest2:9100": {} },
      TEN,
    );
    // Run on (following) until the liar's heights were asked again after its refusal.
    const running = engine.run(false);
    await waitFor(
      () =>
        ts.store.watermarks.highestSynced === commits.length &&
        /refused commit \d+, which it advertises/.test(statusOf(engine, "liar:9100").lastError),
      SYNC_TIMEOUT_MS,
      "sync to the honest tip, and the liar's refusal judged",
    );
    const refused = network.callsTo("liar:9100", "commits").filter((c) => c.error === "unavailable_range");
    assert.ok(refused.length >= 1, "the liar was asked for a range it advertises and refused it");
    const firstRefusal = refused[0]!;
    assert.ok(
      network.callsTo("liar:9100", "availability").some((c) => c.at >= firstRefusal.at),
      "heights asked again after the refusal",
    );
    const liar = statusOf(engine, "liar:9100");
    assert.ok(
      liar.highest < BigInt(firstRefusal.start!),
      `its height counts only below the refused commit: ${liar.highest}`,
    );
    assertNotBanned(engine, ["liar:9100", "honest1:9100", "honest2:9100"]);
    assert.equal(engine.progress.phase, "synced");
    assert.equal(engine.progress.target, commits.length, "the target is the honest tip, not the lie");
    await engine.stop();
    await running;
    await assertStoreExact(ts.store, commits, 4);
  });

  test("a peer of another genesis is marked off-chain and never used (not banned), even advertising more", async (t) => {
    const other = "other:9100";
    const { ts, network, engine } = await setup(
      t,
      {
        [other]: { genesisDigest: sha256(utf8Bytes("another chain")), advertisedHeight: 1000 },
        "honest1:9100": {},
        "honest2:9100": {},
      },
      TEN,
    );
    // Run until synced, and on until honest peers have been polled a few more times.
    const running = engine.run(false);
    await waitFor(
      () =>
        engine.progress.phase === "synced" &&
        network.callsTo("honest1:9100", "availability").length >= 4 &&
        network.callsTo("honest2:9100", "availability").length >= 4,
      SYNC_TIMEOUT_MS,
      "the sync, then more height polls",
    );
    await engine.stop();
    await withTimeout(running, 5_000, "run() to return after stop()");

    const s = statusOf(engine, other);
    assert.equal(s.offChain, true);
    assert.equal(s.banned, false, "off-chain is not a ban: it is permanent and never used");
    assert.equal(s.banCount, 0);
    assert.match(s.lastError, /another chain/);
    assert.equal(s.highest, 0n, "its advertised height was not believed");
    assert.deepEqual(
      network.callsTo(other).map((c) => c.method),
      ["availability"],
      "asked for its height once, then never again, and never for data",
    );
    assertNotBanned(engine, ["honest1:9100", "honest2:9100"]);
    await assertStoreExact(ts.store, commits, 4);
  });
});

/**
 * Counts, outside the engine, the bytes the network handed it that are not yet applied: a
 * response is released when the store's watermark passes the last commit it serves (which is when
 * the engine applies the segment it belongs to). Peak measured at each delivery.
 */
class InflightMeter implements SyncNetwork {
  peak = 0;
  delivered = 0;
  private readonly outstanding: { bytes: number; upTo: number }[] = [];

  constructor(
    private readonly inner: FakeSyncNetwork,
    private readonly store: Store,
  ) {}

  current(): number {
    const h = this.store.watermarks.highestSynced;
    let sum = 0;
    for (const o of this.outstanding) if (o.upTo > h) sum += o.bytes;
    return sum;
  }

  private deliver(bytes: number, upTo: number): void {
    this.delivered += bytes;
    this.outstanding.push({ bytes, upTo });
    this.peak = Math.max(this.peak, this.current());
  }

  getCommitAvailability(peer: string, signal: AbortSignal) {
    return this.inner.getCommitAvailability(peer, signal);
  }

  async fetchCommits(peer: string, start: number, end: number, o: FetchOptions) {
    const res = await this.inner.fetchCommits(peer, start, end, o);
    this.deliver(res.bytes, start + res.commits.length - 1);
    return res;
  }

  async fetchBlocks(peer: string, refs: readonly BlockRef[], o: FetchOptions) {
    const res = await this.inner.fetchBlocks(peer, refs, o);
    let upTo = 0;
    for (const r of refs.slice(0, res.blocks.length))
      upTo = Math.max(upTo, this.inner.commitIndexOfBlock(r.digest) ?? 0);
    this.deliver(res.bytes, upTo);
    return res;
  }

  pushCommit(peer: string, commit: CommitRef, highestSynced: number) {
    return this.inner.pushCommit(peer, commit, highestSynced);
  }

  close(): void {
    this.inner.close();
  }
}

/** The most bytes one segment of `size` commits (commits, certifiers of its last, blocks) takes. */
function largestSegmentBytes(size: number): number {
  let max = 0;
  for (let i = 0; i + size <= commits.length; i++) {
    const run = commits.slice(i, i + size);
    let bytes = run.at(-1)!.certifierBlocks.reduce((n, b) => n + b.length, 0);
    for (const c of run) bytes += c.commitBytes.length + c.blocks.reduce((n, b) => n + b.bytes.length, 0);
    max = Math.max(max, bytes);
  }
  return max;
}

describe("sync engine: FetchBlocks folded across segments", () => {
  // Segments of 5 commits (what one FetchCommits returns here) and room for 60 refs per call.
  // Folding takes verified segments waiting for a request slot: with few slots, they wait.
  const FOLD = {
    commitsPerRequest: 5,
    blocksPerRequest: 60,
    maxConcurrentRequests: 2,
  } as const satisfies Partial<SyncOptions>;
  const refsOfSegments = Array.from({ length: TIP / 5 }, (_, k) =>
    commits.slice(k * 5, k * 5 + 5).reduce((n, c) => n + c.blocks.length, 0),
  );
  const largestSegment = Math.max(...refsOfSegments);

  test("a call carries the refs of several segments, up to blocksPerRequest; the store is exact", async (t) => {
    const peers = { "p1:9100": {}, "p2:9100": {} };
    const { ts, network, engine } = await setup(t, peers, FOLD);
    await syncToEnd(engine);
    const blockCalls = network.calls.filter((c) => c.method === "blocks" && c.error === undefined);
    const largest = Math.max(...blockCalls.map((c) => c.refs ?? 0));
    assert.ok(
      largest > largestSegment,
      `largest call ${largest} refs, one segment at most ${largestSegment}`,
    );
    assert.ok(largest <= FOLD.blocksPerRequest, `largest call ${largest} refs`);
    assert.ok(
      blockCalls.length < refsOfSegments.length,
      `${blockCalls.length} FetchBlocks calls for ${refsOfSegments.length} segments`,
    );
    assertNotBanned(engine, Object.keys(peers));
    await assertStoreExact(ts.store, commits, 4);
  });

  test("answers cut short (a prefix within the first segment's refs) ban nobody; the rest is asked again", async (t) => {
    const peers = { "p1:9100": { blocksPerResponse: 3 }, "p2:9100": { blocksPerResponse: 7 } };
    const { ts, network, engine } = await setup(t, peers, FOLD);
    await syncToEnd(engine);
    const blockCalls = network.calls.filter((c) => c.method === "blocks");
    assert.ok(
      blockCalls.some((c) => (c.refs ?? 0) > largestSegment),
      "some call was folded",
    );
    assertNotBanned(engine, Object.keys(peers));
    await assertStoreExact(ts.store, commits, 4);
  });

  test("a bad block in a later segment's part of a folded call bans the peer; sync completes exactly", async (t) => {
    const at = largestSegment + 1; // inside the second part of a folded call
    const { ts, network, engine } = await setup(
      t,
      { "bad:9100": { tamperBlockAt: at }, "honest1:9100": {}, "honest2:9100": {} },
      FOLD,
    );
    await syncToEnd(engine);
    const badCalls = network.callsTo("bad:9100", "blocks").filter((c) => (c.returned ?? 0) > at);
    assert.ok(badCalls.length > 0, "the bad peer answered a call long enough to carry its bad block");
    const bad = statusOf(engine, "bad:9100");
    assert.equal(bad.banned, true, `the bad peer is banned (last error: ${bad.lastError})`);
    assert.match(bad.lastError, /FetchBlocks: \[digest_mismatch\]/);
    assertNotBanned(engine, ["honest1:9100", "honest2:9100"]);
    await assertStoreExact(ts.store, commits, 4);
  });
});

describe("sync engine: in-flight byte budget", () => {
  test("a small maxInflightBytes bounds the bytes held (measured outside and by the engine's gauge); sync completes", async (t) => {
    const segment = 5;
    const peers = { "p1:9100": { latencyMs: 2 }, "p2:9100": { latencyMs: 2 }, "p3:9100": { latencyMs: 2 } };
    const base = { commitsPerRequest: segment, maxSegmentsAhead: 32 };
    const run = async (maxInflightBytes: number) => {
      const metrics = new SyncMetrics(new Registry());
      let gaugePeak = 0;
      let gaugeLast = -1;
      const set = metrics.inflightBytes.set.bind(metrics.inflightBytes);
      metrics.inflightBytes.set = ((value: number) => {
        gaugePeak = Math.max(gaugePeak, value);
        gaugeLast = value;
        set(value);
      }) as typeof metrics.inflightBytes.set;
      let meter: InflightMeter | undefined;
      const { ts, engine } = await setup(
        t,
        peers,
        { ...base, maxInflightBytes },
        {
          metrics,
          wrap: (n, s) => {
            meter = new InflightMeter(n, s);
            return meter;
          },
        },
      );
      await syncToEnd(engine);
      await assertStoreExact(ts.store, commits, 4);
      return { meter: meter!, gaugePeak, gaugeLast };
    };

    const budget = 24 * 1024;
    // The head segment is always allowed (so the budget never deadlocks progress): one segment
    // is the most the engine may hold beyond its budget.
    const headAllowance = largestSegmentBytes(segment);
    const small = await run(budget);
    const free = await run(128 * 1024 * 1024);

    assert.ok(
      small.meter.delivered > 4 * budget,
      `the chain (${small.meter.delivered} bytes delivered) is much larger than the budget`,
    );
    assert.ok(
      small.meter.peak <= budget + headAllowance,
      `held at most ${budget} + ${headAllowance} bytes (head allowance), measured ${small.meter.peak}`,
    );
    assert.ok(
      small.gaugePeak <= budget + headAllowance,
      `the engine's own in-flight gauge stayed within ${budget} + ${headAllowance}, was ${small.gaugePeak}`,
    );
    assert.equal(small.gaugeLast, 0, "all held bytes were released once applied");
    assert.equal(free.gaugeLast, 0);
    // Control: without the budget the same sync holds far more at once, so the bound is the budget's doing.
    assert.ok(
      free.meter.peak > 2 * (budget + headAllowance),
      `without a budget the peak is higher: ${free.meter.peak} vs ${small.meter.peak}`,
    );
  });
});

describe("sync engine: push", () => {
  test("after catching up, a PushCommit hint alone makes the engine fetch the peers' new commits", async (t) => {
    const grown = ["p1:9100", "p2:9100", "p3:9100"];
    const peers: Record<string, FakePeerBehaviour> = { "behind:9100": { height: 30 } };
    for (const p of grown) peers[p] = { height: 60 };
    const { ts, network, engine } = await setup(t, peers, {
      ...TEN,
      peerQueryIntervalMs: 3_600_000, // the periodic poll never fires during the test
      pushIntervalMs: 0,
    });
    const running = engine.run(false);
    await waitFor(
      () => engine.progress.phase === "synced" && ts.store.watermarks.highestSynced === 60,
      SYNC_TIMEOUT_MS,
      "the first catch-up to 60",
    );
    const polls = network.calls.filter((c) => c.method === "availability").length;
    assert.equal(polls, 4, "one round of height queries so far (the one at start)");

    // The peers' chains grow; nothing tells the engine yet.
    for (const p of grown) network.update(p, { height: TIP });
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(ts.store.watermarks.highestSynced, 60, "no progress without a hint (no poll)");

    engine.onPushCommit("10.1.2.3", TIP);
    await waitFor(
      () => ts.store.watermarks.highestSynced === TIP && engine.progress.phase === "synced",
      SYNC_TIMEOUT_MS,
      "the catch-up to the tip after the push",
    );
    assert.equal(
      network.calls.filter((c) => c.method === "availability").length,
      polls + 4,
      "exactly one more round of height queries: the push's",
    );

    // §4.8: after applying, the engine pushes to usable peers known to be behind, and only to them.
    assert.ok(network.pushes.length > 0, "the engine pushed to the peer behind");
    assert.ok(network.pushes.every((p) => p.peer === "behind:9100" && p.index === p.highestSynced));
    assert.ok(network.pushes.every((p) => p.highestSynced > 30));
    assert.equal(network.pushes.at(-1)!.highestSynced, TIP);

    await engine.stop();
    await withTimeout(running, 5_000, "run() to return after stop()");
    assertNotBanned(engine, Object.keys(peers));
    await assertStoreExact(ts.store, commits, 4);
  });
});

describe("sync engine: trusted checkpoint", () => {
  for (const index of [50, 80]) {
    test(`starts from a checkpoint at ${index} with peers that pruned below it, and completes`, async (t) => {
      const epoch = at(index).nextCommittee !== undefined ? at(index).epoch + 1 : at(index).epoch;
      const checkpoint = { index, digest: at(index).commitDigest, committee: committeeOf(epoch) };
      const { ts, network, engine } = await setup(
        t,
        { "p1:9100": { lowest: index + 1 }, "p2:9100": { lowest: index - 9 } },
        TEN,
        { checkpoint },
      );
      assert.equal(ts.store.watermarks.highestSynced, index);
      await syncToEnd(engine);

      assert.ok(
        network.calls.every((c) => c.error === undefined),
        `nothing below the checkpoint was asked for: ${JSON.stringify(network.calls.filter((c) => c.error))}`,
      );
      assert.ok(network.calls.filter((c) => c.method === "commits").every((c) => c.start! > index));
      await assert.rejects(
        engine.broadcast.iterate(1).next(),
        { code: "out_of_range" },
        "below the checkpoint",
      );
      const first = await engine.broadcast.iterate(index + 1).next();
      assert.equal(first.value?.index, index + 1, "the stream starts right after the checkpoint");
      assertNotBanned(engine, ["p1:9100", "p2:9100"]);
      const run = commits.slice(index);
      await assertStoreExact(ts.store, run, 1 + run.filter((c) => c.nextCommittee !== undefined).length);
    });
  }

  test("a checkpoint whose digest is not what peers serve fails with a clear error and stores nothing past it", async (t) => {
    const index = 50;
    const wrong = sha256(utf8Bytes("not commit 50"));
    const checkpoint = { index, digest: wrong, committee: committeeOf(1) };
    const { ts, network, engine } = await setup(t, { "p1:9100": { lowest: index + 1 }, "p2:9100": {} }, TEN, {
      checkpoint,
    });
    await assert.rejects(
      withTimeout(engine.run(true), SYNC_TIMEOUT_MS, "the engine to give up on the checkpoint"),
      (e: unknown) => {
        assert.ok(e instanceof SyncError, `a SyncError, not ${String(e)}`);
        assert.equal(e.code, "checkpoint_mismatch");
        assert.match(
          e.message,
          /the trusted checkpoint \(commit 50, digest [0-9a-f]{16}…\) does not match what peers serve/,
        );
        assert.ok(e.message.includes(toHex(wrong).slice(0, 16)), "it names the checkpoint's digest");
        assert.match(e.message, /commit 51 from .*p1:9100/);
        assert.match(e.message, /commit 51 from .*p2:9100/);
        assert.match(e.message, /Check --checkpoint and --genesis/);
        return true;
      },
    );
    assert.ok(
      network.callsTo("p1:9100", "commits").length > 0 && network.callsTo("p2:9100", "commits").length > 0,
    );
    assert.equal(ts.store.watermarks.highestSynced, index, "the watermark did not move");
    assert.equal(await ts.store.getCommit(index + 1), undefined);
    await engine.stop();
    await ts.store.close();
    assert.deepEqual(
      await rawTableCounts(ts.store.path),
      { committees: 1, meta: 2 },
      "nothing but the checkpoint's committee and the metadata",
    );
  });
});

describe("sync engine: stop and resume", () => {
  test("stop() mid-sync resolves promptly; a new engine resumes the store to completion", async (t) => {
    const peers = { "p1:9100": { latencyMs: 15 }, "p2:9100": { latencyMs: 15 } };
    const { ts, engine } = await setup(t, peers, TEN);
    const running = engine.run(true);
    await waitFor(() => ts.store.watermarks.highestSynced >= 20, SYNC_TIMEOUT_MS, "some progress");
    const started = performance.now();
    await withTimeout(engine.stop(), 2_000, "stop()");
    const stopMs = performance.now() - started;
    await withTimeout(running, 2_000, "run() to return after stop()");
    assert.equal(engine.progress.phase, "stopped");
    const h = ts.store.watermarks.highestSynced;
    assert.ok(h >= 20 && h < TIP, `stopped mid-sync, at ${h}`);
    assert.ok(stopMs < 1_000, `stop() took ${Math.round(stopMs)} ms`);
    await ts.store.close();

    // A new process: the store reopens at its watermark, holding exactly 1..h.
    const store = await Store.open(ts.store.path, { genesis: chain.genesis.bytes });
    t.after(() => store.close().catch(() => {}));
    await assertStoreHoldsChain(store, commits.slice(0, h));
    const network = new FakeSyncNetwork(commits, chain.genesis.digest, peers);
    const resumed = makeEngine(store, network, Object.keys(peers), TEN, seededRandom(2));
    t.after(() => resumed.stop());
    await syncToEnd(resumed, "the resumed engine to sync to the tip");
    const asked = network.calls.filter((c) => c.method === "commits");
    assert.ok(
      asked.length > 0 && asked.every((c) => c.start! > h),
      `resumed after ${h}: ${JSON.stringify(asked)}`,
    );
    assert.equal(resumed.progress.commitsApplied, TIP - h);
    await assertStoreExact(store, commits, 4);
  });
});
