import { DagsyncError } from "../core/errors.js";

/** Why the sync engine stopped for good: every fatal condition has a code a caller can branch on. */
export type SyncErrorCode =
  /** The store holds no committee for its own epoch (a store not made by dagsync, or damaged). */
  | "no_committee"
  /** Every on-chain peer serves a chain whose next commit does not link to the trusted checkpoint. */
  | "checkpoint_mismatch"
  /** A commit certified by a quorum carries an end-of-epoch committee that fails the sanity checks. */
  | "bad_next_committee"
  /** The store refused a write (disk full, closed, corrupt). */
  | "store_write"
  /**
   * `run(untilSynced)` only: no source could serve the next commit for `maxStallMs` (every peer
   * unreachable, off-chain, banned or pruned below our head). The message says which and why.
   */
  | "stalled"
  /** A bug: one of the engine's own handlers threw. The message names it. */
  | "internal";

export class SyncError extends DagsyncError {
  override readonly name = "SyncError";

  constructor(
    override readonly code: SyncErrorCode,
    message: string,
  ) {
    super(code, message);
  }
}
