/**
 * The verification stage for what peers send the engine (DESIGN §4 items 4 and 7), as pure
 * functions over bytes: a fetched commit batch against the committee and the digest it must link
 * to, and a FetchBlocks answer against the verified refs it was asked for.
 *
 * Threat: everything checked here came from a peer. A result's error is evidence for a ban; what
 * passes is a prefix of what was sent, kept even when the rest is bad. One case is not a peer's
 * fault: a batch certified by a quorum whose first commit does not link to a trusted checkpoint
 * means the checkpoint (or that committee) disagrees with the chain peers serve.
 */
import {
  type CommitBatchResult,
  type CommitteeView,
  parseSignedBlockWithDigest,
  type SignatureVerdicts,
  type SignatureVerifier,
  VerifyError,
  verifyBlocksAgainstRefs,
  verifyCommitBatch,
  verifySignedBlock,
} from "../core/index.js";
import type { BlockRef } from "../gen/dagsync/v1/types_pb.js";
import type { ChainPoint } from "./segment.js";

export interface BatchCheckInput {
  readonly commits: readonly Uint8Array[];
  readonly certifiers: readonly Uint8Array[];
  /** Index the batch must start at. */
  readonly start: number;
  /** The commit it must link to (the last one verified before it). */
  readonly prev: ChainPoint;
  readonly committee: CommitteeView;
  readonly chainId: string;
  readonly verifier: SignatureVerifier;
  /** Certifier signatures checked ahead (the verify pool), used where they apply. */
  readonly verdicts?: SignatureVerdicts | undefined;
  /** `prev` is a trusted checkpoint the store started from (no commit below it is held). */
  readonly prevIsCheckpoint: boolean;
}

export interface BatchCheck {
  readonly result: CommitBatchResult;
  /**
   * The first commit after the trusted checkpoint does not link to it, yet a quorum of the
   * checkpoint's committee certified it: evidence against the checkpoint, not only the peer.
   */
  readonly contradictsCheckpoint: boolean;
}

export function checkCommitBatch(input: BatchCheckInput): BatchCheck {
  const base = {
    commits: input.commits,
    certifierBlocks: input.certifiers,
    expectedStart: input.start,
    committee: input.committee,
    chainId: input.chainId,
    verifier: input.verifier,
    verdicts: input.verdicts,
  };
  const result = verifyCommitBatch({ ...base, previousDigest: input.prev.digest });
  if (result.error?.code !== "broken_link" || !input.prevIsCheckpoint)
    return { result, contradictsCheckpoint: false };
  // Would it verify if its first commit's link were not checked?
  const unlinked = verifyCommitBatch({ ...base, previousDigest: undefined });
  return { result, contradictsCheckpoint: unlinked.error === undefined && unlinked.commits.length > 0 };
}

export interface BlocksCheck {
  /** The blocks that passed, a prefix of the refs asked for. */
  readonly accepted: Uint8Array[];
  /** Evidence against the peer, when it sent something that failed (or nothing at all). */
  readonly error: VerifyError | undefined;
}

/**
 * A FetchBlocks answer against the refs asked for: each block by digest and, with
 * `verifyBlockSignatures`, by its author's signature too.
 */
export function checkBlocks(
  refs: readonly BlockRef[],
  blocks: readonly Uint8Array[],
  signatures:
    | {
        committee: CommitteeView;
        chainId: string;
        verifier: SignatureVerifier;
        verdicts?: SignatureVerdicts | undefined;
      }
    | undefined,
): BlocksCheck {
  const checked = verifyBlocksAgainstRefs(refs, blocks);
  let accepted = checked.blocks;
  let error = checked.error;
  if (signatures !== undefined) {
    const ok: Uint8Array[] = [];
    for (let i = 0; i < accepted.length; i++) {
      const b = accepted[i]!;
      try {
        // The digest was just checked against refs[i]: no need to hash the block again.
        const entry = parseSignedBlockWithDigest(b, refs[i]!.digest);
        verifySignedBlock(
          entry,
          signatures.committee,
          signatures.chainId,
          signatures.verifier,
          signatures.verdicts,
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
  return { accepted, error };
}
