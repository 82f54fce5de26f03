/**
 * The fetch pipeline (DESIGN §4 item 4): launches the work segments need, head first, within the
 * request slots and the byte budget, and records the answers on the segments.
 *
 * - An idle segment asks one peer that holds its first commit for the batch that starts it; the
 *   answer is kept whole (the batch contract) until its turn to verify.
 * - A segment fetching blocks asks for each chunk of ≤ `blocksPerRequest` refs from a peer that
 *   holds the commits those refs belong to; when nobody holds them all, the chunk is cut after the
 *   last commit the best peer holding its first one has. A chunk that ends its segment is folded
 *   with the first chunks of the segments after it, up to `blocksPerRequest` refs in one call.
 *
 * Threat: a FetchBlocks answer is checked by digest (and signature, with `verifyBlockSignatures`)
 * against the verified refs asked for; only the valid prefix is kept and the rest asked again,
 * possibly elsewhere. An empty or invalid answer is evidence for a ban; a failed call is not.
 */
import type { PeerError } from "../client/index.js";
import {
  blockSignatureItems,
  type CommitteeView,
  type SignatureItem,
  type SignatureVerdicts,
  type SignatureVerifier,
} from "../core/index.js";
import { checkBlocks } from "./batch-check.js";
import type { ByteBudget } from "./byte-budget.js";
import type { SyncOptions } from "./options.js";
import type { PeerFaults } from "./peer-faults.js";
import type { PeerFetch } from "./peer-fetch.js";
import type { PeerSet, PeerState } from "./peers.js";
import { type Chunk, commitOfRef, type Segment, type SegmentState } from "./segment.js";
import type { SegmentPlan } from "./segment-plan.js";

export interface FetchPipelineDeps {
  readonly plan: SegmentPlan;
  readonly peers: PeerSet;
  readonly fetch: PeerFetch;
  readonly budget: ByteBudget;
  readonly faults: PeerFaults;
  readonly options: SyncOptions;
  readonly chainId: string;
  readonly verifier: SignatureVerifier;
  /** Signatures checked off the event loop as answers arrive (SyncEngineConfig.verifySignatures). */
  readonly presign?: Presign | undefined;
  /** An answer was recorded: the loop may have work. */
  readonly kick: () => void;
  /**
   * Runs a handler as the engine runs its own (a throw becomes the engine's internal error, not
   * an unhandled rejection): for answers recorded after the pool, outside the fetch's handler.
   */
  readonly guard: (what: string, fn: () => void) => void;
}

export interface Presign {
  readonly verify: (items: readonly SignatureItem[]) => Promise<boolean[]>;
  /** Where the verdicts go, for the checks to use. */
  readonly verdicts: SignatureVerdicts;
  /** Committees verified so far, by epoch. */
  readonly committeeOf: (epoch: number) => CommitteeView | undefined;
}

export class FetchPipeline {
  constructor(private readonly deps: FetchPipelineDeps) {}

  /**
   * Runs `record` once the signatures of `blocks` are checked through the pool (at once without
   * one, or when there is nothing to check). The answer's bytes stay reserved meanwhile, so
   * answers waiting on the pool count against the in-flight byte bound. A failed pool only
   * leaves the checks to verify inline.
   */
  private afterSignatures(
    blocks: readonly Uint8Array[],
    committeeOf: (epoch: number) => CommitteeView | undefined,
    bytes: number,
    record: () => void,
  ): void {
    const { presign, budget, chainId } = this.deps;
    const items = presign === undefined ? [] : blockSignatureItems(blocks, committeeOf, chainId);
    if (presign === undefined || items.length === 0) return record();
    budget.reserve(bytes);
    presign
      .verify(items)
      .then(
        (valid) => {
          items.forEach((item, k) => {
            presign.verdicts.set(item.signedBlock, item.publicKey, valid[k] === true);
          });
        },
        () => {},
      )
      .finally(() => {
        budget.unreserve(bytes);
        this.deps.guard("recording an answer after its signature checks", record);
      });
  }

  /** Launches what the planned segments need, head first, while request slots are free. */
  launch(now: number): void {
    const segments = this.deps.plan.segments;
    for (let i = 0; i < segments.length && this.deps.fetch.hasFreeSlot(); i++) {
      const seg = segments[i]!;
      if (seg.state.kind === "idle") this.fetchCommits(seg, i === 0, now);
      else if (seg.state.kind === "fetching_blocks") this.fetchBlocks(i, now);
    }
  }

