/**
 * The fetch pipeline (DESIGN §4 item 4): launches the work segments need, head first, within the
 * request slots and the byte budget, and records the answers on the segments.
 *
 * - An idle segment asks one peer that holds its first commit for the batch that starts it; the
 *   answer is kept whole (the batch contract) until its turn to verify.
 * - A segment fetching blocks asks for each chunk of ≤ `blocksPerRequest` refs from a peer that
 *   holds the commits those refs belong to; when nobody holds them all, the chunk is cut after the
 *   last commit the best peer holding its first one has.
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
import { type Chunk, commitOfRef, type Segment } from "./segment.js";
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
      else if (seg.state.kind === "fetching_blocks") this.fetchBlocks(seg, i === 0, now);
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

  private fetchBlocks(seg: Segment, head: boolean, now: number): void {
    const { budget, faults, kick } = this.deps;
    const state = seg.state;
    if (state.kind !== "fetching_blocks") return;
    for (const chunk of state.chunks) {
      if (chunk.fetching) continue;
      if (!this.deps.fetch.hasFreeSlot()) return;
      if (!budget.allows(budget.estimateBlocks(chunk.count), head)) return;
      const peer = this.pickForChunk(seg, chunk, now);
      if (peer === undefined) continue;
      const reserve = budget.estimateBlocks(chunk.count); // the chunk may have been cut
      const refs = state.batch.refs.slice(chunk.offset, chunk.offset + chunk.count);
      const { first, last } = seg.chunkCommits(chunk);
      seg.chunkRequested(chunk);
      this.deps.fetch.fetchBlocks(
        peer,
        refs,
        { first: first.index, last: last.index },
        reserve,
        (res) => {
          const { options, chainId, verifier } = this.deps;
          const { committee } = state.batch;
          const record = () => {
            if (seg.state !== state) return seg.chunkFailed(chunk); // applied or dropped meanwhile
            const verdicts = this.deps.presign?.verdicts;
            const signatures = options.verifyBlockSignatures
              ? { committee, chainId, verifier, verdicts }
              : undefined;
            const { accepted, error } = checkBlocks(refs, res.blocks, signatures);
            if (error !== undefined) faults.ban(peer, error.code, `FetchBlocks: ${error.message}`);
            if (accepted.length > 0) budget.observeBlocks(res.bytes, res.blocks.length);
            budget.hold(
              seg,
              accepted.reduce((n, b) => n + b.length, 0),
            );
            seg.blocksAccepted(chunk, accepted);
            kick();
          };
          if (!options.verifyBlockSignatures || seg.state !== state) return record();
          this.afterSignatures(res.blocks, () => committee, res.bytes, record);
        },
        (e) => {
          seg.chunkFailed(chunk);
          const commit = commitOfRef(state.batch, chunk.offset);
          faults.onError(peer, "FetchBlocks", e as PeerError, commit?.index ?? seg.start);
          kick();
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
