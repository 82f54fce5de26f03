/**
 * What the sync engine tells the world about itself, as plain data: its progress, why it is
 * stalled, and what it knows of each peer. The node turns these into Admin replies, log lines
 * and progress bars; nothing here depends on a wire format, so `sync` stays free of the Admin
 * protobuf types (DESIGN §1: `node` wires `server` and `sync`).
 */
import type { PeerSource, PeerState } from "./peers.js";
import type { StallDiagnosis } from "./stall.js";

/** "stalled": no source can serve the next commit (see `SyncProgress.stall` for why). */
export type SyncPhase = "starting" | "syncing" | "synced" | "stalled" | "stopped";

/** Why the node is stalled, and since when. */
export interface SyncStall extends StallDiagnosis {
  /** When no source could serve the next commit any more, ms (the engine's clock). */
  readonly sinceMs: number;
}

export interface SyncProgress {
  readonly phase: SyncPhase;
  readonly highestSynced: number;
  readonly target: number;
  readonly commitsApplied: number;
  readonly blocksApplied: number;
  readonly bytesApplied: number;
  readonly usablePeers: number;
  /** Set while the phase is "stalled". */
  readonly stall: SyncStall | undefined;
}

/** One peer as the engine sees it, at one moment (times in ms of the engine's clock). */
export interface PeerStatusSnapshot {
  readonly address: string;
  /** Where it was learned from (the preferred source when several named it). */
  readonly source: PeerSource;
  /** In the working set (used for sync); otherwise known and waiting. */
  readonly working: boolean;
  /** Out of the working set until then (after dial failures, or swapped out), or 0. */
  readonly benchedUntilMs: number;
  readonly highest: number;
  readonly lowest: number;
  /** Measured throughput per request in flight, bytes/s (0 until measured). */
  readonly score: number;
  readonly inFlight: number;
  /** Measured throughput, bytes/s (0 until measured). */
  readonly bytesPerSecond: number;
  readonly lastError: string;
  readonly banned: boolean;
  /** When the ban ends, or 0 when not banned. */
  readonly bannedUntilMs: number;
  readonly offChain: boolean;
  readonly banCount: number;
  /** When it may be tried again after failures, or 0 when it may be now. */
  readonly retryAtMs: number;
  readonly consecutiveFailures: number;
}

/** The engine's status: its progress and its peers. */
export interface SyncStatusSnapshot extends SyncProgress {
  readonly peers: readonly PeerStatusSnapshot[];
}

/** A peer's snapshot at `now`. */
export function peerStatusSnapshot(p: PeerState, now: number): PeerStatusSnapshot {
  return {
    address: p.address,
    source: p.source,
    working: p.working,
    benchedUntilMs: p.benchedUntil > now ? Math.round(p.benchedUntil) : 0,
    highest: p.highest,
    lowest: p.lowest,
    score: (p.bytesPerSecond ?? 0) / (1 + p.inflight),
    inFlight: p.inflight,
    bytesPerSecond: p.bytesPerSecond ?? 0,
    lastError: p.lastError,
    banned: p.bannedUntil > now,
    bannedUntilMs: p.bannedUntil > now ? Math.round(p.bannedUntil) : 0,
    offChain: p.offChain,
    banCount: p.banCount,
    retryAtMs: p.retryAt > now ? Math.round(p.retryAt) : 0,
    consecutiveFailures: p.consecutiveFailures,
  };
}
