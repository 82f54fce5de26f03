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
 *
 * The set is dynamic (DESIGN §9): peers join and leave at runtime, each with the sources it came
 * from (committee, bootstrap, exchange). At most `maxSyncPeers` of them form the working set,
 * committee first, then bootstrap, then exchange (`rebalance`); only working peers are asked
 * their heights or fetched from. The rest are known and wait: a working peer that fails
 * `maxDialFailures` calls in a row, or that cannot serve the next commit when nobody can
 * (`rotate`), is benched so that one of them takes its place, and comes back after its bench.
 * Benching needs a replacement: with no other known peer, a failing peer keeps its place.
 */
import { bytesEqual } from "../core/bytes.js";
import type { SyncOptions } from "./options.js";

/**
 * Where a peer was learned from, in order of preference for the working set. Archives (DESIGN §10,
 * `--archive`) are sources too, always in the working set and not counted in `maxSyncPeers`: an
 * operator named them, and they are the source of last resort for pruned history.
 */
export const PEER_SOURCES = ["committee", "bootstrap", "exchange", "archive"] as const;
export type PeerSource = (typeof PEER_SOURCES)[number];

/** A peer to start with: a bare address is a bootstrap peer (`--peer`). */
export type PeerEntry = string | { readonly address: string; readonly source: PeerSource };

const SOURCE_RANK: Readonly<Record<PeerSource, number>> = {
  committee: 0,
  bootstrap: 1,
  exchange: 2,
  archive: 3,
};

/** Counted in `maxSyncPeers` (every source but archives). */
const counted = (p: { readonly source: PeerSource }) => p.source !== "archive";

export interface PeerState {
  readonly address: string;
  /** The preferred of `sources`: what status and metrics show. */
  source: PeerSource;
  /** Every source that named this peer; it leaves when none does any more. */
  readonly sources: Set<PeerSource>;
  /** Order of arrival, for a stable working set. */
  readonly seq: number;
  /** In the working set: asked its heights and fetched from. */
  working: boolean;
  /** Its first height query since it entered the working set has gone out (a dial). */
  dialed: boolean;
  /** Calls failed in a row without an answer (refused, unreachable, deadline): not busy, not bans. */
  dialFailures: number;
  /** Times it left the working set for dial failures since it last answered (its backoff exponent). */
  demotions: number;
  /** Out of the working set until then, ms (after dial failures, or swapped out for a fresh peer). */
  benchedUntil: number;
  /** Aborted when the peer leaves the set: its calls in flight end, and their work goes elsewhere. */
  readonly leaving: AbortController;
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
  /** Bytes reserved by the fetches in flight to it (they share its connection). */
  inflightBytes: number;
  /**
   * ∫ inflight dt (ms) up to `inflightAreaAt`: a request's mean concurrency is the growth of this
   * over its lifetime divided by that lifetime.
   */
  inflightArea: number;
  inflightAreaAt: number;
  /**
   * EWMA of the peer's delivery rate, bytes per second, over completed fetches: each fetch's own
   * rate times the mean number of calls in flight beside it, so that the figure is the peer's
   * (its link's) rate, not one request's share of it. Undefined until measured.
   */
  bytesPerSecond: number | undefined;
  lastError: string;
  lastPushAt: number;
}

export class PeerSet {
  private readonly peers = new Map<string, PeerState>();
  /**
   * Bans of peers that left, until they end: leaving and coming back (say, through exchange) does
   * not lift a ban. Pruned of expired entries whenever a peer leaves.
   */
  private readonly departedBans = new Map<string, { until: number; count: number }>();
  private nextSeq = 0;

  constructor(
    peers: readonly PeerEntry[],
    private readonly genesisDigest: Uint8Array,
    private readonly options: SyncOptions,
    private readonly random: () => number = Math.random,
  ) {
    for (const e of peers) {
      if (typeof e === "string") this.add(e);
      else this.add(e.address, e.source);
    }
    this.rebalance(0);
  }

