/**
 * The batch contract (DESIGN §3) between honest peers that differ: each peer holds certifier
 * blocks only where its own batches ended (other batch sizes, other checkpoints), so its answers
 * end wherever it can certify, sometimes past the end asked for. The engine must accept every such
 * batch, re-plan around it, complete, and ban nobody. Fake network (pure logic, fast enough for a
 * property); test/integration/batch-contract.test.ts runs the same against real servers.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import type { FakePeerBehaviour } from "../helpers/sync-fake-network.js";
import { FakeSyncNetwork } from "../helpers/sync-fake-network.js";
import {
  assertStoreExact,
  checkpointAt,
  committeesHeld,
  makeEngine,
  seededRandom,
  tempStore,
  testChain,
  withTimeout,
} from "../helpers/sync-harness.js";

const { chain, commits } = testChain();
const epochEnds = new Set(commits.filter((c) => c.nextCommittee !== undefined).map((c) => c.index));

/**
 * Certifiers every `spacing` commits from `offset`, and at every epoch end (a batch never crosses
 * one, so every honest store certifies each epoch's last commit).
 */
function sparse(spacing: number, offset = 0): (index: number) => boolean {
  return (i) => epochEnds.has(i) || (i - offset) % spacing === 0;
}

interface Case {
  /** Trusted checkpoint index, 0 for genesis. */
  readonly from: number;
  readonly commitsPerRequest: number;
  readonly peers: readonly { spacing: number; offset: number }[];
  readonly seed: number;
}

async function runCase(c: Case): Promise<void> {
  const ts = await tempStore(chain, c.from === 0 ? undefined : checkpointAt(chain, commits, c.from));
  const behaviours: Record<string, FakePeerBehaviour> = {};
  c.peers.forEach((p, k) => {
    behaviours[`p${k}:9100`] = { certifies: sparse(p.spacing, p.offset), latencyMs: k };
  });
  const network = new FakeSyncNetwork(commits, chain.genesis.digest, behaviours);
  const engine = makeEngine(
    ts.store,
    network,
    Object.keys(behaviours),
    { commitsPerRequest: c.commitsPerRequest, banDurationMs: 60_000 },
    seededRandom(c.seed),
  );
  try {
    await withTimeout(engine.run(true), 20_000, `sync of ${JSON.stringify(c)}`);
    for (const s of engine.peerStatuses())
      assert.equal(s.banCount, 0, `${s.address} was banned (${JSON.stringify(c)}): ${s.lastError}`);
    const run = commits.slice(c.from);
    await assertStoreExact(ts.store, run, committeesHeld(run));
  } finally {
    await engine.stop();
    await ts.cleanup();
  }
}

describe("sync engine: the batch contract with peers that certify sparsely", () => {
  test("an answer past the end asked for (nothing certifiable within) is accepted whole and fills the next segments", async () => {
    // Certifiers only at 37, 40 (epoch end), 74, 80, …: a request for 1..10 is answered 1..37.
    const ts = await tempStore(chain);
    const network = new FakeSyncNetwork(commits, chain.genesis.digest, {
      "p:9100": { certifies: sparse(37) },
    });
    const engine = makeEngine(ts.store, network, ["p:9100"], { commitsPerRequest: 10 });
    try {
      await withTimeout(engine.run(true), 20_000, "sync");
      const first = network.callsTo("p:9100", "commits").find((x) => x.start === 1);
      assert.equal(first?.returned, 37, "the answer to 1..10 ran to 37, the first commit it can certify");
      const later = network
        .callsTo("p:9100", "commits")
        .filter((x) => x.start !== undefined && x.start > 1 && x.start <= 37 && x.at > first!.doneAt);
      assert.deepEqual(
        later,
        [],
        "nothing of 2..37 was asked for after the long batch came: it filled those segments",
      );
      assert.equal(engine.peerStatuses()[0]!.banCount, 0);
      await assertStoreExact(ts.store, commits, committeesHeld(commits));
    } finally {
      await engine.stop();
      await ts.cleanup();
    }
  });

  for (const from of [0, 37, 39, 40, 41, 77]) {
    test(`from ${from === 0 ? "genesis" : `a checkpoint at ${from}`}: peers certifying every 37 and every 23 commits, batches of 25`, async () => {
      await runCase({
        from,
        commitsPerRequest: 25,
        peers: [
          { spacing: 37, offset: 0 },
          { spacing: 23, offset: 5 },
        ],
        seed: from + 1,
      });
    });
  }

  test("property: any start point, certifier spacing and batch size completes and bans nobody", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          from: fc.integer({ min: 0, max: commits.length - 1 }),
          commitsPerRequest: fc.integer({ min: 1, max: 100 }),
          peers: fc.array(
            fc.record({ spacing: fc.integer({ min: 1, max: 60 }), offset: fc.integer({ min: 0, max: 59 }) }),
            { minLength: 1, maxLength: 3 },
          ),
          seed: fc.integer({ min: 1, max: 1_000_000 }),
        }),
        runCase,
      ),
      { numRuns: 40 },
    );
  });
});
