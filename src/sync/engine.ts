/**
 * The sync engine (DESIGN.md §4), modelled on Sui's StateSyncEventLoop and Mysticeti's
 * CommitSyncer: one loop owns all state; I/O runs in tasks it spawns, whose results come back as
 * synchronous, guarded handlers that update the state and wake the loop. Nothing else mutates it.
 *
 * Each step: plan segments up to the target (`SegmentPlan`), verify fetched batches in chain
 * order (`VerifyStage`: each gets the full check once the committee and the digest it must link
 * to are known), launch height queries (`HeightRefresh`) then fetches head first
 * (`FetchPipeline`; every RPC through `PeerFetch`, within the `ByteBudget`), and write the ready
 * head to the store in one atomic batch (`ApplyStage`). Each segment moves through its own state
 * machine (`Segment`):
 *
 *   idle → fetching_commits → fetched → fetching_blocks → ready → applying
 *
 * Threat: hostile peers cannot make us store anything that did not verify, and cannot stop us
 * while one honest peer remains. A ban needs evidence (`PeerFaults`); unreachable, slow and busy
 * peers back off; off-chain peers are never used. When no peer can serve the next commit the
 * engine says why (`StallWatch`: log, status, metric) and keeps retrying. A crash at any point
 * resumes from the watermark.
 *
 * Peers come and go at runtime (DESIGN §9): `addPeer`, `removePeer` and `setPeers`, each peer with
 * its source. At most `maxSyncPeers` form the working set (`PeerSet.rebalance`, committee first);
 * a peer that enters it is asked its heights at once, through the dial rate limit. A peer that
 * leaves takes nothing with it: its calls in flight end and their work goes back to the plan.
 * When no working peer can serve the next commit, the engine swaps them for standby peers
 * (`PeerSet.rotate`) and calls `onNeedPeers` so that the node looks for more.
 */
import { setMaxListeners } from "node:events";
import type { Logger } from "pino";
import { type CommitteeView, SignatureVerdicts } from "../core/index.js";
import type { Store } from "../store/index.js";
import { ApplyStage } from "./apply-stage.js";
import { SubDagBroadcast } from "./broadcast.js";
import { ByteBudget } from "./byte-budget.js";
import type { SyncEngineConfig } from "./engine-config.js";
import { SyncError } from "./errors.js";
import { FetchPipeline } from "./fetch-pipeline.js";
import { HeightRefresh } from "./height-refresh.js";
import { DEFAULT_SYNC_OPTIONS, type SyncOptions } from "./options.js";
import { PeerFaults } from "./peer-faults.js";
import { PeerFetch } from "./peer-fetch.js";
import { PEER_SOURCES, PeerSet, type PeerSource, type PeerState } from "./peers.js";
import { SegmentPlan } from "./segment-plan.js";
import { diagnoseStall, peerVerdict, type StallDiagnosis } from "./stall.js";
import { StallWatch } from "./stall-watch.js";
import {
  type PeerStatusSnapshot,
  peerStatusSnapshot,
  type SyncPhase,
  type SyncProgress,
  type SyncStatusSnapshot,
} from "./sync-status.js";
import { VerifyStage } from "./verify-stage.js";

// Kept importable from here, where they were first declared.
export type { SyncEngineConfig } from "./engine-config.js";
export type { PeerEntry, PeerSource } from "./peers.js";
export type { SyncPhase, SyncProgress, SyncStall } from "./sync-status.js";