  /**
   * Adds a peer, or another source to a known one. A new peer joins the working set at once when
   * it has room (`rebalance` then puts the preferred sources first).
   */
  add(address: string, source: PeerSource = "bootstrap"): PeerState {
    let p = this.peers.get(address);
    if (p !== undefined) {
      p.sources.add(source);
      if (SOURCE_RANK[source] < SOURCE_RANK[p.source]) p.source = source;
      return p;
    }
    const ban = this.departedBans.get(address);
    this.departedBans.delete(address);
    const room =
      ban === undefined &&
      (source === "archive" || this.working().filter(counted).length < this.options.maxSyncPeers);
    p = {
      address,
      source,
      sources: new Set([source]),
      seq: this.nextSeq++,
      working: room,
      dialed: false,
      dialFailures: 0,
      demotions: 0,
      benchedUntil: 0,
      leaving: new AbortController(),
      highest: 0,
      lowest: 0,
      highestDigest: undefined,
      known: false,
      offChain: false,
      bannedUntil: ban?.until ?? 0,
      banCount: ban?.count ?? 0,
      consecutiveFailures: 0,
      retryAt: 0,
      busy: false,
      doubtedFrom: 0,
      doubtedUntil: 0,
      inflight: 0,
      inflightBytes: 0,
      inflightArea: 0,
      inflightAreaAt: 0,
      bytesPerSecond: undefined,
      lastError: "",
      lastPushAt: 0,
    };
    this.peers.set(address, p);
    return p;
  }

  /**
   * Removes `source`'s claim on the peer (every claim when `source` is undefined); the peer leaves
   * when no source names it any more. Returns it then: the caller ends its calls in flight
   * (`leaving`), whose work goes back to the plan. Leaving is no fault: nothing is held against it,
   * but a ban it earned is remembered until it ends.
   */
  remove(address: string, source?: PeerSource, now = 0): PeerState | undefined {
    const p = this.peers.get(address);
    if (p === undefined) return undefined;
    if (source !== undefined) {
      p.sources.delete(source);
      if (p.sources.size > 0) {
        p.source = [...p.sources].sort((a, b) => SOURCE_RANK[a] - SOURCE_RANK[b])[0]!;
        return undefined;
      }
    }
    this.peers.delete(address);
    p.working = false;
    for (const [a, b] of this.departedBans) if (b.until <= now) this.departedBans.delete(a);
    if (p.bannedUntil > now) this.departedBans.set(address, { until: p.bannedUntil, count: p.banCount });
    p.leaving.abort();
    return p;
  }

  get(address: string): PeerState | undefined {
    return this.peers.get(address);
  }

  /** The peer is still in the set (not removed since `p` was handed out). */
  has(p: PeerState): boolean {
    return this.peers.get(p.address) === p;
  }

  /** Every known peer, working or not. */
  all(): PeerState[] {
    return [...this.peers.values()];
  }

  /** The working set: the peers used for sync. */
  working(): PeerState[] {
    return this.all().filter((p) => p.working);
  }

  /** May be in the working set now: on-chain, not banned, not benched. */
  eligible(p: PeerState, now: number): boolean {
    return !p.offChain && p.bannedUntil <= now && p.benchedUntil <= now;
  }

  /** Known peers that could take a working place now (eligible, not working). */
  standby(now: number): PeerState[] {
    return this.all().filter((p) => !p.working && this.eligible(p, now));
  }

  /**
   * The peers whose state explains a stall: all but the standby ones, which are not used and so
   * neither serve nor fail (the working set, and peers out of it because they are banned,
   * off-chain or benched).
   */
  diagnosable(now: number): PeerState[] {
    return this.all().filter((p) => p.working || !this.eligible(p, now));
  }

  /**
   * Chooses the working set: the first `maxSyncPeers` eligible peers by source (committee,
   * bootstrap, exchange), keeping those already working before newcomers of the same source, then
   * by arrival. Returns the peers that entered it (each must be dialed: its heights asked).
   */
  rebalance(now: number): PeerState[] {
    const ranked = this.all()
      .filter((p) => this.eligible(p, now))
      .sort(
        (a, b) =>
          SOURCE_RANK[a.source] - SOURCE_RANK[b.source] ||
          Number(b.working) - Number(a.working) ||
          a.seq - b.seq,
      );
    const chosen = new Set([
      ...ranked.filter(counted).slice(0, this.options.maxSyncPeers),
      ...ranked.filter((p) => !counted(p)),
    ]);
    const entered: PeerState[] = [];
    for (const p of this.peers.values()) {
      const working = chosen.has(p);
      if (working && !p.working) {
        p.dialed = false;
        entered.push(p);
      }
      p.working = working;
    }
    return entered;
  }

