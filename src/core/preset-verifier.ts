/**
 * A SignatureVerifier that answers from verdicts computed ahead (by src/crypto's VerifyPool), and verifies
 * anything else itself. It lets the pure, synchronous checks of src/core run unchanged after an
 * asynchronous pass has checked their signatures on other threads: a verdict is used only for
 * the very key, message and signature it was computed for (compared byte for byte), and is used
 * once. Bounded: at most `limit` verdicts wait; past it the oldest is dropped (and that signature
 * verified inline if it is ever asked).
 */
import { bytesEqual } from "./bytes.js";
import type { SignatureItem, SignatureVerifier } from "./types.js";

interface Verdict {
  readonly item: SignatureItem;
  readonly valid: boolean;
}

export class PresetVerifier implements SignatureVerifier {
  readonly name: string;
  private readonly verdicts = new Map<string, Verdict>();
  /** Verifications answered from presets, and inline: for tests and metrics. */
  hits = 0;
  misses = 0;

  constructor(
    private readonly inner: SignatureVerifier,
    private readonly limit = 65_536,
  ) {
    this.name = inner.name;
  }

  /** Verdicts for `items`, in order (as VerifyPool.verify answers them). */
  preset(items: readonly SignatureItem[], valid: readonly boolean[]): void {
    items.forEach((item, i) => {
      const id = signatureId(item.signature);
      this.verdicts.delete(id); // re-inserted last: the map's order is the eviction order
      this.verdicts.set(id, { item, valid: valid[i] === true });
      if (this.verdicts.size > this.limit) {
        const oldest = this.verdicts.keys().next().value;
        if (oldest !== undefined) this.verdicts.delete(oldest);
      }
    });
  }

  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    const id = signatureId(signature);
    const v = this.verdicts.get(id);
    if (
      v !== undefined &&
      bytesEqual(v.item.publicKey, publicKey) &&
      bytesEqual(v.item.signature, signature) &&
      bytesEqual(v.item.message, message)
    ) {
      this.verdicts.delete(id);
      this.hits++;
      return v.valid;
    }
    this.misses++;
    return this.inner.verify(publicKey, message, signature);
  }
}

/** A map key for a signature: its bytes as one char each (cheap, and exact). */
function signatureId(signature: Uint8Array): string {
  return String.fromCharCode(...signature);
}
