/**
 * The base of every error dagsync throws at a caller: `code` is a stable string to branch on
 * (the message is for people). Each layer names its codes (VerifyErrorCode, StoreErrorCode, …).
 */
export class DagsyncError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * One error type with a code, as connect-es does. Every rule in `verify.ts` fails with a
 * `VerifyError` whose code says which rule, so that callers (the sync engine's ban logic, tests,
 * operators reading logs) can act on it without parsing messages.
 */
export type VerifyErrorCode =
  /** Bytes that do not decode, or decode to something structurally impossible. */
  | "malformed"
  /** A commit index is not the one expected (a gap, a repeat, or the wrong start). */
  | "gap"
  /** `previous_digest` does not equal the digest of the previous commit (or of genesis). */
  | "broken_link"
  /** A commit of another epoch than the batch's, without the end-of-epoch boundary between them. */
  | "mixed_epochs"
  /** A commit or block is of an epoch whose committee is not the one it is checked against. */
  | "wrong_epoch"
  /** A signature that does not verify under the author's key. */
  | "bad_signature"
  /** A block whose author index is not a member of the committee. */
  | "non_member"
  /** Two certifier blocks by the same author. */
  | "duplicate_voter"
  /** The certifier blocks do not carry votes of a quorum for the commit. */
  | "missing_quorum"
  /** A block's digest differs from the reference it was fetched for. */
  | "digest_mismatch"
  /** An end-of-epoch committee fails its sanity checks. */
  | "bad_committee";

export class VerifyError extends DagsyncError {
  override readonly name = "VerifyError";
  constructor(
    override readonly code: VerifyErrorCode,
    message: string,
  ) {
    super(code, `[${code}] ${message}`);
  }
}

/**
 * Why a sub-DAG subscription ended (src/store/subscription.ts, the server's SubscribeCommits and
 * subscribeVerified share these): `invalid_argument` (start < 1), `out_of_range` (start pruned or
 * below the trusted start), `not_found` (data the node should hold is missing), `lagged`.
 */
export type SubscriptionErrorCode = "invalid_argument" | "out_of_range" | "not_found" | "lagged";

export class SubscriptionError extends DagsyncError {
  override readonly name: string = "SubscriptionError";
  constructor(
    override readonly code: SubscriptionErrorCode,
    message: string,
  ) {
    super(code, message);
  }
}

/** A live subscriber fell more than `buffer` commits behind the tip: resubscribe from `resumeFrom`. */
export class SubscriberLagError extends SubscriptionError {
  override readonly name = "SubscriberLagError";
  declare readonly code: "lagged";
  constructor(
    readonly resumeFrom: number,
    buffer: number,
  ) {
    super(
      "lagged",
      `subscriber fell more than ${buffer} commits behind the tip: resubscribe from ${resumeFrom}`,
    );
  }
}
