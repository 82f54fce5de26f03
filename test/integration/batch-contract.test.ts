/**
 * The batch contract (DESIGN §3) end to end over real gRPC: real SyncServers whose LevelDB stores
 * hold certifier blocks sparsely (as nodes that synced with other batch sizes or from other
 * checkpoints do), and the real engine with its production network. Every start point completes,
 * across epoch ends, and no honest server is banned. Then a full node that synced with other batch
 * settings serves a second one that starts from a checkpoint.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { NativeVerifier } from "../../src/crypto/index.js";
import { DevnetChain, type GeneratedCommit } from "../../src/devnet/chain.js";
import { silentLogger } from "../../src/node/logger.js";
import { Store } from "../../src/store/index.js";
import { SyncEngine } from "../../src/sync/engine.js";
import { PeerClientNetwork } from "../../src/sync/network.js";
import type { SyncOptions } from "../../src/sync/options.js";
import { type RunningServer, removeDir, startServer, tempDir, toUnit } from "../helpers/server.js";
import { assertStoreHoldsChain, checkpointAt, withTimeout } from "../helpers/sync-harness.js";

const COMMITS_PER_EPOCH = 150;
const chain = new DevnetChain({
  validators: 4,
  epochs: 3,
  commitsPerEpoch: COMMITS_PER_EPOCH,
  txsPerBlock: 1,
  txBytes: 16,
  seed: 23,
});
const commits: GeneratedCommit[] = [...chain.commits()];
/** Commits every honest store certifies: each epoch's last (no batch crosses one) and its own highest. */
const epochEnds = new Set([
  ...commits.filter((c) => c.nextCommittee !== undefined).map((c) => c.index),
  commits.length,
]);

let dir: string;
const servers: RunningServer[] = [];
const stores: Store[] = [];
/** Certifiers every 37 commits, and every 23 from 5 (plus each epoch's last commit). */
let every37: RunningServer;
let every23: RunningServer;

async function sparseServer(name: string, spacing: number, offset: number): Promise<RunningServer> {
  // (A DevnetChain generates its commits once: the stores are built from the array.)
  const store = await Store.open(join(dir, name), { genesis: chain.genesis.bytes });
  await store.apply(
    commits.map((c) => toUnit(c, epochEnds.has(c.index) || (c.index - offset) % spacing === 0)),
  );
  stores.push(store);
  const s = await startServer(store);
  servers.push(s);
  return s;
}

interface SyncResult {
  readonly engine: SyncEngine;
  readonly store: Store;
}

/** Syncs a new store (from genesis or a checkpoint) from `peers` to the end, over real gRPC. */
async function syncFrom(
  name: string,
  peers: readonly RunningServer[],
  from: number,
  options: Partial<SyncOptions>,
): Promise<SyncResult> {
  const store = await Store.open(join(dir, name), {
    genesis: chain.genesis.bytes,
    checkpoint: from === 0 ? undefined : checkpointAt(chain, commits, from),
  });
  stores.push(store);
  const network = new PeerClientNetwork();
  const engine = new SyncEngine({
    store,
    network,
    peers: peers.map((p) => p.address),
    verifier: new NativeVerifier(),
    log: silentLogger(),
    options: { peerQueryIntervalMs: 200, ...options },
  });
  try {
    await withTimeout(engine.run(true), 60_000, `${name}: sync from ${from}`);
  } finally {
    await engine.stop();
    network.close();
  }
  for (const p of engine.peerStatuses())
    assert.equal(p.banCount, 0, `${name}: ${p.address} was banned: ${p.lastError}`);
  await assertStoreHoldsChain(store, commits.slice(from));
  return { engine, store };
}

describe("batch contract over real gRPC: servers that certify sparsely", () => {
  before(async () => {
    dir = await tempDir("dagsync-batch-");
    every37 = await sparseServer("every37", 37, 0);
    every23 = await sparseServer("every23", 23, 5);
  });
  after(async () => {
    for (const s of servers) await s.stop();
    for (const s of stores) await s.close().catch(() => {});
    await removeDir(dir);
  });

  const cases: { from: number; what: string; commitsPerRequest: number }[] = [
    { from: 0, what: "genesis", commitsPerRequest: 25 },
    { from: 77, what: "a checkpoint at 77", commitsPerRequest: 100 },
    { from: COMMITS_PER_EPOCH, what: "an epoch's last commit", commitsPerRequest: 30 },
    { from: COMMITS_PER_EPOCH + 1, what: "the first commit of an epoch", commitsPerRequest: 7 },
  ];
  for (const c of cases)
    test(`from ${c.what} (${c.from}), batches of ${c.commitsPerRequest}: completes, bans nobody, stores exactly the chain`, async () => {
      const { store } = await syncFrom(`node-${c.from}`, [every37, every23], c.from, {
        commitsPerRequest: c.commitsPerRequest,
      });
      assert.equal(store.watermarks.highestSynced, commits.length);
      assert.equal((await store.getCommittee(3))?.epoch, 3, "the committee of every epoch crossed is stored");
    });

  test("one server alone (every 37): answers that run past the end asked for are accepted", async () => {
    await syncFrom("alone-37", [every37], 0, { commitsPerRequest: 10 });
  });

  test("a node synced with batches of 13 serves one that starts from a checkpoint at 77 with batches of 100", async () => {
    const a = await syncFrom("a-13", [every37], 0, { commitsPerRequest: 13 });
    const aServer = await startServer(a.store);
    servers.push(aServer);
    const b = await syncFrom("b-from-a", [aServer], 77, { commitsPerRequest: 100 });
    assert.equal(b.store.watermarks.lowestAvailable, 78);
    // B holds certifiers where its own batches ended; it serves C with yet other settings.
    const bServer = await startServer(b.store);
    servers.push(bServer);
    const c = await syncFrom("c-from-b", [bServer], 200, { commitsPerRequest: 41 });
    assert.equal(c.store.watermarks.lowestAvailable, 201);
  });
});
