/**
 * Admin/GetStatus from the sync engine's plain status (src/node/admin-status.ts): every field
 * of a peer snapshot reaches its PeerStatus, 64-bit fields as bigints, and a stall becomes its
 * reason and since-time (empty and 0 when not stalled).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { nodeStatusOf, toPeerStatus } from "../../src/node/admin-status.js";
import type { PeerStatusSnapshot, SyncStatusSnapshot } from "../../src/sync/index.js";

const peer: PeerStatusSnapshot = {
  address: "a:9100",
  source: "bootstrap",
  working: true,
  benchedUntilMs: 0,
  highest: 120,
  lowest: 3,
  score: 1.5,
  inFlight: 2,
  bytesPerSecond: 4.5,
  lastError: "FetchBlocks: deadline exceeded",
  banned: true,
  bannedUntilMs: 1_700_000_000_123,
  offChain: false,
  banCount: 1,
  retryAtMs: 1_700_000_000_456,
  consecutiveFailures: 3,
};

describe("Admin status from the sync engine's snapshot", () => {
  test("a peer snapshot becomes a PeerStatus field by field", () => {
    const s = toPeerStatus(peer);
    assert.equal(s.address, "a:9100");
    assert.equal(s.highest, 120n);
    assert.equal(s.lowest, 3n);
    assert.equal(s.score, 1.5);
    assert.equal(s.inFlight, 2);
    assert.equal(s.bytesPerSecond, 4.5);
    assert.equal(s.lastError, peer.lastError);
    assert.equal(s.banned, true);
    assert.equal(s.bannedUntilMs, 1_700_000_000_123n);
    assert.equal(s.offChain, false);
    assert.equal(s.banCount, 1);
    assert.equal(s.retryAtMs, 1_700_000_000_456n);
    assert.equal(s.consecutiveFailures, 3);
  });

  test("the node status carries phase, target, peers and the stall", () => {
    const base: SyncStatusSnapshot = {
      phase: "syncing",
      highestSynced: 10,
      target: 120,
      commitsApplied: 10,
      blocksApplied: 40,
      bytesApplied: 4000,
      usablePeers: 1,
      stall: undefined,
      peers: [peer],
    };
    const ok = nodeStatusOf(base, "full");
    assert.equal(ok.syncState, "syncing");
    assert.equal(ok.role, "full");
    assert.equal(ok.targetCommit, 120n);
    assert.equal(ok.peers?.[0]?.address, "a:9100");
    assert.equal(ok.stallReason, "");
    assert.equal(ok.stalledSinceMs, 0n);
    const stalled = nodeStatusOf(
      {
        ...base,
        phase: "stalled",
        stall: { reason: "unreachable", detail: "every peer is down", sinceMs: 12.6 },
      },
      "full",
    );
    assert.equal(stalled.syncState, "stalled");
    assert.equal(stalled.stallReason, "unreachable: every peer is down");
    assert.equal(stalled.stalledSinceMs, 13n);
  });
});
