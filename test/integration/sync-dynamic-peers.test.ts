/**
 * The engine's dynamic peer set over real gRPC (issue 13 item 3): a node started with a single
 * peer whose store is pruned (it starts at a checkpoint past our head) cannot sync from it; the
 * engine says it needs peers (`onNeedPeers`, reason "pruned"), a good peer is added at runtime
 * with `addPeer`, and the node syncs completely from it, with the production network (PeerClient)
 * against real SyncServers on loopback. Nobody is banned: being pruned is no misbehaviour.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { NativeVerifier } from "../../src/crypto/index.js";
import { silentLogger } from "../../src/node/logger.js";
import { Store } from "../../src/store/index.js";
import { SyncEngine } from "../../src/sync/engine.js";
import { PeerClientNetwork } from "../../src/sync/network.js";
import type { StallReason } from "../../src/sync/stall.js";
import { type RunningServer, removeDir, startServer, tempDir, toUnit } from "../helpers/server.js";
import { assertStoreHoldsChain, checkpointAt, testChain, withTimeout } from "../helpers/sync-harness.js";

const { chain, commits } = testChain();
const PRUNED_BELOW = 61;

let dir: string;
const stores: Store[] = [];
const servers: RunningServer[] = [];
let good: RunningServer;
let pruned: RunningServer;

describe("sync engine over real gRPC: a good peer added at runtime rescues a node whose only peer pruned", () => {
  before(async () => {
    dir = await tempDir("dagsync-dynamic-peers-");
    const goodStore = await Store.open(join(dir, "good"), { genesis: chain.genesis.bytes });
    await goodStore.apply(commits.map((c) => toUnit(c)));
    const prunedStore = await Store.open(join(dir, "pruned"), {
      genesis: chain.genesis.bytes,
      checkpoint: checkpointAt(chain, commits, PRUNED_BELOW - 1),
    });
    await prunedStore.apply(commits.slice(PRUNED_BELOW - 1).map((c) => toUnit(c)));
    stores.push(goodStore, prunedStore);
    good = await startServer(goodStore);
    pruned = await startServer(prunedStore);
    servers.push(good, pruned);
  });
  after(async () => {
    for (const s of servers) await s.stop();
    for (const s of stores) await s.close().catch(() => {});
    await removeDir(dir);
  });

  test("onNeedPeers says 'pruned', addPeer brings the good peer in, and sync completes", async () => {
    const store = await Store.open(join(dir, "node"), { genesis: chain.genesis.bytes });
    stores.push(store);
    const network = new PeerClientNetwork();
    const needs: StallReason[] = [];
    const engine: SyncEngine = new SyncEngine({
      store,
      network,
      peers: [pruned.address],
      verifier: new NativeVerifier(),
      log: silentLogger(),
      options: { peerQueryIntervalMs: 60_000, needPeersIntervalMs: 200 },
      onNeedPeers: (reason) => {
        needs.push(reason);
        // What the node's discovery does: it finds a peer and adds it.
        if (needs.length === 2) engine.addPeer(good.address, "exchange");
      },
    });
    try {
      await withTimeout(engine.run(true), 30_000, "sync after the good peer was added");
    } finally {
      await engine.stop();
      network.close();
    }
    assert.ok(needs.length >= 2);
    assert.ok(
      needs.every((r) => r === "pruned"),
      `needed peers because the only one pruned: ${needs.join(", ")}`,
    );
    const statuses = new Map(engine.peerStatuses().map((p) => [p.address, p]));
    assert.equal(statuses.get(good.address)?.source, "exchange");
    assert.equal(statuses.get(good.address)?.working, true);
    assert.equal(statuses.get(pruned.address)?.source, "bootstrap");
    for (const p of statuses.values()) assert.equal(p.banCount, 0, `${p.address} was banned: ${p.lastError}`);
    assert.equal(store.watermarks.highestSynced, commits.length);
    await assertStoreHoldsChain(store, commits);
  });
});
