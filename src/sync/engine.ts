/**
 * The sync engine (DESIGN.md §4), modelled on Sui's StateSyncEventLoop and Mysticeti's
 * CommitSyncer: one loop owns all state; I/O runs in tasks it spawns, whose results come back as
 * synchronous handlers that update the state and wake the loop. Nothing else mutates it.
 *
 * The chain ahead of the store is cut into segments (commit ranges, ≤ 100 commits). Each segment
 * moves through a small state machine:
 *
 *   idle → fetching_commits → fetched → (verified) fetching_blocks → ready → applied
 *
 * - Commit batches are fetched from several peers at once, within `maxSegmentsAhead` and the
 *   `maxInflightBytes` budget (the segment at the head is always allowed, so progress never
 *   deadlocks on the budget).
 * - A fetched batch is verified as soon as its predecessor is: then the committee of its epoch
 *   and the digest it must link to are known, so each batch gets the full check (links, one
 *   epoch, certification by a quorum of that epoch) before any of its blocks is fetched. A batch
 *   cut short (epoch boundary, size, invalid suffix) keeps its valid prefix; the rest becomes a
 *   new segment.
 * - Blocks are fetched in chunks of ≤ 1000 refs from any peer holding the segment, checked by
 *   digest against the verified refs; a partial answer keeps its prefix and re-queues the rest.
 * - Ready segments are applied strictly in order, each commit a complete unit, in one atomic
 *   store batch; a crash resumes from the watermark.
 *
 * The batch contract (DESIGN §3): a FetchCommits answer ends wherever the server can certify,
 * sometimes past the end asked for. A batch is never cut: one that runs past its segment fills
 * the following segments (`absorbFollowing`), and a batch fetched for a segment that was filled in
 * part loses the covered prefix when it is verified.
 *
 * Faults: a ban needs evidence (a bad signature, digest, link or quorum, undecodable bytes): the
 * peer is refused for `banDurationMs` and its work returns to the pool. Unreachable, slow and busy
 * peers back off exponentially with jitter, and get one probe at a time until they answer again.
 * A peer that refuses a range it advertised is asked its heights again first (it may have
 * pruned); if it still advertises the range, its heights above it are not believed for a while.
 * Off-chain peers are never used. When no peer can serve the next commit the engine says why
 * (`checkStall`: log, status, metric) and keeps retrying. Hostile peers cannot make us store
 * anything that did not verify, and cannot stop us while one honest peer remains.
 */
import { setMaxListeners } from "node:events";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import type { PeerError } from "../client/index.js";
import {
  type CommitEntry,
  type CommitteeView,
  nextCommitteeFrom,
  parseSignedBlock,
  type SignatureVerifier,
  toHex,
  VerifyError,
  verifyBlocksAgainstRefs,
  verifyCommitBatch,
  verifySignedBlock,
} from "../core/index.js";
import type { PeerStatus } from "../gen/dagsync/v1/admin_pb.js";
import { PeerStatusSchema } from "../gen/dagsync/v1/admin_pb.js";
import { type BlockRef, CommitRefSchema } from "../gen/dagsync/v1/types_pb.js";
import type { ApplyUnit, BlockKeyRef, Store } from "../store/index.js";
import { SubDagBroadcast } from "./broadcast.js";
import { SyncError } from "./errors.js";
import type { SyncMetrics } from "./metrics.js";
import type { SyncNetwork } from "./network.js";
import { DEFAULT_SYNC_OPTIONS, type SyncOptions } from "./options.js";
import { PeerSet, type PeerState } from "./peers.js";
import { diagnoseStall, STALL_REASONS, type StallDiagnosis } from "./stall.js";

interface Verified {
  readonly commits: CommitEntry[];
  readonly certifiers: Uint8Array[];
  readonly committee: CommitteeView;
  /** Committee of the next epoch when the last commit ends its epoch. */
  readonly nextCommittee: CommitteeView | undefined;
  readonly refs: BlockRef[];
  /** `refEnds[k]`: the number of refs of commits[0..k], so commit k owns refs [refEnds[k-1], refEnds[k]). */
  readonly refEnds: number[];
}

/** A run of `Verified.refs` still to fetch: [offset, offset + count). */
interface Chunk {
  offset: number;
  count: number;
  fetching: boolean;
}

type SegmentState =
  | { readonly kind: "idle" }
  | { readonly kind: "fetching_commits"; readonly peer: string; readonly requestStart: number }
  | {
      readonly kind: "fetched";
      /**
       * Index of `commits[0]`: the start asked for. The segment may start later by the time the
       * batch is verified, when a batch before it ran past its end and filled part of it.
       */
      readonly requestStart: number;
      readonly commits: Uint8Array[];
      readonly certifiers: Uint8Array[];
      readonly peer: string;
    }
  | {
      readonly kind: "fetching_blocks";
      readonly verified: Verified;
      readonly chunks: Chunk[];
      /** Fetched blocks, aligned with `verified.refs`. */
      readonly blocks: (Uint8Array | undefined)[];
    }
  | { readonly kind: "ready"; readonly verified: Verified; readonly blocks: (Uint8Array | undefined)[] }
  | { readonly kind: "applying"; readonly verified: Verified };

/** A segment ready to apply, with its state narrowed. */
interface ReadySegment {
  readonly seg: Segment;
  readonly state: Extract<SegmentState, { kind: "ready" }>;
}

interface Segment {
  start: number;
  end: number;
  state: SegmentState;
  /** Bytes this segment holds (fetched, not yet applied). */
  bytes: number;
}

