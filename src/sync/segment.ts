/**
 * One segment of the chain ahead of the store (a commit range), as a pure state machine modelled
 * on Lodestar's `sync/range/batch.ts`:
 *
 *   idle → fetching_commits → fetched → fetching_blocks → ready → applying
 *     ↑           │               │
 *     └───────────┴───────────────┘  (failed or rejected: back to idle, fetched elsewhere)
 *
 * The state is a discriminated union; each transition is a method named for its edge that checks
 * the state it leaves and throws a SegmentError("wrong_state") otherwise, so that a late or
 * duplicated answer can never move a segment along an edge it does not have.
 *
 * Threat: every byte here came from a peer. Blocks are kept by the ref they were verified
 * against (never by arrival order), and they are matched to commits in one place, `startApplying`,
 * which reads each commit's own refs: a peer cannot make us store a block under a commit that does
 * not reference it. No I/O, no clock: the engine decides, this only records.
 */
import { blockRefKey, type CommitEntry, type CommitteeView } from "../core/index.js";
import type { BlockRef } from "../gen/dagsync/v1/types_pb.js";
import type { ApplyUnit } from "../store/index.js";

export type SegmentErrorCode =
  /** A transition was asked of a segment in a state that has no such edge (a bug). */
  | "wrong_state"
  /** Apply units were asked of a batch with a referenced block missing (a bug). */
  | "missing_block";

export class SegmentError extends Error {
  override readonly name = "SegmentError";

  constructor(
    readonly code: SegmentErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** A commit batch that passed the full check (links, one epoch, quorum), with its block refs. */
export interface VerifiedBatch {
  readonly commits: readonly CommitEntry[];
  readonly certifiers: readonly Uint8Array[];
  readonly committee: CommitteeView;
  /** Committee of the next epoch when the last commit ends its epoch. */
  readonly nextCommittee: CommitteeView | undefined;
  /** Every commit's refs, in order: commit k's blocks are a contiguous run of them. */
  readonly refs: readonly BlockRef[];
  /** `refEnds[k]`: the number of refs of commits[0..k], so commit k owns refs [refEnds[k-1], refEnds[k]). */
  readonly refEnds: readonly number[];
}

export function verifiedBatch(
  commits: readonly CommitEntry[],
  certifiers: readonly Uint8Array[],
  committee: CommitteeView,
  nextCommittee: CommitteeView | undefined,
): VerifiedBatch {
  const refs: BlockRef[] = [];
  const refEnds: number[] = [];
  for (const c of commits) {
    for (const ref of c.commit.blocks) refs.push(ref);
    refEnds.push(refs.length);
  }
  return { commits, certifiers, committee, nextCommittee, refs, refEnds };
}

/** The commit that references ref number `ref` of the batch (binary search over `refEnds`). */
export function commitOfRef(batch: VerifiedBatch, ref: number): CommitEntry | undefined {
  const { refEnds } = batch;
  let lo = 0;
  let hi = refEnds.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (refEnds[mid]! > ref) hi = mid;
    else lo = mid + 1;
  }
  return batch.commits[lo];
}

/** A run of `VerifiedBatch.refs` still to fetch: [offset, offset + count). */
export interface Chunk {
  offset: number;
  count: number;
  fetching: boolean;
}

/**
 * Blocks fetched or found at hand, by the position in `VerifiedBatch.refs` of the ref each was
 * checked against. A position names one ref of one commit (`refEnds`), so a block can only ever
 * be applied under the commit whose ref it matched; numbers rather than hex keys, because keying
 * 100,000 blocks by hex digest twice each cost ≈5 % of a catch-up's CPU.
 */
export type BlocksByRef = Map<number, Uint8Array>;

/**
 * Cuts the refs still to fetch into chunks of at most `maxRefs` consecutive refs; a block at hand
 * (near-tip) is taken instead and ends the chunk before it. Every ref is either at hand or in
 * exactly one chunk.
 */
export function planChunks(
  refs: readonly BlockRef[],
  maxRefs: number,
  atHand: ((digest: Uint8Array) => Uint8Array | undefined) | undefined,
): { chunks: Chunk[]; found: BlocksByRef; foundBytes: number } {
  const chunks: Chunk[] = [];
  const found: BlocksByRef = new Map();
  let foundBytes = 0;
  let chunk: Chunk | undefined;
  refs.forEach((ref, k) => {
    const block = atHand?.(ref.digest);
    if (block !== undefined) {
      found.set(k, block);
      foundBytes += block.length;
      chunk = undefined;
      return;
    }
    if (chunk === undefined || chunk.count >= maxRefs) {
      chunk = { offset: k, count: 0, fetching: false };
      chunks.push(chunk);
    }
    chunk.count++;
  });
  return { chunks, found, foundBytes };
}

export type SegmentState =
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
      readonly batch: VerifiedBatch;
      readonly chunks: Chunk[];
      readonly blocks: BlocksByRef;
    }
  | { readonly kind: "ready"; readonly batch: VerifiedBatch; readonly blocks: BlocksByRef }
  | { readonly kind: "applying"; readonly batch: VerifiedBatch };

