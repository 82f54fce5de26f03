import assert from "node:assert/strict";
import { test } from "node:test";
import pino from "pino";
import { PeerError } from "../src/client/index.js";
import { NativeVerifier } from "../src/crypto/index.js";
import { SyncEngine } from "../src/sync/engine.js";
import type { SyncNetwork } from "../src/sync/network.js";
import type { SyncOptions } from "../src/sync/options.js";
import { type FakePeerBehaviour, FakeSyncNetwork } from "../test/helpers/sync-fake-network.js";
import { SMALL_OPTIONS, tempStore, testChain } from "../test/helpers/sync-harness.js";

const { chain, commits } = testChain();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(peers: Record<string, FakePeerBehaviour>, options: Partial<SyncOptions>, wrap?: (n: FakeSyncNetwork) => SyncNetwork) {
  const ts = await tempStore(chain);
  const network = new FakeSyncNetwork(commits, chain.genesis.digest, peers);
  const engine = new SyncEngine({
    store: ts.store, network: wrap?.(network) ?? network, peers: Object.keys(peers),
    verifier: new NativeVerifier(), log: pino({ level: "silent" }),
    options: { ...SMALL_OPTIONS, stallGraceMs: 100, tickIntervalMs: 20, ...options },
  });
  return { ts, network, engine };
}

test("DEMO A: segments fetched beyond a lowered target keep the node 'syncing' (never synced, never stalled)", async () => {
  // honest holds 1..50; X holds everything but refuses FetchCommits starting in 51..75 (OUT_OF_RANGE).
  const { ts, engine } = await setup(
    { "honest:1": { height: 50 }, "x:1": {} },
    { maxStallMs: 300, banDurationMs: 1_500 },
    (n) => {
      const w = Object.create(n) as FakeSyncNetwork;
      w.fetchCommits = (peer, start, end, o) =>
        peer === "x:1" && start >= 51 && start <= 75
          ? Promise.reject(new PeerError("unavailable_range", peer, "FetchCommits: not available"))
          : n.fetchCommits(peer, start, end, o);
      return w;
    },
  );
  let outcome = "still running";
  const running = engine.run(true).then(() => (outcome = "returned"), (e) => (outcome = `threw ${e.code}`));
  const phases = new Set<string>();
  for (let k = 0; k < 40; k++) { await sleep(100); phases.add(engine.progress.phase); }
  const p = engine.progress;
  console.log({ outcome, phases: [...phases], highest: p.highestSynced, target: p.target, stall: p.stall,
    segs: (engine as any).segments.map((s: any) => `${s.start}-${s.end}:${s.state.kind}`) });
  assert.equal(ts.store.watermarks.highestSynced, 50);
  assert.equal(outcome, "still running", "run(true) neither returned synced nor failed stalled after 4 s (maxStallMs 300)");
  await engine.stop(); await running; await ts.cleanup();
});

test("DEMO B: a peer advertising more and answering RESOURCE_EXHAUSTED (hint 50 ms) forever: never synced, never stalled", async () => {
  const { ts, engine } = await setup(
    { "honest:1": { height: 50 }, "x:1": { fail: { kind: "rate_limited", methods: ["commits", "blocks"], retryAfterMs: 50 } } },
    { maxStallMs: 300 },
  );
  let outcome = "still running";
  const running = engine.run(true).then(() => (outcome = "returned"), (e) => (outcome = `threw ${e.code}`));
  const phases = new Set<string>();
  for (let k = 0; k < 40; k++) { await sleep(100); phases.add(engine.progress.phase); }
  const p = engine.progress;
  console.log({ outcome, phases: [...phases], highest: p.highestSynced, target: p.target, stall: p.stall });
  assert.equal(outcome, "still running");
  await engine.stop(); await running; await ts.cleanup();
});
