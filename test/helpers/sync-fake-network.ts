/**
 * A fake SyncNetwork for the sync engine's unit tests: it serves an in-memory DevnetChain per peer
 * the way a real SyncServer does, with per-peer knobs to misbehave.
 *
 * Honest serving (src/server/state-sync.ts):
 * - GetCommitAvailability: `{highest, lowest, epoch, genesisDigest, highestDigest}`.
 * - FetchCommits: from `start`, at most `maxCommitsPerFetch` commits, truncated at the end of
 *   start's epoch and at the peer's height; the certifier blocks are those of the last returned
 *   commit. A start beyond the peer's height or below its lowest (pruned) is OUT_OF_RANGE
 *   (`unavailable_range`).
 * - FetchBlocks: the blocks for the refs in order (NOT_FOUND when the peer lacks one, or pruned
 *   it), at most `blocksPerResponse` of them (a prefix; the client asks again for the rest).
 *
 * Byzantine peers beyond the simple knobs use `rewriteCommits`, which gets the honest response
 * and the generated commits it holds, and returns what the peer sends instead.
 *
 * Deadlines: the production network (PeerClient) puts a deadline on every call; the engine relies
 * on it. The fake models that with `deadlineMs`: a stalled call fails with a `deadline` PeerError
 * when it passes, and with `cancelled` when the engine's signal aborts (so stalls end on stop).
 */
import type { Availability, BlocksResponse, CommitsResponse } from "../../src/client/index.js";
import { PeerError, type PeerErrorKind } from "../../src/client/index.js";
import { toHex } from "../../src/core/index.js";
import type { GeneratedCommit } from "../../src/devnet/chain.js";
import type { BlockRef, CommitRef } from "../../src/gen/dagsync/v1/types_pb.js";
import type { FetchOptions, SyncNetwork } from "../../src/sync/network.js";

export type FakeMethod = "availability" | "commits" | "blocks";

/** How one fake peer behaves; every knob is off (honest) by default. */
export interface FakePeerBehaviour {
  /** Highest commit the peer holds and serves (default: the whole chain). */
  height?: number;
  /** Lowest commit the peer still holds: it pruned everything below (default 1). */
  lowest?: number;
  /** Height it advertises in GetCommitAvailability, if it lies (default: `height`). */
  advertisedHeight?: number;
  /** Genesis digest it advertises (default: the chain's). */
  genesisDigest?: Uint8Array;
  /** Flip a byte of the first block of every FetchBlocks response. */
  tamperBlock?: boolean;
  /** Flip a byte of the block at this position of every FetchBlocks response that reaches it. */
  tamperBlockAt?: number;
  /** Flip a byte of the first commit of every FetchCommits response. */
  tamperCommit?: boolean;
  /** Send only this many certifier blocks (e.g. 1: below quorum). */
  keepCertifiers?: number;
  /** Flip a signature byte of the first certifier block of every FetchCommits response. */
  flipCertifierSignature?: boolean;
  /** These calls never answer (until the deadline or the engine's signal). */
  stall?: readonly FakeMethod[];
  /** These calls fail with a PeerError of this kind. */
  fail?: {
    readonly kind: PeerErrorKind;
    readonly methods: readonly FakeMethod[];
    readonly retryAfterMs?: number;
  };
  /** Return at most this many blocks per FetchBlocks response (a prefix). */
  blocksPerResponse?: number;
  /** Server cap of commits per FetchCommits (default 100, as the real server). */
  maxCommitsPerFetch?: number;
  /**
   * The commits whose certifier blocks the peer holds (default: all). Like a node that synced
   * with other batch sizes or from a checkpoint, it then answers by the batch contract (DESIGN
   * §3): it ends at the highest commit it can certify within the request, or, when it can certify
   * none there, runs past the end to the first one it can.
   */
  certifies?: (index: number) => boolean;
  /** Delay before each answer, ms (default 0: next macrotask). */
  latencyMs?: number;
  /** Replaces every FetchCommits response (after the knobs above) with what this returns. */
  rewriteCommits?: (response: CommitsPayload, served: readonly GeneratedCommit[]) => CommitsPayload;
}

/** The two lists of a FetchCommits response. */
export interface CommitsPayload {
  readonly commits: Uint8Array[];
  readonly certifierBlocks: Uint8Array[];
}

export interface FakeCall {
  readonly peer: string;
  readonly method: FakeMethod;
  /** FetchCommits: the range asked for. */
  readonly start?: number;
  readonly end?: number;
  /** FetchBlocks: refs asked for. */
  readonly refs?: number;
  /** When the call started and ended, performance.now() ms. */
  readonly at: number;
  readonly doneAt: number;
  /** What was returned (commits or blocks), or the error kind. */
  readonly returned?: number;
  readonly error?: PeerErrorKind;
}

