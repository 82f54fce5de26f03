/** Why the sync engine stopped for good: every fatal condition has a code a caller can branch on. */
export type SyncErrorCode =
  /** The store holds no committee for its own epoch (a store not made by dagsync, or damaged). */
  | "no_committee"
  /** Every on-chain peer serves a chain whose next commit does not link to the trusted checkpoint. */
  | "checkpoint_mismatch"
  /** A commit certified by a quorum carries an end-of-epoch committee that fails the sanity checks. */
  | "bad_next_committee"
  /** The store refused a write (disk full, closed, corrupt). */
  | "store_write";

export class SyncError extends Error {
  override readonly name = "SyncError";

  constructor(
    readonly code: SyncErrorCode,
    message: string,
  ) {
    super(message);
  }
}
