/**
 * Ed25519 sizes, in bytes. A leaf module with no imports, so that a signature worker thread
 * (src/crypto/verify-worker.ts) can use them without loading the rest of core and the generated
 * schemas: that loading was most of a worker's start-up cost.
 */
export const SIGNATURE_LENGTH = 64;
export const PUBLIC_KEY_LENGTH = 32;
