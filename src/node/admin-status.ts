/**
 * Admin/GetStatus as the node reports it: the sync engine's plain status snapshot, converted to
 * the Admin protobuf messages here, in the composition root, so that `sync` depends on no wire
 * format and `server` on no engine (DESIGN §1: `node` wires them).
 *
 * Numbers become the proto's 64-bit integers as they are: heights are commit indices, times are
 * ms of the engine's clock (epoch ms in production), 0 meaning "not set".
 */
import { create } from "@bufbuild/protobuf";
import { type PeerStatus, PeerStatusSchema } from "../gen/dagsync/v1/admin_pb.js";
import type { NodeStatus } from "../server/index.js";
import type { PeerStatusSnapshot, SyncStatusSnapshot } from "../sync/index.js";

export function toPeerStatus(s: PeerStatusSnapshot): PeerStatus {
  return create(PeerStatusSchema, {
    address: s.address,
    highest: BigInt(s.highest),
    lowest: BigInt(s.lowest),
    score: s.score,
    inFlight: s.inFlight,
    bytesPerSecond: s.bytesPerSecond,
    lastError: s.lastError,
    banned: s.banned,
    bannedUntilMs: BigInt(s.bannedUntilMs),
    offChain: s.offChain,
    banCount: s.banCount,
    retryAtMs: BigInt(s.retryAtMs),
    consecutiveFailures: s.consecutiveFailures,
    source: s.source,
    working: s.working,
  });
}

/** What a full node adds to Admin/GetStatus, from its sync engine's status. */
export function nodeStatusOf(s: SyncStatusSnapshot, role: string): NodeStatus {
  return {
    syncState: s.phase,
    role,
    targetCommit: BigInt(s.target),
    peers: s.peers.map(toPeerStatus),
    stallReason: s.stall === undefined ? "" : `${s.stall.reason}: ${s.stall.detail}`,
    stalledSinceMs: BigInt(Math.round(s.stall?.sinceMs ?? 0)),
  };
}
