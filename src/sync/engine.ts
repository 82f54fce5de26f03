/**
 * The sync engine (DESIGN.md §4), modelled on Sui's StateSyncEventLoop and Mysticeti's
 * CommitSyncer: one loop owns all state; I/O runs in tasks it spawns, whose results come back as
 * synchronous, guarded handlers that update the state and wake the loop. Nothing else mutates it.
 *
 * Each step: plan segments up to the target (`SegmentPlan`), verify fetched batches in order
 * (`checkCommitBatch`: each gets the full check once the committee and the digest it must link to
 * are known), launch height queries (`HeightRefresh`) then fetches head first (`PeerFetch`, within
 * `ByteBudget`), and apply the ready head to the store in one atomic write. Each segment moves
 * through its own state machine (`Segment`):
 *
 *   idle → fetching_commits → fetched → fetching_blocks → ready → applying
 *
 * Threat: hostile peers cannot make us store anything that did not verify, and cannot stop us
 * while one honest peer remains. A ban needs evidence (`PeerFaults`); unreachable, slow and busy
 * peers back off; off-chain peers are never used. When no peer can serve the next commit the
 * engine says why (`StallWatch`: log, status, metric) and keeps retrying. A crash at any point
 * resumes from the watermark.
 */
import { setMaxListeners } from "node:events";
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import type { PeerError } from "../client/index.js";
import { type CommitteeView, nextCommitteeFrom, type SignatureVerifier, toHex } from "../core/index.js";
import { CommitRefSchema } from "../gen/dagsync/v1/types_pb.js";
import type { BlockKeyRef, Store } from "../store/index.js";
import { checkBlocks, checkCommitBatch } from "./batch-check.js";
import { SubDagBroadcast } from "./broadcast.js";
import { ByteBudget } from "./byte-budget.js";
import { SyncError } from "./errors.js";
import { HeightRefresh } from "./height-refresh.js";
import type { SyncMetrics } from "./metrics.js";
import type { SyncNetwork } from "./network.js";
import { DEFAULT_SYNC_OPTIONS, type SyncOptions } from "./options.js";
import { PeerFaults } from "./peer-faults.js";
import { PeerFetch } from "./peer-fetch.js";
import { PeerSet, type PeerState } from "./peers.js";
import { type ChainPoint, type Chunk, commitOfRef, type Segment, verifiedBatch } from "./segment.js";
import { SegmentPlan } from "./segment-plan.js";
import { diagnoseStall } from "./stall.js";
import { StallWatch } from "./stall-watch.js";
import {
  type PeerStatusSnapshot,
  peerStatusSnapshot,
  type SyncPhase,
  type SyncProgress,
  type SyncStatusSnapshot,
} from "./sync-status.js";

