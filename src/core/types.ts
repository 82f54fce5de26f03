/** Interfaces that core needs from the outside, injected so that core stays pure. */

/** Ed25519 verification. Implementations live in src/crypto; all must give the same verdicts. */
export interface SignatureVerifier {
  readonly name: string;
  /** True only for a valid signature; false (never a throw) for any malformed input. */
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
}

/** One signature check: what SignatureVerifier.verify takes, as data (to send to a worker). */
export interface SignatureItem {
  readonly publicKey: Uint8Array;
  readonly message: Uint8Array;
  readonly signature: Uint8Array;
}