export class SyncEngine {
  readonly options: SyncOptions;
  readonly broadcast: SubDagBroadcast;
  readonly peers: PeerSet;
  private readonly store: Store;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly chainId: string;
  private readonly plan = new SegmentPlan();
  private readonly committees = new Map<number, CommitteeView>();
  /** Signature verdicts from the verify pool, when there is one (how many were used: tests, metrics). */
  readonly verdicts: SignatureVerdicts | undefined;
  private readonly controller = new AbortController();
  private readonly budget: ByteBudget;
  private readonly fetch: PeerFetch;
  private readonly faults: PeerFaults;
  private readonly heights: HeightRefresh;
  private readonly stallWatch: StallWatch;
  private readonly verifyStage: VerifyStage;
  private readonly pipeline: FetchPipeline;
  private readonly applier: ApplyStage;
  private wake: (() => void) | undefined;
  private heightsTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private everSynced = false;
  /** Highest commit verified ahead of the store (its blocks may still be missing). */
  private highestVerified = 0;
  private runUntilSynced = false;
  private phase: SyncPhase = "starting";
  private fatal: SyncError | undefined;
  /** Since when no working peer could serve the next commit (undefined while one can). */
  private needSince: number | undefined;
  private lastNeedPeersAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly config: SyncEngineConfig) {
    const options = { ...DEFAULT_SYNC_OPTIONS, ...config.options };
    // Below 1 the balancer would wait even for a busy peer slower than an idle one.
    if (!(options.busyPeerPreference >= 1))
      throw new RangeError(`sync busyPeerPreference (${options.busyPeerPreference}) must be at least 1`);
    const { log, metrics } = config;
    this.options = options;
    this.store = config.store;
    this.log = log;
    this.now = config.now ?? (() => Date.now());
    this.chainId = config.store.genesis.genesis.chainId;
    this.peers = new PeerSet(config.peers, config.store.genesis.digest, options, config.random);
    this.broadcast = new SubDagBroadcast(config.store, options.subscriberBufferCommits);
    setMaxListeners(0, this.controller.signal); // every request in flight listens to it
    const { peers, now } = this;
    this.budget = new ByteBudget(options);
    const signal = this.controller.signal;
    const spawn = this.spawn.bind(this);
    this.fetch = new PeerFetch({
      network: config.network,
      peers,
      budget: this.budget,
      options,
      metrics,
      signal,
      spawn,
    });
    this.faults = new PeerFaults({
      peers,
      log,
      metrics,
      now,
      stopping: () => signal.aborted,
      onRefusedRange: (peer, index) => this.heights.suspect(peer, index),
      maxDialFailures: options.maxDialFailures,
    });
    const onError = this.faults.onError.bind(this.faults);
    const kick = () => this.kick();
    this.heights = new HeightRefresh({ peers, fetch: this.fetch, options, log, now, onError, kick });
    this.stallWatch = new StallWatch(options, log, metrics);
    const { plan, budget, faults, fetch, chainId, store, broadcast } = this;
    const fail = (e: SyncError) => {
      this.fatal = e;
    };
    const verifier = config.verifier;
    // With a pool, verdicts computed as answers arrive are used by the checks (SignatureVerdicts).
    const verdicts = config.verifySignatures === undefined ? undefined : new SignatureVerdicts();
    this.verdicts = verdicts;
    const presign =
      config.verifySignatures === undefined || verdicts === undefined // (the same condition; narrows both)
        ? undefined
        : {
            verify: config.verifySignatures,
            verdicts,
            committeeOf: (epoch: number) => this.committees.get(epoch),
          };
    this.verifyStage = new VerifyStage({
      store,
      plan,
      peers,
      budget,
      faults,
      committees: this.committees,
      chainId,
      verifier,
      verdicts,
      fail,
      blocksPerRequest: options.blocksPerRequest,
      nearTipBlocks: config.nearTipBlocks,
    });
    this.pipeline = new FetchPipeline({
      plan,
      peers,
      fetch,
      budget,
      faults,
      options,
      chainId,
      verifier,
      presign,
      kick,
      guard: (what, fn) => this.guard(what, fn),
    });
    const guard = this.guard.bind(this);
    const onBlocksApplied = config.onBlocksApplied;
    this.applier = new ApplyStage({
      store,
      plan,
      budget,
      broadcast,
      peers,
      fetch,
      options,
      metrics,
      now,
      onBlocksApplied,
      fail,
      guard,
      kick,
    });
  }

  get progress(): SyncProgress {
    const now = this.now();
    return {
      phase: this.phase,
      highestSynced: this.store.watermarks.highestSynced,
      target: Math.max(this.peers.target(now), this.store.watermarks.highestSynced),
      ...this.applier.stats,
      usablePeers: this.peers.all().filter((p) => this.peers.isUsable(p, now)).length,
      stall: this.stallWatch.stall,
    };
  }

  /**
   * A peer joins (or a known peer gains a source). It enters the working set when it ranks among
   * the first `maxSyncPeers` (committee, bootstrap, exchange), and is then asked its heights at
   * once. Returns true when the peer is new.
   */
  addPeer(address: string, source: PeerSource): boolean {
    const known = this.peers.get(address) !== undefined;
    this.peers.add(address, source);
    this.peers.rebalance(this.now());
    this.kick();
    return !known;
  }

  /**
   * `source` no longer names the peer (no source does, when `source` is undefined): when none
   * does any more, it leaves. Its calls in flight end and their work is retried elsewhere; what
   * it sent already is kept; leaving is no fault. Returns true when the peer left.
   */
  removePeer(address: string, source?: PeerSource): boolean {
    const gone = this.peers.remove(address, source, this.now());
    if (gone === undefined) return false;
    this.heights.forget(gone);
    // Its calls in flight ended (`leaving`) before its connection goes.
    this.config.network.forgetPeer?.(address);
    this.peers.rebalance(this.now());
    this.log.debug({ peer: address }, "peer left");
    this.kick();
    return true;
  }

  /**
   * The peers `source` names now, e.g. the committee's sync addresses after an epoch change: those
   * it named before and names no more lose that source (and leave if no other source names them),
   * the new ones join.
   */
  setPeers(source: PeerSource, addresses: readonly string[]): void {
    const keep = new Set(addresses);
    for (const p of this.peers.all())
      if (p.sources.has(source) && !keep.has(p.address)) this.removePeer(p.address, source);
    for (const a of keep) this.peers.add(a, source);
    this.peers.rebalance(this.now());
    this.kick();
  }

  /** Peers as the engine sees them now (the node turns them into Admin/GetStatus replies). */
  peerStatuses(): PeerStatusSnapshot[] {
    const now = this.now();
    return this.peers.all().map((p) => peerStatusSnapshot(p, now));
  }

  /** Progress and peers, as plain data. */
  status(): SyncStatusSnapshot {
    return { ...this.progress, peers: this.peerStatuses() };
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
    const queryHeights = () => this.guard("height query", () => this.heights.request());
    queryHeights();
    this.heightsTimer = setInterval(queryHeights, this.options.peerQueryIntervalMs);
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
        this.phase = synced ? "synced" : this.stallWatch.stall !== undefined ? "stalled" : "syncing";
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

  /** Stops fetching and waits for a store write in progress, so that the store can close. */
  async stop(): Promise<void> {
    this.phase = "stopped";
    this.controller.abort();
    clearInterval(this.heightsTimer);
    clearInterval(this.tickTimer);
    this.kick();
    await this.applier.settled();
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
    this.guard("height query", () => this.heights.request());
  }

  isSynced(): boolean {
    const now = this.now();
    if (this.heights.roundsCompleted === 0) return false;
    const usable = this.peers.all().some((p) => this.peers.isUsable(p, now));
    return usable && this.store.watermarks.highestSynced >= this.peers.target(now) && !this.plan.busy();
  }

  private kick(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
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
    onOk: (v: T) => void,
    onError: (e: unknown) => void,
  ): void {
    Promise.resolve()
      .then(task)
      .then(
        (value) => this.guard(what, () => onOk(value)),
        (e: unknown) => this.guard(what, () => onError(e)),
      );
  }

  private checkStall(synced: boolean): void {
    const now = this.now();
    const next = this.firstNeededCommit();
    // Standby peers are not used, so they neither serve nor explain a stall.
    const diagnosis = synced
      ? undefined
      : diagnoseStall(this.peers.diagnosable(now), next, now, this.highestVerified >= next);
    this.needPeers(diagnosis, next, now);
    const error = this.stallWatch.update(diagnosis, next, now, this.runUntilSynced);
    if (error !== undefined) this.fatal = error;
  }

  /**
   * No working peer can serve commit `next`: swap the ones that cannot for standby peers, and ask
   * the node for more (`onNeedPeers`, at most every `needPeersIntervalMs`). Failing peers (which
   * may be a blip) count only once nobody could serve for `stallGraceMs`; pruned or behind peers
   * at once.
   */
  private needPeers(diagnosis: StallDiagnosis | undefined, next: number, now: number): void {
    if (diagnosis === undefined) {
      this.needSince = undefined;
      return;
    }
    this.needSince ??= now;
    const transient = diagnosis.reason === "unreachable" || diagnosis.reason === "busy";
    if (transient && now - this.needSince < this.options.stallGraceMs) return;
    const useless = (p: PeerState) => {
      const v = peerVerdict(p, next, now);
      return v === "pruned" || v === "behind" || v === "unreachable" || v === "busy";
    };
    const benched = this.peers.rotate(now, useless);
    if (benched.length > 0) {
      this.config.metrics?.workingSetExits.inc({ reason: "cannot_serve" }, benched.length);
      this.log.info(
        { commit: next, out: benched.map((p) => p.address) },
        `no working peer can serve commit ${next} (${diagnosis.reason}): trying other known peers`,
      );
      this.kick();
    }
    if (now - this.lastNeedPeersAt < this.options.needPeersIntervalMs) return;
    this.lastNeedPeersAt = now;
    this.config.metrics?.needPeers.inc({ reason: diagnosis.reason });
    this.log.debug({ reason: diagnosis.reason, commit: next }, "asking for more peers");
    this.config.onNeedPeers?.(diagnosis.reason, diagnosis.detail);
  }

  /**
   * The lowest commit whose data we still lack: after the store's head, or, when the head
   * segment's commits are verified, the commit of its first block still to fetch (a batch may
   * run past what one peer holds, so serving its first commit is not enough).
   */
  private firstNeededCommit(): number {
    return this.plan.head?.firstMissingCommit() ?? this.store.watermarks.highestSynced + 1;
  }

  /** One pass of the loop: plan, verify, launch, apply (see the module doc). */
  private step(): void {
    const now = this.now();
    const marks = this.store.watermarks;
    this.peers.rebalance(now); // bans and benches that ended, places freed
    const target = this.peers.target(now);
    const m = this.config.metrics;
    m?.target.set(target);
    m?.bannedPeers.set(this.peers.all().filter((p) => p.bannedUntil > now).length);
    m?.offChainPeers.set(this.peers.all().filter((p) => p.offChain).length);
    if (m !== undefined)
      for (const source of PEER_SOURCES) {
        const known = this.peers.all().filter((p) => p.source === source);
        m.knownPeers.set({ source }, known.length);
        m.workingPeers.set({ source }, known.filter((p) => p.working).length);
      }

    for (const seg of this.plan.dropBeyond(target)) this.budget.release(seg);
    const { commitsPerRequest, maxSegmentsAhead } = this.options;
    this.plan.extend(marks.highestSynced, target, commitsPerRequest, maxSegmentsAhead);
    this.highestVerified = this.verifyStage.verifyInOrder().index;
    m?.highestVerified.set(this.highestVerified);
    // Height queries first: they wait for a free slot per peer like fetches, and come first. Peers
    // that just entered the working set (bans and benches end, places free up) are asked at once.
    this.heights.ask(this.peers.working().filter((p) => !p.dialed));
    this.heights.launch();
    this.pipeline.launch(now);
    this.applier.applyReady();
    m?.inflightBytes.set(this.budget.inflightBytes);
  }
}
