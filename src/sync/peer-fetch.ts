/**
 * Every RPC the engine makes goes through here, so that each gets the same treatment:
 * - a deadline: fetches pass the bytes they expect, their own and those already in flight to
 *   the peer (sharing its link), from which the client sizes an adaptive deadline; height queries have a fixed one (`heightQueryTimeoutMs`); all end on `stop()`;
 * - a slot: a call counts against `maxRequestsPerPeer` (and, for fetches, against
 *   `maxConcurrentRequests`) from launch until its answer is handled;
 * - the byte budget: a fetch reserves its estimated size until it settles;
 * - metrics and the balancer's throughput sample, on every fetch that succeeds: its rate times the
 *   mean number of calls in flight to the peer meanwhile, so that the sample is the peer's rate;
 * - an end when its peer leaves the set (`PeerState.leaving`): its work goes back to the plan.
 *
 * Threat: a slow or silent peer must not hold slots or budget for ever (the deadline frees them),
 * and a peer cannot make its answers cost us more than the budget allows. Answers come back
 * through `spawn`, the engine's guarded handlers: nothing here touches segment state.
 */
import type { Availability, BlocksResponse, CommitsResponse } from "../client/index.js";
import type { BlockRef, CommitRef } from "../gen/dagsync/v1/types_pb.js";
import type { ByteBudget } from "./byte-budget.js";
import type { SyncMetrics } from "./metrics.js";
import type { SyncNetwork } from "./network.js";
import type { SyncOptions } from "./options.js";
import type { PeerSet, PeerState } from "./peers.js";

/** Runs an I/O task and settles it through the engine's guarded handlers. */
export type Spawn = <T>(
  what: string,
  task: () => Promise<T>,
  onOk: (value: T) => void,
  onError: (e: unknown) => void,
) => void;

export interface PeerFetchDeps {
  readonly network: SyncNetwork;
  readonly peers: PeerSet;
  readonly budget: ByteBudget;
  readonly options: SyncOptions;
  readonly metrics: SyncMetrics | undefined;
  /** Aborted when the engine stops: every call in flight ends. */
  readonly signal: AbortSignal;
  readonly spawn: Spawn;
}

type Method = "FetchCommits" | "FetchBlocks" | "GetCommitAvailability";

/** How a call is accounted: fetches reserve budget and a global slot; height queries do not. */
interface CallSpec {
  readonly peer: PeerState;
  readonly method: Method;
  /** Bytes reserved against the budget, for fetches. */
  readonly reserve: number | undefined;
}

export class PeerFetch {
  /** Fetches in flight across all peers. */
  private fetches = 0;

  constructor(private readonly deps: PeerFetchDeps) {}

  /** Fetches in flight across all peers. */
  get inflight(): number {
    return this.fetches;
  }

  /** A fetch may start (`maxConcurrentRequests`). */
  hasFreeSlot(): boolean {
    return this.fetches < this.deps.options.maxConcurrentRequests;
  }

  /** The peer may take one more call (`maxRequestsPerPeer`). */
  peerHasFreeSlot(peer: PeerState): boolean {
    return peer.inflight < this.deps.options.maxRequestsPerPeer;
  }

  fetchCommits(
    peer: PeerState,
    start: number,
    end: number,
    reserve: number,
    onOk: (res: CommitsResponse) => void,
    onError: (e: unknown) => void,
  ): void {
    const { options, network } = this.deps;
    // Its deadline also covers the bytes already in flight to the peer: they share its link.
    const expectedBytes =
      Math.max(reserve * options.commitAnswerHeadroom, options.commitAnswerBytes) + peer.inflightBytes;
    this.call(
      { peer, method: "FetchCommits", reserve },
      "FetchCommits answer",
      (signal) => network.fetchCommits(peer.address, start, end, { signal, expectedBytes }),
      onOk,
      onError,
    );
  }

  fetchBlocks(
    peer: PeerState,
    refs: readonly BlockRef[],
    commits: { readonly first: number; readonly last: number },
    reserve: number,
    onOk: (res: BlocksResponse) => void,
    onError: (e: unknown) => void,
  ): void {
    // Sized for the bytes already in flight to the peer too: they share its link, so a long link
    // kept full by several requests does not time them out (DESIGN §4: deadlines suit the link).
    const expectedBytes = reserve + peer.inflightBytes;
    this.call(
      { peer, method: "FetchBlocks", reserve },
      "FetchBlocks answer",
      (signal) => this.deps.network.fetchBlocks(peer.address, refs, { signal, expectedBytes, commits }),
      onOk,
      onError,
    );
  }

  getCommitAvailability(
    peer: PeerState,
    onOk: (report: Availability) => void,
    onError: (e: unknown) => void,
  ): void {
    const signal = AbortSignal.any([
      this.deps.signal,
      peer.leaving.signal,
      AbortSignal.timeout(this.deps.options.heightQueryTimeoutMs),
    ]);
    this.call(
      { peer, method: "GetCommitAvailability", reserve: undefined },
      "height answer",
      () => this.deps.network.getCommitAvailability(peer.address, signal),
      onOk,
      onError,
    );
  }

  /** A hint, fire and forget: it holds no slot and its failure means nothing. */
  pushCommit(peer: PeerState, ref: CommitRef, highestSynced: number): void {
    this.deps.network.pushCommit(peer.address, ref, highestSynced).catch(() => {});
  }

  private call<T>(
    spec: CallSpec,
    what: string,
    task: (signal: AbortSignal) => Promise<T>,
    onOk: (value: T) => void,
    onError: (e: unknown) => void,
  ): void {
    const { peers, budget, metrics, signal, spawn } = this.deps;
    const { peer, method, reserve } = spec;
    const started = performance.now();
    accrue(peer, started);
    const areaAtStart = peer.inflightArea;
    peer.inflight++;
    if (reserve !== undefined) {
      this.fetches++;
      peer.inflightBytes += reserve;
      budget.reserve(reserve);
    }
    let concurrency = 1;
    const end = () => {
      const now = performance.now();
      accrue(peer, now);
      if (now > started) concurrency = (peer.inflightArea - areaAtStart) / (now - started);
      peer.inflight--;
      if (reserve !== undefined) {
        this.fetches--;
        peer.inflightBytes -= reserve;
        budget.unreserve(reserve);
      }
    };
    spawn(
      what,
      () => task(AbortSignal.any([signal, peer.leaving.signal])),
      (value) => {
        end();
        const bytes = (value as { bytes?: number }).bytes;
        if (reserve !== undefined && bytes !== undefined) {
          const ms = performance.now() - started;
          peers.recordSuccess(peer, bytes, ms, concurrency);
          metrics?.bytesFetched.inc({ method }, bytes);
          metrics?.fetchSeconds.observe({ method }, ms / 1000);
        }
        onOk(value);
      },
      (e) => {
        end();
        onError(e);
      },
    );
  }
}

/** Brings the peer's ∫ inflight dt up to `now` (ms), before its count of calls in flight changes. */
function accrue(peer: PeerState, now: number): void {
  if (peer.inflightAreaAt > 0) peer.inflightArea += peer.inflight * (now - peer.inflightAreaAt);
  peer.inflightAreaAt = now;
}