type Kind = SegmentState["kind"];
type StateOf<K extends Kind> = Extract<SegmentState, { kind: K }>;

/** Where the chain stands after a verified segment: what the next one must link to. */
export interface ChainPoint {
  readonly index: number;
  readonly digest: Uint8Array;
  /** Epoch of the commit after `index`. */
  readonly epoch: number;
}

export class Segment {
  private _state: SegmentState = { kind: "idle" };
  /** Bytes this segment holds (fetched, not yet applied), as the byte budget counts them. */
  bytes = 0;

  constructor(
    public start: number,
    public end: number,
  ) {}

  get state(): SegmentState {
    return this._state;
  }

  /** The state, asserting its kind: the guard of every edge. */
  private expect<K extends Kind>(edge: string, ...kinds: K[]): StateOf<K> {
    const s = this._state;
    if (!(kinds as Kind[]).includes(s.kind))
      throw new SegmentError(
        "wrong_state",
        `segment ${this.start}..${this.end}: ${edge} from ${s.kind} (expects ${kinds.join(" or ")})`,
      );
    return s as StateOf<K>;
  }

  // ---- edges ---------------------------------------------------------------------------------

  /** idle → fetching_commits: `peer` was asked for the batch that starts the segment. */
  startFetchingCommits(peer: string): void {
    this.expect("startFetchingCommits", "idle");
    this._state = { kind: "fetching_commits", peer, requestStart: this.start };
  }

  /**
   * fetching_commits → fetched: the whole batch, wherever it ends (DESIGN §3, the batch contract):
   * its certifier blocks certify its last commit, so cutting it would discard the proof.
   */
  commitsFetched(commits: Uint8Array[], certifiers: Uint8Array[]): void {
    const s = this.expect("commitsFetched", "fetching_commits");
    this._state = { kind: "fetched", requestStart: s.requestStart, commits, certifiers, peer: s.peer };
  }

  /** fetching_commits → idle: the call failed or brought nothing; the segment is asked again. */
  commitFetchFailed(): void {
    this.expect("commitFetchFailed", "fetching_commits");
    this._state = { kind: "idle" };
  }

  /** fetched → idle: the batch was rejected, or covered entirely by the batch before it. */
  batchDiscarded(): void {
    this.expect("batchDiscarded", "fetched");
    this._state = { kind: "idle" };
  }

  /**
   * fetched → fetching_blocks (or ready when every block is at hand): the batch verified and the
   * segment now ends where it does. Returns the bytes of the blocks found at hand, now held.
   */
  batchVerified(
    batch: VerifiedBatch,
    maxRefsPerChunk: number,
    atHand: ((digest: Uint8Array) => Uint8Array | undefined) | undefined,
  ): number {
    this.expect("batchVerified", "fetched");
    const { chunks, found, foundBytes } = planChunks(batch.refs, maxRefsPerChunk, atHand);
    this._state =
      chunks.length === 0
        ? { kind: "ready", batch, blocks: found }
        : { kind: "fetching_blocks", batch, chunks, blocks: found };
    return foundBytes;
  }

  /** A chunk was asked of a peer. */
  chunkRequested(chunk: Chunk): void {
    this.expect("chunkRequested", "fetching_blocks");
    chunk.fetching = true;
  }

  /** A chunk's call ended without blocks (or after the segment moved on): it may be asked again. */
  chunkFailed(chunk: Chunk): void {
    chunk.fetching = false;
  }

  /**
   * Splits `chunk` after the refs of commit `lastIndex`, so that a peer holding only up to that
   * commit can serve its first part; the rest becomes a chunk of its own, for whoever holds it.
   * False (and nothing changes) when that leaves either part empty.
   */
  splitChunkAfterCommit(chunk: Chunk, lastIndex: number): boolean {
    const s = this.expect("splitChunkAfterCommit", "fetching_blocks");
    const end = s.batch.refEnds[lastIndex - s.batch.commits[0]!.index];
    if (end === undefined) return false;
    const cut = end - chunk.offset;
    if (cut <= 0 || cut >= chunk.count) return false;
    s.chunks.splice(s.chunks.indexOf(chunk) + 1, 0, {
      offset: chunk.offset + cut,
      count: chunk.count - cut,
      fetching: false,
    });
    chunk.count = cut;
    return true;
  }