// Kept importable from here, where they were first declared.
export type { SyncPhase, SyncProgress, SyncStall } from "./sync-status.js";

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
  private readonly controller = new AbortController();
  private readonly budget: ByteBudget;
  private readonly fetch: PeerFetch;
  private readonly faults: PeerFaults;
  private readonly heights: HeightRefresh;
  private readonly stallWatch: StallWatch;
  private wake: (() => void) | undefined;
  private applying = false;
  private applyPromise: Promise<void> = Promise.resolve();
  private heightsTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private everSynced = false;
  /** Highest commit verified ahead of the store (its blocks may still be missing). */
  private highestVerified = 0;
  private runUntilSynced = false;
  private phase: SyncPhase = "starting";
  private fatal: SyncError | undefined;
  private readonly checkpointDisagreements = new Set<string>();
  private readonly stats = { commitsApplied: 0, blocksApplied: 0, bytesApplied: 0 };

  constructor(private readonly config: SyncEngineConfig) {
    const options = { ...DEFAULT_SYNC_OPTIONS, ...config.options };
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
    });
    const onError = this.faults.onError.bind(this.faults);
    const kick = () => this.kick();
    this.heights = new HeightRefresh({ peers, fetch: this.fetch, options, log, now, onError, kick });
    this.stallWatch = new StallWatch(options, log, metrics);
  }

  get progress(): SyncProgress {
    const now = this.now();
    return {
      phase: this.phase,
      highestSynced: this.store.watermarks.highestSynced,
      target: Math.max(this.peers.target(now), this.store.watermarks.highestSynced),
      ...this.stats,
      usablePeers: this.peers.all().filter((p) => this.peers.isUsable(p, now)).length,
      stall: this.stallWatch.stall,
    };
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
    await this.applyPromise;
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
    const diagnosis = synced
      ? undefined
      : diagnoseStall(this.peers.all(), next, now, this.highestVerified >= next);
    const error = this.stallWatch.update(diagnosis, next, now, this.runUntilSynced);
    if (error !== undefined) this.fatal = error;
  }

  /**
   * The lowest commit whose data we still lack: after the store's head, or, when the head
   * segment's commits are verified, the commit of its first block still to fetch (a batch may
   * run past what one peer holds, so serving its first commit is not enough).
   */
  private firstNeededCommit(): number {
    return this.plan.head?.firstMissingCommit() ?? this.store.watermarks.highestSynced + 1;
  }

  // ---- the step ------------------------------------------------------------------------------

  private step(): void {
    const now = this.now();
    const marks = this.store.watermarks;
    const target = this.peers.target(now);
    const m = this.config.metrics;
    m?.target.set(target);
    m?.bannedPeers.set(this.peers.all().filter((p) => p.bannedUntil > now).length);
    m?.offChainPeers.set(this.peers.all().filter((p) => p.offChain).length);

    for (const seg of this.plan.dropBeyond(target)) this.budget.release(seg);
    this.plan.extend(
      marks.highestSynced,
      target,
      this.options.commitsPerRequest,
      this.options.maxSegmentsAhead,
    );

    // Verify, in order, every fetched segment whose predecessor is verified.
    let prev: ChainPoint = {
      index: marks.highestSynced,
      digest: marks.highestSyncedDigest,
      epoch: marks.epoch,
    };
    for (const seg of this.plan.segments) {
      if (seg.state.kind === "fetched") this.verifySegment(seg, prev);
      const through = seg.verifiedThrough();
      if (through === undefined) break;
      prev = through;
    }
    this.highestVerified = prev.index;
    m?.highestVerified.set(prev.index);

    // Height queries first: they wait for a free slot per peer like fetches, and come first.
    this.heights.launch();
    // Launch work, head first.
    const segments = this.plan.segments;
    for (let i = 0; i < segments.length && this.fetch.hasFreeSlot(); i++) {
      const seg = segments[i]!;
      if (seg.state.kind === "idle") this.launchCommitFetch(seg, i === 0, now);
      else if (seg.state.kind === "fetching_blocks") this.launchBlockFetches(seg, i === 0, now);
    }

    const run = this.applying ? [] : this.plan.readyRun(marks.highestSynced, this.options.maxApplyBatchBytes);
    if (run.length > 0)
      this.applyPromise = this.apply(run).catch((e: unknown) => {
        this.applying = false;
        this.guard("apply", () => {
          throw e;
        });
      });
    m?.inflightBytes.set(this.budget.inflightBytes);
  }

  private launchCommitFetch(seg: Segment, head: boolean, now: number): void {
    const reserve = this.budget.estimateCommits(seg.end - seg.start + 1);
    if (!this.budget.allows(reserve, head)) return;
    const peer = this.peers.pick(seg.start, seg.start, now);
    if (peer === undefined) return;
    const { start, end } = seg;
    seg.startFetchingCommits(peer.address);
    this.fetch.fetchCommits(
      peer,
      start,
      end,
      reserve,
      (res) => {
        if (!this.plan.includes(seg)) return; // a batch before it covered the whole segment
        if (res.commits.length === 0) {
          seg.commitFetchFailed();
          this.faults.ban(peer, "malformed", `returned no commits for ${start}..${seg.end}`);
        } else {
          seg.commitsFetched(res.commits, res.certifierBlocks);
          this.budget.hold(seg, res.bytes);
        }
        this.kick();
      },
      (e) => {
        if (this.plan.includes(seg)) seg.commitFetchFailed();
        this.faults.onError(peer, "FetchCommits", e as PeerError, start);
        this.kick();
      },
    );
  }

  /** The full check of a fetched batch, now that the commit it must link to is verified. */
  private verifySegment(seg: Segment, prev: ChainPoint): void {
    const state = seg.state;
    if (state.kind !== "fetched") return;
    const commits = seg.uncoveredCommits();
    if (commits.length === 0) {
      this.budget.release(seg);
      seg.batchDiscarded();
      return;
    }
    const peer = this.peers.get(state.peer)!;
    const committee = this.committees.get(prev.epoch);
    if (committee === undefined) return; // cannot happen: the predecessor verified and stored it
    const marks = this.store.watermarks;
    const { result, contradictsCheckpoint } = checkCommitBatch({
      commits,
      certifiers: state.certifiers,
      start: seg.start,
      prev,
      committee,
      chainId: this.chainId,
      verifier: this.config.verifier,
      prevIsCheckpoint: seg.start === marks.lowestAvailable && marks.highestSynced > 0,
    });
    // (An uncertified batch is just a bad peer, banned below: one hostile peer cannot stop the node.)
    if (contradictsCheckpoint) this.checkpointContradicted(state.peer, prev, seg.start);
    const why = `FetchCommits ${seg.start}..: ${result.error?.message}`;
    if (result.commits.length === 0) {
      this.budget.release(seg);
      seg.batchDiscarded();
      this.faults.ban(peer, result.error?.code ?? "malformed", why);
      return;
    }
    if (result.error !== undefined) this.faults.ban(peer, result.error.code, why);
    const last = result.commits.at(-1)!;
    let nextCommittee: CommitteeView | undefined;
    if (last.commit.endOfEpoch !== undefined) {
      try {
        nextCommittee = nextCommitteeFrom(last, committee);
        this.committees.set(nextCommittee.epoch, nextCommittee);
      } catch (e) {
        const reason = `commit ${last.index} is certified but its next committee is unusable: ${(e as Error).message}`;
        this.fatal = new SyncError("bad_next_committee", reason);
        return;
      }
    }
    if (last.index < seg.end) this.plan.splitAfter(seg, last.index);
    else if (last.index > seg.end)
      for (const gone of this.plan.absorbFollowing(seg, last.index)) this.budget.release(gone);
    const certifiers = result.certifierBlocks.map((b) => b.bytes);
    const batch = verifiedBatch(result.commits, certifiers, committee, nextCommittee);
    this.budget.hold(seg, seg.batchVerified(batch, this.options.blocksPerRequest, this.config.nearTipBlocks));
  }

  /**
   * The first commit after the trusted checkpoint does not link to it, yet a quorum of the
   * checkpoint's committee certified it: either the checkpoint is not of the chain our peers
   * serve, or that committee forked. When every on-chain peer says so, stop.
   */
  private checkpointContradicted(peer: string, prev: ChainPoint, start: number): void {
    this.checkpointDisagreements.add(peer);
    const onChain = this.peers.all().filter((p) => p.known && !p.offChain).length;
    if (this.checkpointDisagreements.size < onChain) return;
    this.fatal = new SyncError(
      "checkpoint_mismatch",
      `the trusted checkpoint (commit ${prev.index}, digest ${toHex(prev.digest).slice(0, 16)}…) does not match what peers serve: ` +
        `commit ${start} from ${[...this.checkpointDisagreements].join(", ")} links to another digest. Check --checkpoint and --genesis.`,
    );
  }

  private launchBlockFetches(seg: Segment, head: boolean, now: number): void {
    const state = seg.state;
    if (state.kind !== "fetching_blocks") return;
    for (const chunk of state.chunks) {
      if (chunk.fetching) continue;
      if (!this.fetch.hasFreeSlot()) return;
      if (!this.budget.allows(this.budget.estimateBlocks(chunk.count), head)) return;
      const peer = this.pickForChunk(seg, chunk, now);
      if (peer === undefined) continue;
      const reserve = this.budget.estimateBlocks(chunk.count); // the chunk may have been cut
      const refs = state.batch.refs.slice(chunk.offset, chunk.offset + chunk.count);
      seg.chunkRequested(chunk);
      this.fetch.fetchBlocks(
        peer,
        refs,
        reserve,
        (res) => {
          if (seg.state !== state) return seg.chunkFailed(chunk); // applied or dropped meanwhile
          const signatures = this.options.verifyBlockSignatures
            ? { committee: state.batch.committee, chainId: this.chainId, verifier: this.config.verifier }
            : undefined;
          const { accepted, error } = checkBlocks(refs, res.blocks, signatures);
          if (error !== undefined) this.faults.ban(peer, error.code, `FetchBlocks: ${error.message}`);
          if (accepted.length > 0) this.budget.observeBlocks(res.bytes, res.blocks.length);
          this.budget.hold(
            seg,
            accepted.reduce((n, b) => n + b.length, 0),
          );
          seg.blocksAccepted(chunk, accepted);
          this.kick();
        },
        (e) => {
          seg.chunkFailed(chunk);
          const commit = commitOfRef(state.batch, chunk.offset);
          this.faults.onError(peer, "FetchBlocks", e as PeerError, commit?.index ?? seg.start);
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
  private pickForChunk(seg: Segment, chunk: Chunk, now: number): PeerState | undefined {
    const { first, last } = seg.chunkCommits(chunk);
    const peer = this.peers.pick(first.index, last.index, now);
    if (peer !== undefined || first === last) return peer;
    const partial = this.peers.pick(first.index, first.index, now);
    if (partial === undefined) return undefined;
    return seg.splitChunkAfterCommit(chunk, Math.min(partial.highest, last.index)) ? partial : undefined;
  }

  // ---- apply ---------------------------------------------------------------------------------

  /** Writes a run of ready segments in one atomic store batch, then tells subscribers and peers. */
  private async apply(run: readonly Segment[]): Promise<void> {
    this.applying = true;
    const units = run.flatMap((seg) => seg.startApplying());
    try {
      await this.store.apply(units);
    } catch (e) {
      const range = `${run[0]!.start}..${run.at(-1)!.end}`;
      this.fatal = new SyncError(
        "store_write",
        `cannot write commits ${range} to the store: ${(e as Error).message}`,
      );
      this.applying = false;
      this.kick();
      return;
    }
    for (const seg of this.plan.removeApplied(run.length)) this.budget.release(seg);
    const refs = units.flatMap((u) => u.blocks.map((b) => b.ref));
    const bytes = units.reduce((n, u) => u.blocks.reduce((k, b) => k + b.bytes.length, n), 0);
    this.config.onBlocksApplied?.(refs, units.at(-1)!.epoch);
    this.stats.commitsApplied += units.length;
    this.stats.blocksApplied += refs.length;
    this.stats.bytesApplied += bytes;
    const m = this.config.metrics;
    m?.commitsApplied.inc(units.length);
    m?.blocksApplied.inc(refs.length);
    m?.highestSynced.set(this.store.watermarks.highestSynced);
    this.applying = false;
    this.broadcast.notify();
    this.pushToPeersBehind();
    this.kick();
  }

  /** DESIGN §4 item 8: a PushCommit hint to usable peers known to be behind, at most every `pushIntervalMs`. */
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
      this.fetch.pushCommit(p, ref, marks.highestSynced);
    }
  }
}