  private fetchCommits(seg: Segment, head: boolean, now: number): void {
    const { budget, peers, plan, faults, kick } = this.deps;
    const reserve = budget.estimateCommits(seg.end - seg.start + 1);
    if (!budget.allows(reserve, head)) return;
    const peer = peers.pick(seg.start, seg.start, now);
    if (peer === undefined) return;
    const { start, end } = seg;
    seg.startFetchingCommits(peer.address);
    this.deps.fetch.fetchCommits(
      peer,
      start,
      end,
      reserve,
      (res) =>
        this.afterSignatures(
          res.certifierBlocks,
          this.deps.presign?.committeeOf ?? noCommittee,
          res.bytes,
          () => {
            if (!plan.includes(seg)) return; // a batch before it covered the whole segment
            if (res.commits.length === 0) {
              seg.commitFetchFailed();
              faults.ban(peer, "malformed", `returned no commits for ${start}..${seg.end}`);
            } else {
              seg.commitsFetched(res.commits, res.certifierBlocks);
              budget.hold(seg, res.bytes);
            }
            kick();
          },
        ),
      (e) => {
        if (plan.includes(seg)) seg.commitFetchFailed();
        faults.onError(peer, "FetchCommits", e as PeerError, start);
        kick();
      },
    );
  }

  /** Asks for the chunks of segment `index` not being fetched, each folded with what follows it. */
  private fetchBlocks(index: number, now: number): void {
    const { budget } = this.deps;
    const seg = this.deps.plan.segments[index]!;
    const state = seg.state;
    if (state.kind !== "fetching_blocks") return;
    const head = index === 0;
    // By index: a chunk cut for a peer holding only part of it (pickForChunk) puts its remainder
    // right after it, for another peer in this same pass.
    for (let c = 0; c < state.chunks.length; c++) {
      const chunk = state.chunks[c]!;
      if (chunk.fetching) continue;
      if (!this.deps.fetch.hasFreeSlot()) return;
      if (!budget.allows(budget.estimateBlocks(chunk.count), head)) return;
      const first: CallPart = { seg, state, chunk };
      const folded = this.foldFollowing(index, first, now);
      if (folded !== undefined) {
        this.requestParts(folded.parts, folded.peer);
        continue;
      }
      if (!head && this.waitsToFold(index, first)) continue;
      const peer = this.pickForChunk(seg, chunk, now);
      if (peer === undefined) continue;
      this.requestParts([first], peer); // the chunk may have been cut
    }
  }

  /**
   * `part` with the first chunks of the segments after it, when it ends its segment's refs, the
   * next segments are fetching blocks from their first ref, the whole fits in one request
   * (`blocksPerRequest`) and the byte budget, and one peer holds every commit involved; else
   * undefined. Segments hold ≈100 commits (what one FetchCommits returns), ≈450 refs on a busy
   * chain: folding makes each FetchBlocks carry about `blocksPerRequest` refs, halving the calls
   * (and their per-call costs on both sides) of a catch-up.
   */
  private foldFollowing(
    index: number,
    part: CallPart,
    now: number,
  ): { parts: CallPart[]; peer: PeerState } | undefined {
    const { plan, budget, options, peers } = this.deps;
    const parts = [part];
    let count = part.chunk.count;
    for (let j = index + 1; j < plan.segments.length; j++) {
      const last = parts[parts.length - 1]!;
      if (last.chunk.offset + last.chunk.count !== last.state.batch.refs.length) break;
      const seg = plan.segments[j]!;
      const state = seg.state;
      if (state.kind !== "fetching_blocks") break;
      const chunk = state.chunks[0];
      if (chunk === undefined || chunk.fetching || chunk.offset !== 0) break;
      if (count + chunk.count > options.blocksPerRequest) break;
      parts.push({ seg, state, chunk });
      count += chunk.count;
    }
    while (parts.length > 1) {
      const first = part.seg.chunkCommits(part.chunk).first;
      const tail = parts[parts.length - 1]!;
      const last = tail.seg.chunkCommits(tail.chunk).last;
      const total = parts.reduce((n, p) => n + p.chunk.count, 0);
      // Never under the head's exemption: only the head's own refs may go beyond the budget.
      const peer = budget.allows(budget.estimateBlocks(total), false)
        ? peers.pick(first.index, last.index, now)
        : undefined;
      if (peer !== undefined) return { parts, peer };
      parts.pop();
    }
    return undefined;
  }

  /**
   * Whether `part` (not the head's) waits for the next segment's refs to be verified and go in
   * the same call: it ends its segment, is at most half a request, the next segment is on its
   * way (its commits not yet verified), and the pipeline is busy (`foldWaitMinInflight`).
   */
  private waitsToFold(index: number, part: CallPart): boolean {
    const { options, plan, fetch } = this.deps;
    const { chunk, state } = part;
    if (options.foldWaitMinInflight <= 0 || fetch.inflight < options.foldWaitMinInflight) return false;
    if (chunk.offset + chunk.count !== state.batch.refs.length) return false;
    if (chunk.count * 2 > options.blocksPerRequest) return false;
    const next = plan.segments[index + 1]?.state.kind;
    return next === "idle" || next === "fetching_commits" || next === "fetched";
  }

