/**
 * The verification rules of DESIGN.md §2 and §4, as pure functions. Each returns what is valid
 * and, when it stopped short, a typed VerifyError saying why: a batch that crosses an epoch
 * boundary or goes wrong half-way yields its valid prefix, so that honest work is never thrown
 * away, while the error tells the caller whom to ban.
 *
 * Threats covered: tampered bytes (digests over received bytes), forged or replayed votes
 * (certifier blocks are signature-checked, of the commit's epoch, by distinct members), broken or
 * forked history (previous_digest links, contiguous indices), and epoch confusion (one epoch per
 * batch; the next committee only from a certified end_of_epoch).
 */
import type { BlockRef } from "../gen/dagsync/v1/types_pb.js";
import { bytesEqual, concatBytes, shortHex, toHex, utf8Bytes } from "./bytes.js";
import { CommitteeView } from "./committee.js";
import { sha256 } from "./digest.js";
import { VerifyError } from "./errors.js";
import { formatBlockRef } from "./refs.js";
import type { SignatureVerdicts } from "./signature-verdicts.js";
import type { SignatureItem, SignatureVerifier } from "./types.js";
import { type BlockEntry, type CommitEntry, parseCommit, parseSignedBlock, peekSignedBlock } from "./wire.js";

const BLOCK_SIGNING_DOMAIN = utf8Bytes("dagsync/block/v1");

/** "dagsync/block/v1" || 0x00 || chain_id || 0x00 || encoded Block. */
export function blockSigningMessage(chainId: string, blockBytes: Uint8Array): Uint8Array {
  return concatBytes([
    BLOCK_SIGNING_DOMAIN,
    new Uint8Array([0]),
    utf8Bytes(chainId),
    new Uint8Array([0]),
    blockBytes,
  ]);
}

/**
 * Checks a signed block against its epoch's committee: epoch, membership and signature (from
 * `verdicts` when one was computed ahead for these very bytes and this key).
 */
export function verifySignedBlock(
  entry: BlockEntry,
  committee: CommitteeView,
  chainId: string,
  verifier: SignatureVerifier,
  verdicts?: SignatureVerdicts,
): void {
  const where = `block (round ${entry.round}, author ${entry.author}, ${shortHex(entry.digest)})`;
  if (entry.epoch !== committee.epoch)
    throw new VerifyError("wrong_epoch", `${where} is of epoch ${entry.epoch}, expected ${committee.epoch}`);
  const key = committee.protocolKeyOf(entry.author);
  if (key === undefined)
    throw new VerifyError(
      "non_member",
      `${where}: author ${entry.author} is not in the committee of epoch ${committee.epoch}`,
    );
  const valid =
    verdicts?.take(entry.bytes, key) ??
    verifier.verify(key, blockSigningMessage(chainId, entry.blockBytes), entry.signature);
  if (!valid) throw new VerifyError("bad_signature", `${where}: signature does not verify`);
}

/** A signature check of one encoded SignedBlock, for a pass ahead of the checks (SignatureVerdicts). */
export interface BlockSignatureItem extends SignatureItem {
  /** The encoded SignedBlock object the verdict is for. */
  readonly signedBlock: Uint8Array;
}

/**
 * The signature checks that verifySignedBlock would make for `blocks` (encoded SignedBlocks):
 * those whose header reads and whose epoch has a known committee with its author in it. Others
 * are left to the check itself, which refuses them with its reason. Reads only the block's
 * epoch, round and author (no full decode, no digest): this runs on the event loop.
 */
export function blockSignatureItems(
  blocks: readonly Uint8Array[],
  committeeOf: (epoch: number) => CommitteeView | undefined,
  chainId: string,
): BlockSignatureItem[] {
  const items: BlockSignatureItem[] = [];
  for (const signedBlock of blocks) {
    let header: ReturnType<typeof peekSignedBlock>;
    try {
      header = peekSignedBlock(signedBlock);
    } catch {
      continue;
    }
    const committee = committeeOf(header.epoch);
    const publicKey = committee?.epoch === header.epoch ? committee.protocolKeyOf(header.author) : undefined;
    if (publicKey === undefined) continue;
    items.push({
      signedBlock,
      publicKey,
      message: blockSigningMessage(chainId, header.blockBytes),
      signature: header.signature,
    });
  }
  return items;
}

