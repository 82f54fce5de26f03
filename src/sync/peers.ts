/**
 * What the engine knows about each peer: its advertised heights (PeerHeights) and how it has
 * behaved (PeerBalancer). Pure state with a clock passed in, so that it is unit-testable.
 *
 * - A peer with another genesis is off-chain, forever: it is never asked for data.
 * - A peer that sent invalid data is banned for `banDurationMs`; its work goes elsewhere.
 * - A peer with network errors backs off exponentially with jitter; it is used only when no
 *   healthy peer can serve the index ("failing peers last").
 * - Among healthy peers, measured throughput per request in flight decides, with some
 *   exploration of peers not yet measured.
 */
import { bytesEqual } from "../core/bytes.js";
import type { SyncOptions } from "./options.js";

export interface PeerState {
  readonly address: string;
  highest: number;
  lowest: number;
  highestDigest: Uint8Array | undefined;
  /** Genesis checked at least once. */
  known: boolean;
  offChain: boolean;
  bannedUntil: number;
  banCount: number;
  consecutiveFailures: number;
  retryAt: number;
  /** The failures that set `retryAt` were the peer asking us to wait (rate limit), not faults. */
  busy: boolean;
  /**
   * It refused commit `doubtedFrom` while still advertising it: until `doubtedUntil` (ms), its
   * advertised heights count only up to `doubtedFrom - 1`. Not a ban: it may serve what is below.
   */
  doubtedFrom: number;
  doubtedUntil: number;
  inflight: number;
  /** EWMA of bytes per second over completed fetches; undefined until measured. */
  bytesPerSecond: number | undefined;
  lastError: string;
  lastPushAt: number;
}

export class PeerSet {
  private readonly peers = new Map<string, PeerState>();

  constructor(
    addresses: readonly string[],
    private readonly genesisDigest: Uint8Array,
    private readonly options: SyncOptions,
    private readonly random: () => number = Math.random,
  ) {
    for (const a of addresses) this.add(a);
  }

  add(address: string): PeerState {
    let p = this.peers.get(address);
    if (p === undefined) {
      p = {
        address,
        highest: 0,
        lowest: 0,
        highestDigest: undefined,
        known: false,
        offChain: false,
        bannedUntil: 0,
        banCount: 0,
        consecutiveFailures: 0,
        retryAt: 0,
        busy: false,
        doubtedFrom: 0,
        doubtedUntil: 0,
        inflight: 0,
        bytesPerSecond: undefined,
        lastError: "",
        lastPushAt: 0,
      };
      this.peers.set(address, p);
    }
    return p;
  }

  get(address: string): PeerState | undefined {
    return this.peers.get(address);
  }

  all(): PeerState[] {
    return [...this.peers.values()];
  }

  /** Records a height report; a foreign genesis marks the peer off-chain. Returns false then. */
  updateHeights(
    address: string,
    report: {
      highest: number;
      lowest: number;
      genesisDigest: Uint8Array;
      highestDigest?: Uint8Array | undefined;
    },
    now = 0,
  ): boolean {
    const p = this.add(address);
    p.known = true;
    if (!bytesEqual(report.genesisDigest, this.genesisDigest)) {
      p.offChain = true;
      p.lastError = "serves another chain (genesis digest differs)";
      return false;
    }
    p.highest = p.doubtedUntil > now && report.highest >= p.doubtedFrom ? p.doubtedFrom - 1 : report.highest;
    p.lowest = report.lowest;
    p.highestDigest = report.highestDigest;
    return true;
  }

  /** A PushCommit hint: raises the peer's advertised height (a hint, checked when fetched). */
  hint(address: string, highest: number): void {
    const p = this.peers.get(address);
    if (p !== undefined && !p.offChain && highest > p.highest) p.highest = highest;
  }

  isUsable(p: PeerState, now: number): boolean {
    return p.known && !p.offChain && p.bannedUntil <= now;
  }

  /** Highest commit that usable peers advertise. */
  target(now: number): number {
    let t = 0;
    for (const p of this.peers.values()) if (this.isUsable(p, now)) t = Math.max(t, p.highest);
    return t;
  }

  /**
   * The best peer that can serve commits [start, end], or undefined. Healthy peers first (by
   * throughput per request in flight, sometimes exploring an unmeasured one), then peers in
   * backoff whose retry time has come, as a last resort.
   */
  pick(start: number, end: number, now: number, exclude?: ReadonlySet<string>): PeerState | undefined {
    const covering = [...this.peers.values()].filter(
      (p) => this.isUsable(p, now) && p.lowest <= start && p.highest >= end && !exclude?.has(p.address),
    );
    // A peer in a failure streak (unreachable, slow, busy) is a last resort, and gets one probe
    // at a time once its backoff has passed: a stalling peer then costs one deadline per backoff
    // period, which grows, rather than a share of the work every time.
    const candidates = covering.filter(
      (p) =>
        p.retryAt <= now && p.inflight < (p.consecutiveFailures === 0 ? this.options.maxRequestsPerPeer : 1),
    );
    const healthy = candidates.filter((p) => p.consecutiveFailures === 0);
    const pool = healthy.length > 0 ? healthy : candidates;
    if (pool.length === 0) return undefined;
    const unmeasured = pool.filter((p) => p.bytesPerSecond === undefined);
    if (
      unmeasured.length > 0 &&
      (unmeasured.length === pool.length || this.random() < this.options.explorationRate)
    )
      return unmeasured[Math.floor(this.random() * unmeasured.length)];
    let best: PeerState | undefined;
    let bestScore = -1;
    for (const p of pool) {
      const score = (p.bytesPerSecond ?? 0) / (1 + p.inflight);
      if (score > bestScore) {
        best = p;
        bestScore = score;
      }
    }
    return best;
  }

  recordSuccess(p: PeerState, bytes: number, elapsedMs: number): void {
    p.consecutiveFailures = 0;
    p.retryAt = 0;
    p.busy = false;
    if (bytes > 16 * 1024) {
      const sample = bytes / Math.max(elapsedMs / 1000, 0.001);
      p.bytesPerSecond = p.bytesPerSecond === undefined ? sample : 0.7 * p.bytesPerSecond + 0.3 * sample;
    } else if (p.bytesPerSecond === undefined) p.bytesPerSecond = 1; // measured, if not yet usefully
  }

  /**
   * A network error, deadline or refusal: exponential backoff with jitter, or the peer's own
   * retry hint (`busy`: it asked us to wait, which is no fault).
   */
  recordFailure(p: PeerState, error: string, now: number, retryAfterMs?: number, busy = false): void {
    p.consecutiveFailures++;
    p.lastError = error;
    p.busy = busy || retryAfterMs !== undefined;
    const exp = Math.min(
      this.options.backoffMaxMs,
      this.options.backoffBaseMs * 2 ** (p.consecutiveFailures - 1),
    );
    const delay = retryAfterMs ?? exp * (0.5 + this.random() * 0.5);
    p.retryAt = now + delay;
  }

  ban(p: PeerState, reason: string, now: number): void {
    p.bannedUntil = now + this.options.banDurationMs;
    p.banCount++;
    p.lastError = reason;
  }
}