  /**
   * One FetchBlocks for consecutive chunks (of one segment, or ending one segment and starting
   * the next ones). The answer is a prefix of the refs asked for: each part takes its share in
   * order, and a part answered short or wrong leaves the parts after it to be asked again.
   */
  private requestParts(parts: readonly CallPart[], peer: PeerState): void {
    const { budget, faults, kick } = this.deps;
    const head = parts[0]!;
    const tail = parts[parts.length - 1]!;
    const count = parts.reduce((n, p) => n + p.chunk.count, 0);
    const reserve = budget.estimateBlocks(count);
    const refsOf = parts.map((p) => p.state.batch.refs.slice(p.chunk.offset, p.chunk.offset + p.chunk.count));
    const refs = refsOf.length === 1 ? refsOf[0]! : refsOf.flat();
    const commits = {
      first: head.seg.chunkCommits(head.chunk).first.index,
      last: tail.seg.chunkCommits(tail.chunk).last.index,
    };
    for (const p of parts) p.seg.chunkRequested(p.chunk);
    this.deps.fetch.fetchBlocks(
      peer,
      refs,
      commits,
      reserve,
      (res) => {
        const { options, chainId, verifier } = this.deps;
        const record = () => {
          const verdicts = this.deps.presign?.verdicts;
          let at = 0;
          let intact = true;
          for (let k = 0; k < parts.length; k++) {
            const { seg, state, chunk } = parts[k]!;
            const asked = refsOf[k]!;
            const blocks = res.blocks.slice(at, at + asked.length);
            at += asked.length;
            if (seg.state !== state) {
              seg.chunkFailed(chunk); // applied or dropped meanwhile
              intact &&= blocks.length === asked.length;
              continue;
            }
            // A part after one answered short or wrong gets nothing from this answer (the rest of
            // an answer is a prefix too), and is no evidence against the peer.
            if (k > 0 && (!intact || blocks.length === 0)) {
              seg.chunkFailed(chunk);
              intact = false;
              continue;
            }
            const { committee } = state.batch;
            const signatures = options.verifyBlockSignatures
              ? { committee, chainId, verifier, verdicts }
              : undefined;
            const { accepted, error } = checkBlocks(asked, blocks, signatures);
            if (error !== undefined) faults.ban(peer, error.code, `FetchBlocks: ${error.message}`);
            intact = error === undefined && accepted.length === asked.length;
            budget.hold(
              seg,
              accepted.reduce((n, b) => n + b.length, 0),
            );
            seg.blocksAccepted(chunk, accepted);
          }
          if (res.blocks.length > 0) budget.observeBlocks(res.bytes, res.blocks.length);
          kick();
        };
        if (!options.verifyBlockSignatures || parts.every((p) => p.seg.state !== p.state)) return record();
        const committeeOf = (epoch: number) =>
          parts.find((p) => p.state.batch.committee.epoch === epoch)?.state.batch.committee;
        this.afterSignatures(res.blocks, committeeOf, res.bytes, record);
      },
      (e) => {
        for (const p of parts) p.seg.chunkFailed(p.chunk);
        const commit = commitOfRef(head.state.batch, head.chunk.offset);
        faults.onError(peer, "FetchBlocks", e as PeerError, commit?.index ?? head.seg.start);
        kick();
      },
    );
  }

  /**
   * A peer for a chunk of refs: one that holds the commits those refs belong to (not the whole
   * segment, which after a long batch may span more than any one peer holds). When nobody holds
   * them all, the chunk is cut after the last commit the best peer holding its first one has.
   */
  private pickForChunk(seg: Segment, chunk: Chunk, now: number): PeerState | undefined {
    const { peers } = this.deps;
    const { first, last } = seg.chunkCommits(chunk);
    const peer = peers.pick(first.index, last.index, now);
    if (peer !== undefined || first === last) return peer;
    const partial = peers.pick(first.index, first.index, now);
    if (partial === undefined) return undefined;
    return seg.splitChunkAfterCommit(chunk, Math.min(partial.highest, last.index)) ? partial : undefined;
  }
}

const noCommittee = (): undefined => undefined;

type FetchingBlocks = Extract<SegmentState, { kind: "fetching_blocks" }>;

/** A chunk of one segment, within a FetchBlocks call that may span consecutive segments. */
interface CallPart {
  readonly seg: Segment;
  /** The segment's state when the call was made: an answer for another is not recorded. */
  readonly state: FetchingBlocks;
  readonly chunk: Chunk;
}