/** "stalled": no source can serve the next commit (see `SyncProgress.stall` for why). */
export type SyncPhase = "starting" | "syncing" | "synced" | "stalled" | "stopped";

export interface SyncEngineConfig {
  readonly store: Store;
  readonly network: SyncNetwork;
  readonly peers: readonly string[];
  readonly verifier: SignatureVerifier;
  readonly log: Logger;
  readonly options?: Partial<SyncOptions> | undefined;
  readonly metrics?: SyncMetrics | undefined;
  readonly now?: (() => number) | undefined;
  readonly random?: (() => number) | undefined;
  /**
   * Blocks already at hand (near-tip blocks from the live channel), by digest. They are used
   * only where a verified commit references their digest, so they need no trust.
   */
  readonly nearTipBlocks?: ((digest: Uint8Array) => Uint8Array | undefined) | undefined;
  /**
   * Called with the refs of the blocks of each applied store write and their epoch (one per
   * write), so that a near-tip cache can drop them and what is now too old to be committed.
   */
  readonly onBlocksApplied?: ((refs: readonly BlockKeyRef[], epoch: number) => void) | undefined;
}

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

/** The first commit a store that started from a checkpoint (or genesis) lacks. */
function marks0(store: Store): number {
  return store.watermarks.lowestAvailable;
}