export interface FakeNetworkOptions {
  /** Deadline of every call, as PeerClient enforces it, ms (default 300). */
  readonly deadlineMs?: number;
}

function flipByte(bytes: Uint8Array, at: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] = copy[at]! ^ 0xff;
  return copy;
}

export class FakeSyncNetwork implements SyncNetwork {
  readonly calls: FakeCall[] = [];
  readonly pushes: { peer: string; index: number; highestSynced: number }[] = [];
  private readonly behaviours = new Map<string, FakePeerBehaviour>();
  private readonly blocks = new Map<string, { bytes: Uint8Array; commitIndex: number }>();
  private readonly epochEnds = new Map<number, number>();
  private readonly deadlineMs: number;
  /** Calls in flight per peer now, and the most seen at once. */
  private readonly inflight = new Map<string, number>();
  readonly maxInflight = new Map<string, number>();
  closed = false;

  constructor(
    private readonly commits: readonly GeneratedCommit[],
    private readonly genesisDigest: Uint8Array,
    peers: Readonly<Record<string, FakePeerBehaviour>>,
    options: FakeNetworkOptions = {},
  ) {
    this.deadlineMs = options.deadlineMs ?? 300;
    for (const [address, b] of Object.entries(peers)) this.behaviours.set(address, { ...b });
    commits.forEach((c, k) => {
      if (c.index !== k + 1) throw new Error(`commit ${k + 1} is missing from the chain given`);
      for (const b of c.blocks)
        this.blocks.set(toHex(b.ref.digest), { bytes: b.bytes, commitIndex: c.index });
      if (c.nextCommittee !== undefined) this.epochEnds.set(c.epoch, c.index);
    });
  }

  /** Changes a peer's knobs while the engine runs (e.g. its chain grows). */
  update(peer: string, patch: Partial<FakePeerBehaviour>): void {
    this.behaviours.set(peer, { ...this.behaviour(peer), ...patch });
  }

  /** The commit whose sub-DAG holds the block with this digest. */
  commitIndexOfBlock(digest: Uint8Array): number | undefined {
    return this.blocks.get(toHex(digest))?.commitIndex;
  }

  callsTo(peer: string, method?: FakeMethod): FakeCall[] {
    return this.calls.filter((c) => c.peer === peer && (method === undefined || c.method === method));
  }

  private behaviour(peer: string): FakePeerBehaviour {
    const b = this.behaviours.get(peer);
    if (b === undefined) throw new PeerError("network", peer, "connection refused (unknown fake peer)");
    return b;
  }

  private height(b: FakePeerBehaviour): number {
    return Math.min(b.height ?? this.commits.length, this.commits.length);
  }