export interface CommitBatchInput {
  /** Encoded commits as received. */
  readonly commits: readonly Uint8Array[];
  /** Encoded certifier blocks as received. */
  readonly certifierBlocks: readonly Uint8Array[];
  /** Index the batch must start at. */
  readonly expectedStart: number;
  /** Digest the first commit's previous_digest must equal, when known (checked again at apply). */
  readonly previousDigest?: Uint8Array | undefined;
  /** Committee of the batch's epoch. */
  readonly committee: CommitteeView;
  readonly chainId: string;
  readonly verifier: SignatureVerifier;
  /** Certifier signatures checked ahead, used where they apply (verifySignedBlock). */
  readonly verdicts?: SignatureVerdicts | undefined;
}

export interface CommitBatchResult {
  /** The certified, linked, single-epoch prefix. */
  readonly commits: CommitEntry[];
  /** The certifier blocks that vote for the last returned commit (what a node stores to serve it). */
  readonly certifierBlocks: BlockEntry[];
  /** Why the batch stopped short of its input; undefined when it did not, or stopped at an epoch end. */
  readonly error: VerifyError | undefined;
}

/**
 * Verifies a FetchCommits response on its own (DESIGN.md §4.4): contiguous indices from the
 * expected start, previous_digest links, one epoch (truncated after an end_of_epoch commit), and a
 * quorum of the epoch's committee voting, through signed certifier blocks, for the last commit of
 * the prefix. Certifying that commit certifies every commit linked to it.
 */
export function verifyCommitBatch(input: CommitBatchInput): CommitBatchResult {
  const { committee } = input;
  const linked: CommitEntry[] = [];
  let error: VerifyError | undefined;
  for (const bytes of input.commits) {
    let entry: CommitEntry;
    try {
      entry = parseCommit(bytes);
    } catch (e) {
      error = e as VerifyError;
      break;
    }
    const prev = linked.at(-1);
    const expectedIndex = prev === undefined ? input.expectedStart : prev.index + 1;
    if (entry.index !== expectedIndex) {
      error = new VerifyError("gap", `expected commit ${expectedIndex}, got ${entry.index}`);
      break;
    }
    const expectedPrevious = prev === undefined ? input.previousDigest : prev.digest;
    if (expectedPrevious !== undefined && !bytesEqual(entry.commit.previousDigest, expectedPrevious)) {
      error = new VerifyError(
        "broken_link",
        `commit ${entry.index}: previous_digest ${shortHex(entry.commit.previousDigest)} ≠ ${shortHex(expectedPrevious)}`,
      );
      break;
    }
    if (prev === undefined && entry.epoch !== committee.epoch) {
      error = new VerifyError(
        "wrong_epoch",
        `commit ${entry.index} is of epoch ${entry.epoch}, expected ${committee.epoch}`,
      );
      break;
    }
    if (prev !== undefined && entry.epoch !== prev.epoch) {
      error = new VerifyError(
        "mixed_epochs",
        `commit ${entry.index} is of epoch ${entry.epoch}, batch is of ${prev.epoch}`,
      );
      break;
    }
    linked.push(entry);
    if (entry.commit.endOfEpoch !== undefined) break; // epoch boundary: the rest belongs to the next batch
  }
  if (linked.length === 0) return { commits: [], certifierBlocks: [], error: error ?? emptyBatch() };

  // Certifier blocks: all must be valid; a single forged or foreign one discredits the batch.
  const voters = new Map<number, BlockEntry>();
  for (const bytes of input.certifierBlocks) {
    let block: BlockEntry;
    try {
      block = parseSignedBlock(bytes);
      verifySignedBlock(block, committee, input.chainId, input.verifier, input.verdicts);
    } catch (e) {
      return { commits: [], certifierBlocks: [], error: e as VerifyError };
    }
    if (voters.has(block.author))
      return {
        commits: [],
        certifierBlocks: [],
        error: new VerifyError("duplicate_voter", `two certifier blocks by author ${block.author}`),
      };
    voters.set(block.author, block);
  }

  // The highest commit of the prefix that a quorum votes for certifies everything before it.
  for (let k = linked.length - 1; k >= 0; k--) {
    const target = linked[k]!;
    const supporters = [...voters.values()].filter((b) =>
      b.block.commitVotes.some(
        (v) => v.index === BigInt(target.index) && bytesEqual(v.digest, target.digest),
      ),
    );
    const stake = supporters.reduce((sum, b) => sum + (committee.stakeOf(b.author) ?? 0), 0);
    if (committee.isQuorum(stake)) {
      const truncated =
        k < linked.length - 1
          ? new VerifyError(
              "missing_quorum",
              `commits ${linked[k + 1]!.index}..${linked.at(-1)!.index} are not certified`,
            )
          : undefined;
      return { commits: linked.slice(0, k + 1), certifierBlocks: supporters, error: error ?? truncated };
    }
  }
  const last = linked.at(-1)!;
  return {
    commits: [],
    certifierBlocks: [],
    // When the batch was cut short by a defect (a broken link, say), the votes were for a commit
    // past it: the defect is the cause, and names the culprit's offence more precisely.
    error:
      error ??
      new VerifyError(
        "missing_quorum",
        `no quorum (≥ ${committee.quorumThreshold} of ${committee.totalStake} stake) votes for commit ${last.index} ${shortHex(last.digest)}`,
      ),
  };
}

