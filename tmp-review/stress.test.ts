import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { FakeSyncNetwork as F } from "../test/helpers/sync-fake-network.js";
import { type FakePeerBehaviour, FakeSyncNetwork } from "../test/helpers/sync-fake-network.js";
import { assertStoreExact, checkpointAt, committeesHeld, makeEngine, seededRandom, tempStore, testChain, withTimeout } from "../test/helpers/sync-harness.js";
import type { SyncNetwork } from "../src/sync/network.js";

const { chain, commits } = testChain();
const epochEnds = new Set(commits.filter((c) => c.nextCommittee !== undefined).map((c) => c.index));
const sparse = (s: number, o: number) => (i: number) => epochEnds.has(i) || (i - o) % s === 0;

function jitter(n: F, rnd: () => number): SyncNetwork {
  const d = () => new Promise((r) => setTimeout(r, Math.floor(rnd() * 15)));
  return {
    getCommitAvailability: async (p, s) => { await d(); return n.getCommitAvailability(p, s); },
    fetchCommits: async (p, a, b, o) => { await d(); return n.fetchCommits(p, a, b, o); },
    fetchBlocks: async (p, r, o) => { await d(); return n.fetchBlocks(p, r, o); },
    pushCommit: (p, c, h) => n.pushCommit(p, c, h),
    close: () => n.close(),
  };
}

test("stress: jittered multi-peer sparse certifiers", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        from: fc.integer({ min: 0, max: 110 }),
        cpr: fc.integer({ min: 1, max: 60 }),
        ahead: fc.integer({ min: 1, max: 8 }),
        budget: fc.integer({ min: 1, max: 400_000 }),
        peers: fc.array(fc.record({ spacing: fc.integer({ min: 1, max: 60 }), offset: fc.integer({ min: 0, max: 59 }), bpr: fc.integer({ min: 1, max: 50 }) }), { minLength: 1, maxLength: 4 }),
        seed: fc.integer({ min: 1, max: 1_000_000 }),
      }),
      async (c) => {
        const ts = await tempStore(chain, c.from === 0 ? undefined : checkpointAt(chain, commits, c.from));
        const b: Record<string, FakePeerBehaviour> = {};
        c.peers.forEach((p, k) => (b[`p${k}:1`] = { certifies: sparse(p.spacing, p.offset), blocksPerResponse: p.bpr }));
        const net = new FakeSyncNetwork(commits, chain.genesis.digest, b);
        const engine = makeEngine(ts.store, jitter(net, seededRandom(c.seed + 7)), Object.keys(b),
          { commitsPerRequest: c.cpr, maxSegmentsAhead: c.ahead, maxInflightBytes: c.budget, banDurationMs: 60_000 }, seededRandom(c.seed));
        try {
          await withTimeout(engine.run(true), 30_000, `sync ${JSON.stringify(c)}`);
          for (const s of engine.peerStatuses()) assert.equal(s.banCount, 0, `${s.address} banned ${JSON.stringify(c)}: ${s.lastError}`);
          const run = commits.slice(c.from);
          await assertStoreExact(ts.store, run, committeesHeld(run));
          assert.equal((engine as any).inflightBytes, 0, "inflightBytes back to 0");
          assert.equal((engine as any).reservedBytes, 0, "reservedBytes back to 0");
          for (const s of engine.peerStatuses()) assert.equal(s.inFlight, 0, `inflight leak ${s.address}`);
        } finally { await engine.stop(); await ts.cleanup(); }
      }),
    { numRuns: 120 },
  );
});