  /**
   * No working peer can serve the next commit: benches working peers that `useless` says cannot
   * (for `peerRestMs`), as many as standby peers can replace, and fills their places. Returns the
   * peers benched.
   */
  rotate(now: number, useless: (p: PeerState) => boolean): PeerState[] {
    const room = this.standby(now).length;
    if (room === 0) return [];
    const out = this.working()
      .filter(useless)
      .sort((a, b) => SOURCE_RANK[b.source] - SOURCE_RANK[a.source] || b.seq - a.seq)
      .slice(0, room);
    for (const p of out) {
      p.benchedUntil = now + this.options.peerRestMs;
      p.working = false;
    }
    if (out.length > 0) this.rebalance(now);
    return out;
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
    const p = this.peers.get(address) ?? this.add(address); // (never another source for a known peer)
    p.known = true;
    p.dialFailures = 0; // it answered
    p.demotions = 0;
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
    return p.working && p.known && !p.offChain && p.bannedUntil <= now;
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
   * backoff whose retry time has come, as a last resort. Undefined also when a much faster peer
   * (`busyPeerPreference`) will have a free slot before long: the work waits for it.
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
    const best = this.bestMeasured(pool);
    // A much faster peer that is only out of slots for now gets the work once a slot frees, rather
    // than a slow idle peer now: on a link a tenth as fast, a request finishes far later than it
    // would after waiting, and the head of the chain waits on it (DESIGN §4 item 4's balancer).
    if (best !== undefined && best.bytesPerSecond !== undefined) {
      const waiting = covering.filter(
        (p) =>
          p.consecutiveFailures === 0 &&
          p.retryAt <= now &&
          p.inflight >= this.options.maxRequestsPerPeer &&
          p.bytesPerSecond !== undefined,
      );
      const faster = this.bestMeasured(waiting);
      if (faster !== undefined && score(faster) > this.options.busyPeerPreference * score(best))
        return undefined;
    }
    return best;
  }

  /** The peer of `pool` with the best throughput per request in flight. */
  private bestMeasured(pool: readonly PeerState[]): PeerState | undefined {
    let best: PeerState | undefined;
    let bestScore = -1;
    for (const p of pool) {
      if (score(p) > bestScore) {
        best = p;
        bestScore = score(p);
      }
    }
    return best;
  }

  /**
   * A fetch of `bytes` completed in `elapsedMs`, with on average `concurrency` calls (itself
   * included) in flight to the peer meanwhile: they shared its link, so the peer's rate is this
   * fetch's rate times that.
   */
  recordSuccess(p: PeerState, bytes: number, elapsedMs: number, concurrency = 1): void {
    p.consecutiveFailures = 0;
    p.dialFailures = 0;
    p.demotions = 0;
    p.retryAt = 0;
    p.busy = false;
    if (bytes > 16 * 1024) {
      const sample = (bytes / Math.max(elapsedMs / 1000, 0.001)) * Math.max(1, concurrency);
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
    if (!p.busy) p.dialFailures++;
  }

  /**
   * After `maxDialFailures` failures in a row, a working peer leaves the working set, when a
   * standby peer can take its place: benched for `dialBackoffBaseMs`, doubled each time it leaves
   * again before it answers (up to `dialBackoffMaxMs`). Returns whether it left.
   */
  benchIfFailing(p: PeerState, now: number): boolean {
    const { maxDialFailures, dialBackoffBaseMs, dialBackoffMaxMs } = this.options;
    if (!p.working || p.dialFailures < maxDialFailures || this.standby(now).length === 0) return false;
    p.benchedUntil = now + Math.min(dialBackoffMaxMs, dialBackoffBaseMs * 2 ** p.demotions);
    p.demotions++;
    p.dialFailures = 0;
    p.working = false;
    this.rebalance(now);
    return true;
  }

  ban(p: PeerState, reason: string, now: number): void {
    p.bannedUntil = now + this.options.banDurationMs;
    p.banCount++;
    p.lastError = reason;
  }
}

/** What one more request to `p` can expect: its rate, shared with the calls already in flight. */
export function score(p: PeerState): number {
  return (p.bytesPerSecond ?? 0) / (1 + p.inflight);
}