/** The position in a batch of the commit that owns ref number `ref` (see `Verified.refEnds`). */
function commitPosition(refEnds: readonly number[], ref: number): number {
  let lo = 0;
  let hi = refEnds.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (refEnds[mid]! > ref) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Starting estimate of a block's size, bytes, before any is measured. */
const INITIAL_BLOCK_ESTIMATE = 4096;

export class SyncEngine {
  readonly options: SyncOptions;
  readonly broadcast: SubDagBroadcast;
  readonly peers: PeerSet;
  private readonly store: Store;
  private readonly network: SyncNetwork;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly chainId: string;
  private segments: Segment[] = [];
  private readonly committees = new Map<number, CommitteeView>();
  private readonly controller = new AbortController();
  private wake: (() => void) | undefined;
  private applying = false;
  private applyPromise: Promise<void> = Promise.resolve();
  private requests = 0;
  private inflightBytes = 0;
  private reservedBytes = 0;
  private blockEstimate = INITIAL_BLOCK_ESTIMATE;
  private heightsTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  /** Completed rounds of height queries. */
  private heightRounds = 0;
  /**
   * The height round in progress: peers still to ask (each waits for a free slot under
   * `maxRequestsPerPeer`) and answers outstanding. At most one runs and one more is queued, so
   * that a flood of PushCommit hints costs at most one extra round.
   */
  private heightRound: { due: PeerState[]; outstanding: number } | undefined;
  private heightRoundQueued = false;
  /** Since when no source could serve the next commit (before the grace period ends). */
  private noSourceSince: number | undefined;
  private stall: SyncStall | undefined;
  private everSynced = false;
  /** Highest commit verified ahead of the store (its blocks may still be missing). */
  private highestVerified = 0;
  private runUntilSynced = false;
  private phase: SyncPhase = "starting";
  private fatal: SyncError | undefined;
  /** Peers that refused a commit they advertised: the commit, and the height query count then. */
  private readonly suspects = new Map<string, { index: number; seq: number }>();
  /** Height queries launched so far: an answer judges a refusal only if asked after it. */
  private heightQuerySeq = 0;
  private readonly checkpointDisagreements = new Set<string>();
  private readonly stats = { commitsApplied: 0, blocksApplied: 0, bytesApplied: 0 };

  constructor(private readonly config: SyncEngineConfig) {
    this.options = { ...DEFAULT_SYNC_OPTIONS, ...config.options };
    this.store = config.store;
    this.network = config.network;
    this.log = config.log;
    this.now = config.now ?? (() => Date.now());
    this.chainId = config.store.genesis.genesis.chainId;
    this.peers = new PeerSet(config.peers, config.store.genesis.digest, this.options, config.random);
    this.broadcast = new SubDagBroadcast(config.store, this.options.subscriberBufferCommits);
    setMaxListeners(0, this.controller.signal); // every request in flight listens to it
  }

  get progress(): SyncProgress {
    const now = this.now();
    return {
      phase: this.phase,
      highestSynced: this.store.watermarks.highestSynced,
      target: Math.max(this.peers.target(now), this.store.watermarks.highestSynced),
      ...this.stats,
      usablePeers: this.peers.all().filter((p) => this.peers.isUsable(p, now)).length,
      stall: this.stall,
    };
  }

  /**
   * Runs until stopped, or, with `untilSynced`, until the store holds the highest commit usable
   * peers advertise (after at least one round of height queries). With `untilSynced`, a stall
   * that lasts `maxStallMs` ends the run with a SyncError("stalled") that says why.
   */
  async run(untilSynced = false): Promise<void> {
    const marks = this.store.watermarks;
    const committee = await this.store.getCommittee(marks.epoch);
    if (committee === undefined)
      throw new SyncError("no_committee", `store has no committee for epoch ${marks.epoch}`);
    this.committees.set(marks.epoch, committee);
    this.runUntilSynced = untilSynced;
    this.phase = "syncing";
    this.guard("height query", () => this.queryHeights());
    this.heightsTimer = setInterval(
      () => this.guard("height query", () => this.queryHeights()),
      this.options.peerQueryIntervalMs,
    );
    // Wakes the loop for retries after a backoff and for stall checks, which nothing else would.
    this.tickTimer = setInterval(() => this.kick(), this.options.tickIntervalMs);
    try {
      while (!this.controller.signal.aborted) {
        this.guard("step", () => this.step());
        const synced = this.isSynced();
        if (this.fatal === undefined) this.guard("stall check", () => this.checkStall(synced));
        if (this.fatal !== undefined) {
          // Nothing more will be applied: cancel the requests in flight rather than let them run on.
          this.controller.abort();
          throw this.fatal;
        }
        if (synced && this.phase !== "synced") {
          // Following the tip flips between syncing and synced at every new commit: only the
          // first catch-up is news at info.
          const at = this.store.watermarks.highestSynced;
          if (this.everSynced) this.log.debug({ highest: at }, "synced");
          else this.log.info({ highest: at }, "synced");
          this.everSynced = true;
        }
        this.phase = synced ? "synced" : this.stall !== undefined ? "stalled" : "syncing";
        if (untilSynced && synced) break;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      clearInterval(this.heightsTimer);
      clearInterval(this.tickTimer);
      if (!untilSynced || this.controller.signal.aborted) this.phase = "stopped";
    }
  }

  /**
   * Runs `fn`, one of the engine's own handlers; if it throws (a bug), the engine stops with a
   * SyncError("internal") instead of leaving an unhandled rejection behind.
   */
  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.fatal ??= new SyncError(
        "internal",
        `${what} failed: ${e instanceof Error ? e.message : String(e)}`,
      );
      this.log.error({ err: e }, `sync engine: ${what} failed`);
      this.kick();
    }
  }

  /**
   * Starts an I/O task and settles it through guarded handlers (see `guard`); a task that throws
   * before returning its promise (a malformed address, say) fails like any call.
   */
  private spawn<T>(
    what: string,
    task: () => Promise<T>,
    onOk: (value: T) => void,
    onError: (e: unknown) => void,
  ): void {
    Promise.resolve()
      .then(task)
      .then(
        (value) => this.guard(what, () => onOk(value)),
        (e: unknown) => this.guard(what, () => onError(e)),
      );
  }

  /**
   * Updates the stall diagnosis (DESIGN §4 item 7). A node is stalled once no source could serve
   * the next commit for `stallGraceMs`; it says so once per reason, not every tick, and stays
   * stalled until it makes progress or a healthy peer can serve again (not on every retry).
   */
  private checkStall(synced: boolean): void {
    const now = this.now();
    const next = this.firstNeededCommit();
    const diagnosis = synced
      ? undefined
      : diagnoseStall(this.peers.all(), next, now, this.highestVerified >= next);
    const m = this.config.metrics;
    if (diagnosis === undefined) {
      // Some peer that has not failed since its last success can serve `next` (or we are synced).
      this.noSourceSince = undefined;
      const stall = this.stall;
      if (stall === undefined) return;
      this.stall = undefined;
      for (const reason of STALL_REASONS) m?.stalled.set({ reason }, 0);
      this.log.info(
        { commit: next, stalledSeconds: Math.round((now - stall.sinceMs) / 1000) },
        `sync resumed: a peer can serve commit ${next} again`,
      );
      return;
    }
    this.noSourceSince ??= now;
    if (this.stall === undefined && now - this.noSourceSince < this.options.stallGraceMs) return;
    const previous = this.stall;
    this.stall = { ...diagnosis, sinceMs: previous?.sinceMs ?? this.noSourceSince };
    if (previous?.reason !== diagnosis.reason) {
      for (const reason of STALL_REASONS) m?.stalled.set({ reason }, reason === diagnosis.reason ? 1 : 0);
      this.log.warn(
        { reason: diagnosis.reason, commit: next },
        `sync stalled (${diagnosis.reason}): ${diagnosis.detail}; still retrying`,
      );
    }
    if (this.runUntilSynced && now - this.stall.sinceMs >= this.options.maxStallMs)
      this.fatal = new SyncError(
        "stalled",
        `gave up after ${Math.round((now - this.stall.sinceMs) / 1000)} s without a source (${diagnosis.reason}): ${diagnosis.detail}`,
      );
  }

  /**
   * The lowest commit whose data we still lack: after the store's head, or, when the head
   * segment's commits are verified, the commit of its first block still to fetch (a batch may
   * run past what one peer holds, so serving its first commit is not enough).
   */
  private firstNeededCommit(): number {
    const head = this.segments[0];
    const state = head?.state;
    if (state?.kind === "fetching_blocks") {
      const first = state.chunks.reduce((min, c) => Math.min(min, c.offset), Number.POSITIVE_INFINITY);
      const commit = state.verified.commits[commitPosition(state.verified.refEnds, first)];
      if (commit !== undefined) return commit.index;
    }
    return this.store.watermarks.highestSynced + 1;
  }

  /** Stops fetching and waits for a store write in progress, so that the store can close. */
  async stop(): Promise<void> {
    this.phase = "stopped";
    this.controller.abort();
    clearInterval(this.heightsTimer);
    clearInterval(this.tickTimer);
    this.kick();
    await this.applyPromise;
  }

  private kick(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** The committee of the epoch the next commit belongs to (once `run` has started). */
  currentCommittee(): CommitteeView | undefined {
    return this.committees.get(this.store.watermarks.epoch);
  }

  /**
   * A PushCommit hint. Never trusted, and not even attributed: the server knows a pusher by IP
   * only, and several peers may share one. It just makes us ask every peer for its height now
   * instead of at the next interval, and only peers that confirm serve the new range.
   */
  onPushCommit(peerHost: string, highestSynced: number): void {
    this.log.debug({ peer: peerHost, highest: highestSynced }, "push commit hint");
    this.guard("height query", () => this.queryHeights());
  }

  isSynced(): boolean {
    const now = this.now();
    if (this.heightRounds === 0) return false;
    const usable = this.peers.all().some((p) => this.peers.isUsable(p, now));
    return (
      usable &&
      this.store.watermarks.highestSynced >= this.peers.target(now) &&
      !this.segments.some((s) => s.state.kind !== "idle")
    );
  }

  // ---- heights -------------------------------------------------------------------------------

  /**
   * Starts a round of height queries, or queues one if a round is in progress (at most one is
   * queued, however many hints arrive). Peers backing off after failures sit the round out until
   * their retry time; off-chain peers are never asked again.
   */
  private queryHeights(): void {
    if (this.heightRound !== undefined) {
      this.heightRoundQueued = true;
      return;
    }
    const now = this.now();
    const due = this.peers.all().filter((p) => !p.offChain && p.retryAt <= now);
    this.heightRound = { due, outstanding: 0 };
    this.launchHeightQueries();
  }

  /**
   * Asks the round's due peers that have a free request slot: a height query counts against
   * `maxRequestsPerPeer` like a fetch, and is launched before fetches so that it gets the next slot.
   */
  private launchHeightQueries(): void {
    const round = this.heightRound;
    if (round === undefined) return;
    const waiting: PeerState[] = [];
    for (const p of round.due) {
      if (p.inflight >= this.options.maxRequestsPerPeer) {
        waiting.push(p);
        continue;
      }
      round.outstanding++;
      p.inflight++;
      const seq = ++this.heightQuerySeq;
      const signal = AbortSignal.any([
        this.controller.signal,
        AbortSignal.timeout(this.options.heightQueryTimeoutMs),
      ]);
      this.spawn(
        "height answer",
        () => this.network.getCommitAvailability(p.address, signal),
        (report) => {
          p.inflight--;
          const now = this.now();
          const suspect = this.suspects.get(p.address);
          // Only an answer to a query sent after the refusal can judge it.
          const judged = suspect !== undefined && seq > suspect.seq;
          if (judged) this.suspects.delete(p.address);
          // It refused a commit it still advertises. Not evidence enough for a ban (a bug, an
          // overload, a prune in progress), but its heights above it are not believed for a while,
          // so that it neither gets that range again nor holds the target up.
          if (judged && report.lowest <= suspect.index && report.highest >= suspect.index) {
            p.doubtedFrom = suspect.index;
            p.doubtedUntil = now + this.options.banDurationMs;
            p.lastError = `refused commit ${suspect.index}, which it advertises (${report.lowest}..${report.highest}): its heights above ${suspect.index - 1} are ignored for ${Math.round(this.options.banDurationMs / 1000)} s`;
            this.log.warn({ peer: p.address, commit: suspect.index }, p.lastError);
          }
          if (!this.peers.updateHeights(p.address, report, now))
            this.log.warn({ peer: p.address }, "peer serves another chain (genesis differs): never used");
          else if (suspect !== undefined && !judged) p.highest = Math.min(p.highest, suspect.index - 1);
          this.endHeightQuery(round);
        },
        (e: unknown) => {
          p.inflight--;
          this.onPeerError(p, "GetCommitAvailability", e as PeerError);
          this.endHeightQuery(round);
        },
      );
    }
    round.due = waiting;
    this.finishHeightRoundIfDone(round);
  }

  private endHeightQuery(round: { due: PeerState[]; outstanding: number }): void {
    round.outstanding--;
    this.finishHeightRoundIfDone(round);
    this.kick();
  }

  private finishHeightRoundIfDone(round: { due: PeerState[]; outstanding: number }): void {
    if (this.heightRound === round && round.outstanding === 0 && round.due.length === 0) {
      this.heightRounds++;
      this.heightRound = undefined;
      if (this.heightRoundQueued) {
        this.heightRoundQueued = false;
        this.queryHeights();
      }
    }
  }

  // ---- planning ------------------------------------------------------------------------------

  private step(): void {
    const now = this.now();
    const marks = this.store.watermarks;
    const target = this.peers.target(now);
    this.config.metrics?.target.set(target);
    this.config.metrics?.bannedPeers.set(this.peers.all().filter((p) => p.bannedUntil > now).length);
    this.config.metrics?.offChainPeers.set(this.peers.all().filter((p) => p.offChain).length);

    // Plan: extend the segment list up to the target, drop unverified ones beyond it (the peers
    // that advertised them were banned or doubted since; answers still in flight are ignored).
    while (this.segments.length > 0) {
      const last = this.segments.at(-1)!;
      const unverified =
        last.state.kind === "idle" || last.state.kind === "fetching_commits" || last.state.kind === "fetched";
      if (!unverified || last.start <= target) break;
      this.release(last);
      this.segments.pop();
    }
    let frontier = this.segments.at(-1)?.end ?? marks.highestSynced;
    while (this.segments.length < this.options.maxSegmentsAhead && frontier < target) {
      const end = Math.min(frontier + this.options.commitsPerRequest, target);
      this.segments.push({ start: frontier + 1, end, state: { kind: "idle" }, bytes: 0 });
      frontier = end;
    }

    // Verify, in order, every fetched segment whose predecessor is verified.
    let prev = { index: marks.highestSynced, digest: marks.highestSyncedDigest, epoch: marks.epoch };
    for (let i = 0; i < this.segments.length; i++) {
      const seg = this.segments[i]!;
      if (seg.state.kind === "fetched") this.verifySegment(i, prev);
      const s = seg.state;
      if (s.kind !== "fetching_blocks" && s.kind !== "ready" && s.kind !== "applying") break;
      const last = s.verified.commits.at(-1)!;
      prev = {
        index: last.index,
        digest: last.digest,
        epoch: s.verified.nextCommittee !== undefined ? last.epoch + 1 : last.epoch,
      };
    }
    this.highestVerified = prev.index;
    this.config.metrics?.highestVerified.set(prev.index);

    // Height queries first: they wait for a free slot per peer like fetches, and come first.
    this.launchHeightQueries();
    // Launch work, head first.
    for (let i = 0; i < this.segments.length && this.requests < this.options.maxConcurrentRequests; i++) {
      const seg = this.segments[i]!;
      const head = i === 0;
      if (seg.state.kind === "idle") this.launchCommitFetch(seg, head, now);
      else if (seg.state.kind === "fetching_blocks") this.launchBlockFetches(seg, seg.state, head, now);
    }

    // Apply the head when it is ready, with the ready segments right behind it: one store write
    // for several segments costs little more than for one, and writes are strictly sequential.
    // A write never goes past the end of an epoch, so each one is of a single committee.
    const head = this.segments[0];
    if (!this.applying && head?.state.kind === "ready" && head.start === marks.highestSynced + 1) {
      const batch: ReadySegment[] = [{ seg: head, state: head.state }];
      let bytes = head.bytes;
      for (let i = 1; i < this.segments.length; i++) {
        const seg = this.segments[i]!;
        if (batch.at(-1)!.state.verified.nextCommittee !== undefined) break;
        if (seg.state.kind !== "ready" || bytes + seg.bytes > this.options.maxApplyBatchBytes) break;
        batch.push({ seg, state: seg.state });
        bytes += seg.bytes;
      }
      this.applyPromise = this.apply(batch).catch((e: unknown) => {
        this.applying = false;
        this.guard("apply", () => {
          throw e;
        });
      });
    }
    this.config.metrics?.inflightBytes.set(this.inflightBytes);
  }

  private budgetAllows(extra: number, head: boolean): boolean {
    return head || this.inflightBytes + this.reservedBytes + extra <= this.options.maxInflightBytes;
  }

  private launchCommitFetch(seg: Segment, head: boolean, now: number): void {
    const estimate = (seg.end - seg.start + 1) * 512;
    if (!this.budgetAllows(estimate, head)) return;
    const peer = this.peers.pick(seg.start, seg.start, now);
    if (peer === undefined) return;
    const requestStart = seg.start;
    seg.state = { kind: "fetching_commits", peer: peer.address, requestStart };
    const started = performance.now();
    this.beginRequest(peer, estimate);
    const signal = this.controller.signal;
    this.spawn(
      "FetchCommits answer",
      () =>
        this.network.fetchCommits(peer.address, seg.start, seg.end, {
          signal,
          expectedBytes: Math.max(estimate * 4, this.options.commitAnswerBytes),
        }),
      (res) => {
        this.endRequest(peer, estimate);
        this.peers.recordSuccess(peer, res.bytes, performance.now() - started);
        this.config.metrics?.bytesFetched.inc({ method: "FetchCommits" }, res.bytes);
        this.config.metrics?.fetchSeconds.observe(
          { method: "FetchCommits" },
          (performance.now() - started) / 1000,
        );
        if (!this.segments.includes(seg)) return; // a batch before it covered the whole segment
        if (res.commits.length === 0) {
          seg.state = { kind: "idle" };
          this.ban(peer, "malformed", `returned no commits for ${requestStart}..${seg.end}`, this.now());
        } else {
          // The whole batch, wherever it ends (DESIGN §3, the batch contract): its certifier
          // blocks certify its last commit, so cutting it here would discard the proof.
          seg.state = {
            kind: "fetched",
            requestStart,
            commits: res.commits,
            certifiers: res.certifierBlocks,
            peer: peer.address,
          };
          this.hold(seg, res.bytes);
        }
        this.kick();
      },
      (e: unknown) => {
        this.endRequest(peer, estimate);
        if (this.segments.includes(seg)) seg.state = { kind: "idle" };
        this.onPeerError(peer, "FetchCommits", e as PeerError, requestStart);
        this.kick();
      },
    );
  }

  private verifySegment(i: number, prev: { index: number; digest: Uint8Array; epoch: number }): void {
    const seg = this.segments[i]!;
    if (seg.state.kind !== "fetched") return;
    const { requestStart, certifiers, peer: address } = seg.state;
    // A batch before this one may have run past its end into this segment: drop what it covered.
    const commits = seg.state.commits.slice(seg.start - requestStart);
    if (commits.length === 0) {
      this.release(seg);
      seg.state = { kind: "idle" };
      return;
    }
    const peer = this.peers.get(address)!;
    const committee = this.committees.get(prev.epoch);
    if (committee === undefined) return; // cannot happen: the predecessor verified and stored it
    const result = verifyCommitBatch({
      commits,
      certifierBlocks: certifiers,
      expectedStart: seg.start,
      previousDigest: prev.digest,
      committee,
      chainId: this.chainId,
      verifier: this.config.verifier,
    });
    if (
      result.error?.code === "broken_link" &&
      seg.start === marks0(this.store) &&
      this.store.watermarks.highestSynced > 0 &&
      this.certifiedDespiteLink(commits, certifiers, seg.start, committee)
    ) {
      // The first commit after a trusted checkpoint does not link to it, yet a quorum of the
      // checkpoint's committee certified it: either the checkpoint is not of the chain our peers
      // serve, or that committee forked. When every on-chain peer says so, stop. (An uncertified
      // batch is just a bad peer, banned below: one hostile peer cannot stop the node.)
      this.checkpointDisagreements.add(address);
      const onChain = this.peers.all().filter((p) => p.known && !p.offChain).length;
      if (this.checkpointDisagreements.size >= onChain)
        this.fatal = new SyncError(
          "checkpoint_mismatch",
          `the trusted checkpoint (commit ${prev.index}, digest ${toHex(prev.digest).slice(0, 16)}…) does not match what peers serve: ` +
            `commit ${seg.start} from ${[...this.checkpointDisagreements].join(", ")} links to another digest. Check --checkpoint and --genesis.`,
        );
    }
    if (result.commits.length === 0) {
      this.release(seg);
      seg.state = { kind: "idle" };
      this.ban(
        peer,
        result.error?.code ?? "malformed",
        `FetchCommits ${seg.start}..: ${result.error?.message}`,
        this.now(),
      );
      return;
    }
    if (result.error !== undefined)
      this.ban(peer, result.error.code, `FetchCommits ${seg.start}..: ${result.error.message}`, this.now());
    const last = result.commits.at(-1)!;
    let nextCommittee: CommitteeView | undefined;
    if (last.commit.endOfEpoch !== undefined) {
      try {
        nextCommittee = nextCommitteeFrom(last, committee);
        this.committees.set(nextCommittee.epoch, nextCommittee);
      } catch (e) {
        this.fatal = new SyncError(
          "bad_next_committee",
          `commit ${last.index} is certified but its next committee is unusable: ${(e as Error).message}`,
        );
        return;
      }
    }
    if (last.index < seg.end) {
      // Keep the valid prefix; the rest of the range becomes a segment of its own.
      this.segments.splice(i + 1, 0, {
        start: last.index + 1,
        end: seg.end,
        state: { kind: "idle" },
        bytes: 0,
      });
      seg.end = last.index;
    } else if (last.index > seg.end) this.absorbFollowing(i, last.index);
    // Every commit's refs, in order: commit k's blocks are a contiguous run of them.
    const refs: BlockRef[] = [];
    const refEnds: number[] = [];
    for (const c of result.commits) {
      for (const ref of c.commit.blocks) refs.push(ref);
      refEnds.push(refs.length);
    }
    const verified: Verified = {
      commits: result.commits,
      certifiers: result.certifierBlocks.map((b) => b.bytes),
      committee,
      nextCommittee,
      refs,
      refEnds,
    };
    const blocks = new Array<Uint8Array | undefined>(refs.length);
    const chunks: Chunk[] = [];
    const lookup = this.config.nearTipBlocks;
    for (let k = 0; k < refs.length; ) {
      const cached = lookup?.(refs[k]!.digest);
      if (cached !== undefined) {
        blocks[k++] = cached;
        this.hold(seg, cached.length);
        continue;
      }
      const chunk: Chunk = { offset: k, count: 0, fetching: false };
      while (
        k < refs.length &&
        chunk.count < this.options.blocksPerRequest &&
        (chunk.count === 0 || lookup?.(refs[k]!.digest) === undefined)
      ) {
        chunk.count++;
        k++;
      }
      chunks.push(chunk);
    }
    seg.state = { kind: "fetching_blocks", verified, chunks, blocks };
    if (chunks.length === 0) seg.state = { kind: "ready", verified, blocks };
  }

  /** The batch would verify if its first commit's link were not checked. */
  private certifiedDespiteLink(
    commits: Uint8Array[],
    certifiers: Uint8Array[],
    start: number,
    committee: CommitteeView,
  ): boolean {
    const unlinked = verifyCommitBatch({
      commits,
      certifierBlocks: certifiers,
      expectedStart: start,
      previousDigest: undefined,
      committee,
      chainId: this.chainId,
      verifier: this.config.verifier,
    });
    return unlinked.error === undefined && unlinked.commits.length > 0;
  }

  /**
   * Segment `i` verified through `last`, past its planned end (the server could certify nothing
   * earlier): it takes over the segments it covers. Those wholly covered go, whatever their state
   * (their answers in flight are ignored); one covered in part starts after `last`, and a batch
   * it already fetched loses the covered prefix when its turn to verify comes.
   */
  private absorbFollowing(i: number, last: number): void {
    const seg = this.segments[i]!;
    while (i + 1 < this.segments.length && this.segments[i + 1]!.start <= last) {
      const next = this.segments[i + 1]!;
      if (next.end > last) {
        next.start = last + 1;
        break;
      }
      this.release(next);
      this.segments.splice(i + 1, 1);
    }
    seg.end = last;
  }

  private launchBlockFetches(
    seg: Segment,
    state: Extract<SegmentState, { kind: "fetching_blocks" }>,
    head: boolean,
    now: number,
  ): void {
    for (const chunk of state.chunks) {
      if (chunk.fetching) continue;
      if (this.requests >= this.options.maxConcurrentRequests) return;
      if (!this.budgetAllows(chunk.count * this.blockEstimate, head)) return;
      const peer = this.pickForChunk(state.verified, state.chunks, chunk, now);
      if (peer === undefined) continue;
      const estimate = chunk.count * this.blockEstimate;
      const refs = state.verified.refs.slice(chunk.offset, chunk.offset + chunk.count);
      chunk.fetching = true;
      this.beginRequest(peer, estimate);
      const started = performance.now();
      this.spawn(
        "FetchBlocks answer",
        () =>
          this.network.fetchBlocks(peer.address, refs, {
            signal: this.controller.signal,
            expectedBytes: estimate,
          }),
        (res) => {
          this.endRequest(peer, estimate);
          chunk.fetching = false;
          this.peers.recordSuccess(peer, res.bytes, performance.now() - started);
          this.config.metrics?.bytesFetched.inc({ method: "FetchBlocks" }, res.bytes);
          this.config.metrics?.fetchSeconds.observe(
            { method: "FetchBlocks" },
            (performance.now() - started) / 1000,
          );
          if (seg.state !== state) return;
          this.acceptBlocks(seg, state, chunk, refs, peer, res.blocks, res.bytes);
          this.kick();
        },
        (e: unknown) => {
          this.endRequest(peer, estimate);
          chunk.fetching = false;
          const commit = state.verified.commits[commitPosition(state.verified.refEnds, chunk.offset)];
          this.onPeerError(peer, "FetchBlocks", e as PeerError, commit?.index ?? seg.start);
          this.kick();
        },
      );
    }
  }

  /**
   * A peer for a chunk of refs: one that holds the commits those refs belong to (not the whole
   * segment, which after a long batch may span more than any one peer holds). When nobody holds
   * them all, the chunk is cut after the last commit the best peer holding its first one has.
   */
  private pickForChunk(
    verified: Verified,
    chunks: Chunk[],
    chunk: Chunk,
    now: number,
  ): PeerState | undefined {
    const { commits, refEnds } = verified;
    const first = commitPosition(refEnds, chunk.offset);
    const last = commitPosition(refEnds, chunk.offset + chunk.count - 1);
    const firstIndex = commits[first]!.index;
    const peer = this.peers.pick(firstIndex, commits[last]!.index, now);
    if (peer !== undefined || first === last) return peer;
    const partial = this.peers.pick(firstIndex, firstIndex, now);
    if (partial === undefined) return undefined;
    const upTo = Math.min(partial.highest, commits[last]!.index) - firstIndex + first;
    const cut = refEnds[upTo]! - chunk.offset;
    if (cut <= 0 || cut >= chunk.count) return undefined;
    // The rest becomes a chunk of its own, for whoever holds it.
    chunks.splice(chunks.indexOf(chunk) + 1, 0, {
      offset: chunk.offset + cut,
      count: chunk.count - cut,
      fetching: false,
    });
    chunk.count = cut;
    return partial;
  }

  private acceptBlocks(
    seg: Segment,
    state: Extract<SegmentState, { kind: "fetching_blocks" }>,
    chunk: Chunk,
    refs: BlockRef[],
    peer: PeerState,
    blocks: Uint8Array[],
    bytes: number,
  ): void {
    const checked = verifyBlocksAgainstRefs(refs, blocks);
    let accepted = checked.blocks;
    let error = checked.error;
    if (this.options.verifyBlockSignatures) {
      const ok: Uint8Array[] = [];
      for (const b of accepted) {
        try {
          verifySignedBlock(
            parseSignedBlock(b),
            state.verified.committee,
            this.chainId,
            this.config.verifier,
          );
          ok.push(b);
        } catch (e) {
          error = e instanceof VerifyError ? e : new VerifyError("malformed", String(e));
          break;
        }
      }
      accepted = ok;
    }
    if (accepted.length === 0 && error === undefined)
      error = new VerifyError("malformed", `returned no blocks for ${refs.length} refs`);
    if (error !== undefined) this.ban(peer, error.code, `FetchBlocks: ${error.message}`, this.now());
    let acceptedBytes = 0;
    accepted.forEach((b, k) => {
      state.blocks[chunk.offset + k] = b;
      acceptedBytes += b.length;
    });
    if (accepted.length > 0)
      this.blockEstimate = Math.max(
        256,
        Math.round(0.8 * this.blockEstimate + (0.2 * bytes) / blocks.length),
      );
    this.hold(seg, acceptedBytes);
    chunk.offset += accepted.length; // the remainder is asked again, possibly elsewhere
    chunk.count -= accepted.length;
    if (chunk.count === 0) state.chunks.splice(state.chunks.indexOf(chunk), 1);
    if (state.chunks.length === 0)
      seg.state = { kind: "ready", verified: state.verified, blocks: state.blocks };
  }

  // ---- apply ---------------------------------------------------------------------------------

  private async apply(batch: readonly ReadySegment[]): Promise<void> {
    this.applying = true;
    const units: ApplyUnit[] = [];
    for (const { seg, state } of batch) {
      seg.state = { kind: "applying", verified: state.verified };
      const { commits, certifiers, nextCommittee } = state.verified;
      let position = 0;
      commits.forEach((c, k) => {
        const blocks = c.commit.blocks.map((ref, j) => ({ ref, bytes: state.blocks[position + j]! }));
        position += blocks.length;
        units.push({
          index: c.index,
          epoch: c.epoch,
          commitBytes: c.bytes,
          commitDigest: c.digest,
          blocks,
          certifierBlocks: k === commits.length - 1 ? certifiers : undefined,
          nextCommittee: c.commit.endOfEpoch !== undefined ? nextCommittee?.committee : undefined,
        });
      });
    }
    const first = batch[0]!.seg.start;
    const last = batch.at(-1)!.seg.end;
    try {
      await this.store.apply(units);
    } catch (e) {
      this.fatal = new SyncError(
        "store_write",
        `cannot write commits ${first}..${last} to the store: ${(e as Error).message}`,
      );
      this.applying = false;
      this.kick();
      return;
    }
    for (const { seg } of batch) {
      this.segments.shift();
      this.release(seg);
    }
    let blockCount = 0;
    for (const u of units) {
      blockCount += u.blocks.length;
      for (const b of u.blocks) this.stats.bytesApplied += b.bytes.length;
    }
    const applied = this.config.onBlocksApplied;
    if (applied !== undefined)
      applied(
        units.flatMap((u) => u.blocks.map((b) => b.ref)),
        units.at(-1)!.epoch,
      );
    this.stats.commitsApplied += units.length;
    this.stats.blocksApplied += blockCount;
    const m = this.config.metrics;
    m?.commitsApplied.inc(units.length);
    m?.blocksApplied.inc(blockCount);
    m?.highestSynced.set(this.store.watermarks.highestSynced);
    this.applying = false;
    this.broadcast.publish(units); // caught-up subscribers take these from memory
    this.pushToPeersBehind();
    this.kick();
  }

  private pushToPeersBehind(): void {
    const marks = this.store.watermarks;
    const now = this.now();
    const ref = create(CommitRefSchema, {
      index: BigInt(marks.highestSynced),
      digest: marks.highestSyncedDigest,
    });
    for (const p of this.peers.all()) {
      if (!this.peers.isUsable(p, now) || p.highest >= marks.highestSynced) continue;
      if (now - p.lastPushAt < this.options.pushIntervalMs) continue;
      p.lastPushAt = now;
      this.network.pushCommit(p.address, ref, marks.highestSynced).catch(() => {});
    }
  }

  // ---- bookkeeping ---------------------------------------------------------------------------

  private beginRequest(peer: PeerState, reserved: number): void {
    this.requests++;
    peer.inflight++;
    this.reservedBytes += reserved;
  }

  private endRequest(peer: PeerState, reserved: number): void {
    this.requests--;
    peer.inflight--;
    this.reservedBytes -= reserved;
  }

  private hold(seg: Segment, bytes: number): void {
    seg.bytes += bytes;
    this.inflightBytes += bytes;
  }

  private release(seg: Segment): void {
    this.inflightBytes -= seg.bytes;
    seg.bytes = 0;
  }

  private ban(peer: PeerState, code: string, reason: string, now: number): void {
    this.peers.ban(peer, reason, now);
    this.config.metrics?.bans.inc({ peer: peer.address, reason: code });
    this.log.warn(
      { peer: peer.address, code, until: new Date(peer.bannedUntil).toISOString() },
      `banned peer ${peer.address}: ${reason}`,
    );
  }

  private onPeerError(peer: PeerState, method: string, error: PeerError, index?: number): void {
    const now = this.now();
    const kind = error.kind ?? "rpc";
    this.config.metrics?.peerErrors.inc({ peer: peer.address, kind });
    if (kind === "cancelled" || this.controller.signal.aborted) return;
    if (kind === "invalid_data") {
      this.ban(peer, "invalid_data", `${method}: ${error.message}`, now);
      return;
    }
    if (kind === "unavailable_range" && index !== undefined) {
      // Honest peers never un-advertise a commit, but they may prune: ask again before anything
      // else. Until the answer, it is not asked for this range.
      this.suspects.set(peer.address, { index, seq: this.heightQuerySeq });
      peer.highest = Math.min(peer.highest, index - 1);
      peer.lastError = `${method}: ${error.message}`;
      this.queryHeights();
      return;
    }
    // Unreachable, slow or busy peers back off (their work goes elsewhere at once); none of it is
    // evidence of misbehaviour, so none of it bans.
    this.peers.recordFailure(
      peer,
      `${method}: ${error.message}`,
      now,
      kind === "rate_limited" ? error.retryAfterMs : undefined,
      kind === "rate_limited",
    );
    // The first failure of a streak is worth a line; the rest of the streak goes to debug (a
    // stall, if it comes to that, is reported once by checkStall).
    if (peer.consecutiveFailures === 1 && kind !== "rate_limited")
      this.log.warn({ peer: peer.address, kind }, `${error.message} (will retry with backoff)`);
    else this.log.debug({ peer: peer.address, kind, err: error.message }, "peer call failed");
  }

  /** Peers as Admin/GetStatus reports them. */
  peerStatuses(): PeerStatus[] {
    const now = this.now();
    return this.peers.all().map((p) =>
      create(PeerStatusSchema, {
        address: p.address,
        highest: BigInt(p.highest),
        lowest: BigInt(p.lowest),
        score: (p.bytesPerSecond ?? 0) / (1 + p.inflight),
        inFlight: p.inflight,
        bytesPerSecond: p.bytesPerSecond ?? 0,
        lastError: p.lastError,
        banned: p.bannedUntil > now,
        bannedUntilMs: BigInt(p.bannedUntil > now ? Math.round(p.bannedUntil) : 0),
        offChain: p.offChain,
        banCount: p.banCount,
        retryAtMs: BigInt(p.retryAt > now ? Math.round(p.retryAt) : 0),
        consecutiveFailures: p.consecutiveFailures,
      }),
    );
  }
}