function emptyBatch(): VerifyError {
  return new VerifyError("malformed", "the batch holds no commits");
}

/** Checks a commit's link to its predecessor (at apply time, across batches). */
export function verifyLink(entry: CommitEntry, previousIndex: number, previousDigest: Uint8Array): void {
  if (entry.index !== previousIndex + 1)
    throw new VerifyError("gap", `expected commit ${previousIndex + 1}, got ${entry.index}`);
  if (!bytesEqual(entry.commit.previousDigest, previousDigest))
    throw new VerifyError(
      "broken_link",
      `commit ${entry.index}: previous_digest ${shortHex(entry.commit.previousDigest)} ≠ ${shortHex(previousDigest)}`,
    );
}

export interface BlocksResult {
  /** Received blocks whose digests match the refs, in ref order (a prefix of the refs). */
  readonly blocks: Uint8Array[];
  readonly error: VerifyError | undefined;
}

/**
 * Checks a FetchBlocks response against the refs asked for: block i must hash to refs[i].digest.
 * Committed blocks are authenticated by digest alone (their refs come from a certified commit).
 */
export function verifyBlocksAgainstRefs(
  refs: readonly BlockRef[],
  blocks: readonly Uint8Array[],
): BlocksResult {
  const ok: Uint8Array[] = [];
  for (let i = 0; i < blocks.length; i++) {
    const ref = refs[i];
    if (ref === undefined)
      return {
        blocks: ok,
        error: new VerifyError("malformed", `${blocks.length} blocks for ${refs.length} refs`),
      };
    const bytes = blocks[i]!;
    const digest = sha256(bytes);
    if (!bytesEqual(digest, ref.digest))
      return {
        blocks: ok,
        error: new VerifyError(
          "digest_mismatch",
          `block for ${formatBlockRef(ref)} hashes to ${shortHex(digest)}`,
        ),
      };
    ok.push(bytes);
  }
  return { blocks: ok, error: undefined };
}

/**
 * The committee of the next epoch from a certified end-of-epoch commit: present, epoch + 1, and
 * sane (CommitteeView's checks).
 */
export function nextCommitteeFrom(entry: CommitEntry, current: CommitteeView): CommitteeView {
  const next = entry.commit.endOfEpoch?.nextCommittee;
  if (next === undefined)
    throw new VerifyError(
      "bad_committee",
      `commit ${entry.index} ends epoch ${entry.epoch} without a next committee`,
    );
  if (entry.epoch !== current.epoch)
    throw new VerifyError(
      "wrong_epoch",
      `commit ${entry.index} is of epoch ${entry.epoch}, committee of ${current.epoch}`,
    );
  return new CommitteeView(next, current.epoch + 1);
}

/** Key for a set of digests. */
export function digestKey(digest: Uint8Array): string {
  return toHex(digest);
}
