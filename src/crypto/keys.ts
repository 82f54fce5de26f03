/**
 * Ed25519 keys and signing on node:crypto. A key is its 32-byte seed (private) and 32-byte public
 * key; KeyObjects are built once per key and reused, because building one costs more than a sign.
 */
import { createPrivateKey, createPublicKey, type KeyObject, randomBytes, sign } from "node:crypto";

const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_ED25519_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

export const SEED_LENGTH = 32;

export function privateKeyObject(seed: Uint8Array): KeyObject {
  if (seed.length !== SEED_LENGTH)
    throw new Error(`an Ed25519 private key is ${SEED_LENGTH} bytes, got ${seed.length}`);
  return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
}

/** Throws for a key of the wrong length; OpenSSL accepts any 32 bytes here and judges at verify. */
export function publicKeyObject(publicKey: Uint8Array): KeyObject {
  if (publicKey.length !== 32) throw new Error(`an Ed25519 public key is 32 bytes, got ${publicKey.length}`);
  return createPublicKey({
    key: Buffer.concat([SPKI_ED25519_PREFIX, publicKey]),
    format: "der",
    type: "spki",
  });
}

export function publicKeyOf(seed: Uint8Array): Uint8Array {
  const der = createPublicKey(privateKeyObject(seed)).export({ format: "der", type: "spki" });
  return new Uint8Array(der.subarray(SPKI_ED25519_PREFIX.length));
}

/** A signing key with its public half. */
export class Ed25519Signer {
  readonly publicKey: Uint8Array;
  private readonly key: KeyObject;

  constructor(readonly seed: Uint8Array) {
    this.key = privateKeyObject(seed);
    this.publicKey = publicKeyOf(seed);
  }

  static generate(): Ed25519Signer {
    return new Ed25519Signer(new Uint8Array(randomBytes(SEED_LENGTH)));
  }

  sign(message: Uint8Array): Uint8Array {
    return new Uint8Array(sign(null, message, this.key));
  }
}