  /**
   * fetching_blocks → fetching_blocks, or ready once no chunk is left: `accepted` are the blocks
   * that passed the check against the chunk's refs, a prefix of it (the remainder is asked again,
   * possibly elsewhere). Each is kept under the ref it was checked against.
   */
  blocksAccepted(chunk: Chunk, accepted: readonly Uint8Array[]): void {
    const s = this.expect("blocksAccepted", "fetching_blocks");
    if (accepted.length > chunk.count)
      throw new SegmentError("wrong_state", `${accepted.length} blocks accepted for ${chunk.count} refs`);
    chunk.fetching = false;
    accepted.forEach((b, k) => {
      s.blocks.set(chunk.offset + k, b);
    });
    chunk.offset += accepted.length;
    chunk.count -= accepted.length;
    if (chunk.count === 0) s.chunks.splice(s.chunks.indexOf(chunk), 1);
    if (s.chunks.length === 0) this._state = { kind: "ready", batch: s.batch, blocks: s.blocks };
  }

  /**
   * ready → applying: one store unit per commit, with the blocks its own refs name, in the order
   * it names them. This is the one place where blocks are matched to commits.
   */
  startApplying(): ApplyUnit[] {
    const s = this.expect("startApplying", "ready");
    const { commits, certifiers, nextCommittee, refEnds } = s.batch;
    const units = commits.map((c, k): ApplyUnit => {
      const first = k === 0 ? 0 : refEnds[k - 1]!;
      const blocks = c.commit.blocks.map((ref, j) => {
        const bytes = s.blocks.get(first + j);
        if (bytes === undefined)
          throw new SegmentError("missing_block", `commit ${c.index}: block ${blockRefKey(ref)} missing`);
        return { ref, bytes };
      });
      return {
        index: c.index,
        epoch: c.epoch,
        commitBytes: c.bytes,
        commitDigest: c.digest,
        blocks,
        certifierBlocks: k === commits.length - 1 ? certifiers : undefined,
        nextCommittee: c.commit.endOfEpoch !== undefined ? nextCommittee?.committee : undefined,
      };
    });
    this._state = { kind: "applying", batch: s.batch };
    return units;
  }

  // ---- views ---------------------------------------------------------------------------------

  /** Commits not yet verified (nothing is learnt from a segment in these states). */
  get unverified(): boolean {
    const k = this._state.kind;
    return k === "idle" || k === "fetching_commits" || k === "fetched";
  }

  /** The commits of a fetched batch the segment still covers (a batch before it may have filled a prefix). */
  uncoveredCommits(): Uint8Array[] {
    const s = this.expect("uncoveredCommits", "fetched");
    return s.commits.slice(this.start - s.requestStart);
  }

  /** The verified batch, from fetching_blocks on. */
  get batch(): VerifiedBatch | undefined {
    const s = this._state;
    return s.kind === "fetching_blocks" || s.kind === "ready" || s.kind === "applying" ? s.batch : undefined;
  }

  /** Where the chain stands after this segment, once verified. */
  verifiedThrough(): ChainPoint | undefined {
    const batch = this.batch;
    const last = batch?.commits.at(-1);
    if (batch === undefined || last === undefined) return undefined;
    const epoch = batch.nextCommittee !== undefined ? last.epoch + 1 : last.epoch;
    return { index: last.index, digest: last.digest, epoch };
  }

  /** While fetching blocks: the commit of the first block still missing. */
  firstMissingCommit(): number | undefined {
    const s = this._state;
    if (s.kind !== "fetching_blocks") return undefined;
    const first = s.chunks.reduce((min, c) => Math.min(min, c.offset), Number.POSITIVE_INFINITY);
    return commitOfRef(s.batch, first)?.index;
  }

  /** The first and last commit whose refs a chunk of this segment's batch spans. */
  chunkCommits(chunk: Chunk): { first: CommitEntry; last: CommitEntry } {
    const s = this.expect("chunkCommits", "fetching_blocks");
    return {
      first: commitOfRef(s.batch, chunk.offset)!,
      last: commitOfRef(s.batch, chunk.offset + chunk.count - 1)!,
    };
  }
}