  /** Latency, stalls and injected failures, honouring the deadline and the caller's signal. */
  private async prelude(peer: string, method: FakeMethod, signal: AbortSignal): Promise<FakePeerBehaviour> {
    const b = this.behaviour(peer);
    const deadline = AbortSignal.timeout(this.deadlineMs);
    const both = AbortSignal.any([signal, deadline]);
    const stall = b.stall?.includes(method) === true;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        clearTimeout(timer);
        reject(
          signal.aborted
            ? new PeerError("cancelled", peer, `${method}: cancelled`)
            : new PeerError("deadline", peer, `${method}: deadline exceeded`),
        );
      };
      const timer = stall
        ? undefined
        : setTimeout(() => {
            both.removeEventListener("abort", onAbort);
            resolve();
          }, b.latencyMs ?? 0);
      if (both.aborted) onAbort();
      else both.addEventListener("abort", onAbort, { once: true });
    });
    if (b.fail?.methods.includes(method) === true)
      throw new PeerError(b.fail.kind, peer, `${method}: injected ${b.fail.kind} error`, b.fail.retryAfterMs);
    return b;
  }

  private async record<T>(
    call: Omit<FakeCall, "at" | "doneAt">,
    work: () => Promise<T>,
    count: (t: T) => number,
  ): Promise<T> {
    const at = performance.now();
    const now = (this.inflight.get(call.peer) ?? 0) + 1;
    this.inflight.set(call.peer, now);
    this.maxInflight.set(call.peer, Math.max(now, this.maxInflight.get(call.peer) ?? 0));
    try {
      const result = await work();
      this.calls.push({ ...call, at, doneAt: performance.now(), returned: count(result) });
      return result;
    } catch (e) {
      this.calls.push({
        ...call,
        at,
        doneAt: performance.now(),
        error: e instanceof PeerError ? e.kind : "rpc",
      });
      throw e;
    } finally {
      this.inflight.set(call.peer, (this.inflight.get(call.peer) ?? 1) - 1);
    }
  }

  getCommitAvailability(peer: string, signal: AbortSignal): Promise<Availability> {
    return this.record(
      { peer, method: "availability" },
      async () => {
        const b = await this.prelude(peer, "availability", signal);
        const height = this.height(b);
        const top = this.commits[height - 1];
        return {
          highest: b.advertisedHeight ?? height,
          lowest: b.lowest ?? 1,
          epoch: top === undefined ? 0 : top.nextCommittee !== undefined ? top.epoch + 1 : top.epoch,
          genesisDigest: b.genesisDigest ?? this.genesisDigest,
          highestDigest: top?.commitDigest ?? this.genesisDigest,
        };
      },
      () => 0,
    );
  }

  fetchCommits(peer: string, start: number, end: number, options: FetchOptions): Promise<CommitsResponse> {
    return this.record(
      { peer, method: "commits", start, end },
      async () => {
        const b = await this.prelude(peer, "commits", options.signal);
        if (start < 1 || start > end)
          throw new PeerError("rpc", peer, `FetchCommits: invalid range ${start}..${end} (INVALID_ARGUMENT)`);
        const height = this.height(b);
        if (start > height || start < (b.lowest ?? 1))
          throw new PeerError("unavailable_range", peer, `FetchCommits: commit ${start} is not available`);
        const first = this.commits[start - 1]!;
        let last = Math.min(end, start + (b.maxCommitsPerFetch ?? 100) - 1, height);
        const epochEnd = this.epochEnds.get(first.epoch);
        if (epochEnd !== undefined) last = Math.min(last, epochEnd);
        const certifies = b.certifies;
        if (certifies !== undefined) {
          let k = last;
          while (k >= start && !certifies(k)) k--;
          if (k < start) {
            // Nothing certifiable within the bounds: run past them to the first certifiable commit.
            const limit = Math.min(epochEnd ?? height, height);
            k = last + 1;
            while (k <= limit && !certifies(k)) k++;
            if (k > limit)
              throw new PeerError(
                "unavailable_range",
                peer,
                `FetchCommits: no certified commit at or after ${start}`,
              );
          }
          last = k;
        }
        const chosen = this.commits.slice(start - 1, last);
        let commits = chosen.map((c) => c.commitBytes);
        let certifierBlocks = chosen.at(-1)!.certifierBlocks.slice();
        if (b.tamperCommit === true)
          commits = [flipByte(commits[0]!, commits[0]!.length - 1), ...commits.slice(1)];
        if (b.keepCertifiers !== undefined) certifierBlocks = certifierBlocks.slice(0, b.keepCertifiers);
        if (b.flipCertifierSignature === true && certifierBlocks.length > 0)
          // A WireSignedBlock ends with its 64-byte signature field.
          certifierBlocks[0] = flipByte(certifierBlocks[0]!, certifierBlocks[0]!.length - 10);
        if (b.rewriteCommits !== undefined)
          ({ commits, certifierBlocks } = b.rewriteCommits({ commits, certifierBlocks }, chosen));
        let bytes = 0;
        for (const x of [...commits, ...certifierBlocks]) bytes += x.length;
        return { commits, certifierBlocks, bytes };
      },
      (r) => r.commits.length,
    );
  }

  fetchBlocks(peer: string, refs: readonly BlockRef[], options: FetchOptions): Promise<BlocksResponse> {
    return this.record(
      { peer, method: "blocks", refs: refs.length },
      async () => {
        const b = await this.prelude(peer, "blocks", options.signal);
        if (refs.length === 0 || refs.length > 1000)
          throw new PeerError("rpc", peer, `FetchBlocks: ${refs.length} refs (INVALID_ARGUMENT)`);
        const height = this.height(b);
        let blocks: Uint8Array[] = [];
        for (const ref of refs) {
          const found = this.blocks.get(toHex(ref.digest));
          if (found === undefined || found.commitIndex > height || found.commitIndex < (b.lowest ?? 1))
            throw new PeerError(
              "unavailable_range",
              peer,
              `FetchBlocks: block round ${ref.round} not stored`,
            );
          blocks.push(found.bytes);
        }
        if (b.blocksPerResponse !== undefined) blocks = blocks.slice(0, b.blocksPerResponse);
        if (b.tamperBlock === true) blocks[0] = flipByte(blocks[0]!, Math.floor(blocks[0]!.length / 2));
        const at = b.tamperBlockAt;
        if (at !== undefined && at < blocks.length)
          blocks[at] = flipByte(blocks[at]!, Math.floor(blocks[at]!.length / 2));
        let bytes = 0;
        for (const x of blocks) bytes += x.length;
        return { blocks, bytes };
      },
      (r) => r.blocks.length,
    );
  }

  async pushCommit(peer: string, commit: CommitRef, highestSynced: number): Promise<void> {
    this.pushes.push({ peer, index: Number(commit.index), highestSynced });
  }

  close(): void {
    this.closed = true;
  }
}
