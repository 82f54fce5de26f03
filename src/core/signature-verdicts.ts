/**
 * Signature verdicts computed ahead, off the event loop (src/crypto's VerifyPool), for the pure,
 * synchronous checks of this folder to use instead of verifying inline.
 *
 * A verdict is tied to the very object holding an encoded SignedBlock (a WeakMap: it lives as
 * long as those bytes) and to the public key it was checked against, compared at use. So a
 * verdict can only ever answer for the bytes it was computed from (no copy or re-encoding can
 * match it), and it costs no hashing, no message rebuilding and no comparison of messages. A
 * block without a verdict, or checked against another key, is verified inline.
 */
import { bytesEqual } from "./bytes.js";

export class SignatureVerdicts {
  private readonly byBlock = new WeakMap<
    Uint8Array,
    { readonly publicKey: Uint8Array; readonly valid: boolean }
  >();
  /** Checks answered from a verdict, and verified inline: for tests and metrics. */
  hits = 0;
  misses = 0;

  /** Records that `signedBlock`'s signature is `valid` under `publicKey`. */
  set(signedBlock: Uint8Array, publicKey: Uint8Array, valid: boolean): void {
    this.byBlock.set(signedBlock, { publicKey, valid });
  }

  /** The verdict for this very SignedBlock object under `publicKey`, once; undefined if none. */
  take(signedBlock: Uint8Array, publicKey: Uint8Array): boolean | undefined {
    const v = this.byBlock.get(signedBlock);
    if (v === undefined || !bytesEqual(v.publicKey, publicKey)) {
      this.misses++;
      return undefined;
    }
    this.byBlock.delete(signedBlock);
    this.hits++;
    return v.valid;
  }
}
