/**
 * The verification stage (DESIGN §4 item 4): fetched batches are verified in chain order, each as
 * soon as its predecessor is, because only then are the committee of its epoch and the digest it
 * must link to known; so each batch gets the full check (links, one epoch, certification by a
 * quorum of that epoch) before any of its blocks is fetched.
 *
 * A batch cut short (epoch boundary, size, invalid suffix) keeps its valid prefix and the rest of
 * its segment becomes a segment of its own; one that runs past its segment fills the following
 * ones (the batch contract). A batch that ends an epoch brings the next committee, trusted
 * because a quorum of this epoch certified it.
 *
 * Threat: what fails is evidence against the peer that sent it (a ban; its segment is fetched
 * elsewhere). One hostile peer cannot stop the node: only when every on-chain peer serves a
 * certified chain that does not link to our trusted checkpoint do we stop, with that reason.
 */
import {
  type CommitteeView,
  nextCommitteeFrom,
  type SignatureVerdicts,
  type SignatureVerifier,
  toHex,
} from "../core/index.js";
import type { Store } from "../store/index.js";
import { checkCommitBatch } from "./batch-check.js";
import type { ByteBudget } from "./byte-budget.js";
import { SyncError } from "./errors.js";
import type { PeerFaults } from "./peer-faults.js";
import type { PeerSet } from "./peers.js";
import { type ChainPoint, type Segment, verifiedBatch } from "./segment.js";
import type { SegmentPlan } from "./segment-plan.js";

export interface VerifyStageDeps {
  readonly store: Store;
  readonly plan: SegmentPlan;
  readonly peers: PeerSet;
  readonly budget: ByteBudget;
  readonly faults: PeerFaults;
  /** Committees by epoch, as far as verified; this stage adds each next one. */
  readonly committees: Map<number, CommitteeView>;
  readonly chainId: string;
  readonly verifier: SignatureVerifier;
  /** Certifier signatures checked ahead by the verify pool, when there is one. */
  readonly verdicts?: SignatureVerdicts | undefined;
  readonly blocksPerRequest: number;
  readonly nearTipBlocks: ((digest: Uint8Array) => Uint8Array | undefined) | undefined;
  /** Something no peer can fix: the engine must stop. */
  readonly fail: (error: SyncError) => void;
}

export class VerifyStage {
  /** Peers that served a certified commit that does not link to our trusted checkpoint. */
  private readonly checkpointDisagreements = new Set<string>();

  constructor(private readonly deps: VerifyStageDeps) {}

  /** Verifies, in order, every fetched segment whose predecessor is verified; returns where that ends. */
  verifyInOrder(): ChainPoint {
    const marks = this.deps.store.watermarks;
    let prev: ChainPoint = {
      index: marks.highestSynced,
      digest: marks.highestSyncedDigest,
      epoch: marks.epoch,
    };
    for (const seg of this.deps.plan.segments) {
      if (seg.state.kind === "fetched") this.verify(seg, prev);
      const through = seg.verifiedThrough();
      if (through === undefined) break;
      prev = through;
    }
    return prev;
  }

  /** The full check of a fetched batch, now that the commit it must link to is verified. */
  private verify(seg: Segment, prev: ChainPoint): void {
    const { budget, faults, plan } = this.deps;
    const state = seg.state;
    if (state.kind !== "fetched") return;
    const commits = seg.uncoveredCommits();
    if (commits.length === 0) {
      budget.release(seg);
      seg.batchDiscarded();
      return;
    }
    // Undefined when the peer left since: its batch is still checked (and kept when valid).
    const peer = this.deps.peers.get(state.peer);
    const ban = (code: string, why: string) => {
      if (peer !== undefined) faults.ban(peer, code, why);
    };
    const committee = this.deps.committees.get(prev.epoch);
    if (committee === undefined) return; // cannot happen: the predecessor verified and stored it
    const marks = this.deps.store.watermarks;
    const { result, contradictsCheckpoint } = checkCommitBatch({
      commits,
      certifiers: state.certifiers,
      start: seg.start,
      prev,
      committee,
      chainId: this.deps.chainId,
      verifier: this.deps.verifier,
      verdicts: this.deps.verdicts,
      prevIsCheckpoint: seg.start === marks.lowestAvailable && marks.highestSynced > 0,
    });
    // (An uncertified batch is just a bad peer, banned below: one hostile peer cannot stop the node.)
    if (contradictsCheckpoint) this.checkpointContradicted(state.peer, prev, seg.start);
    const why = `FetchCommits ${seg.start}..: ${result.error?.message}`;
    if (result.commits.length === 0) {
      budget.release(seg);
      seg.batchDiscarded();
      ban(result.error?.code ?? "malformed", why);
      return;
    }
    if (result.error !== undefined) ban(result.error.code, why);
    const last = result.commits.at(-1)!;
    let nextCommittee: CommitteeView | undefined;
    if (last.commit.endOfEpoch !== undefined) {
      try {
        nextCommittee = nextCommitteeFrom(last, committee);
        this.deps.committees.set(nextCommittee.epoch, nextCommittee);
      } catch (e) {
        const reason = `commit ${last.index} is certified but its next committee is unusable: ${(e as Error).message}`;
        this.deps.fail(new SyncError("bad_next_committee", reason));
        return;
      }
    }
    if (last.index < seg.end) plan.splitAfter(seg, last.index);
    else if (last.index > seg.end)
      for (const gone of plan.absorbFollowing(seg, last.index)) budget.release(gone);
    const certifiers = result.certifierBlocks.map((b) => b.bytes);
    const batch = verifiedBatch(result.commits, certifiers, committee, nextCommittee);
    budget.hold(seg, seg.batchVerified(batch, this.deps.blocksPerRequest, this.deps.nearTipBlocks));
  }

  /**
   * The first commit after the trusted checkpoint does not link to it, yet a quorum of the
   * checkpoint's committee certified it: either the checkpoint is not of the chain our peers
   * serve, or that committee forked. When every on-chain peer says so, stop.
   */
  private checkpointContradicted(peer: string, prev: ChainPoint, start: number): void {
    this.checkpointDisagreements.add(peer);
    const onChain = this.deps.peers.all().filter((p) => p.known && !p.offChain).length;
    if (this.checkpointDisagreements.size < onChain) return;
    this.deps.fail(
      new SyncError(
        "checkpoint_mismatch",
        `the trusted checkpoint (commit ${prev.index}, digest ${toHex(prev.digest).slice(0, 16)}…) does not match what peers serve: ` +
          `commit ${start} from ${[...this.checkpointDisagreements].join(", ")} links to another digest. Check --checkpoint and --genesis.`,
      ),
    );
  }
}
