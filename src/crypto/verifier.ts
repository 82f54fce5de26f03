/**
 * Ed25519 verifier backends behind core's SignatureVerifier interface.
 *
 * - `native` (default): node:crypto (OpenSSL), ≈14x faster than noble here (DESIGN.md §8).
 * - `noble`: @noble/curves point arithmetic with strict (RFC 8032) decoding and the same
 *   cofactorless equation as OpenSSL, the portable reference.
 *
 * Consensus depends on every node reaching the same verdict, so both run behind one shared
 * pre-check (lengths, canonical S < L) and a test holds them to identical verdicts on valid and
 * malformed input: wrong lengths, non-canonical S, small-order keys, flipped bits.
 */
import { createHash, type KeyObject, verify as nodeVerify } from "node:crypto";
import { ed25519 } from "@noble/curves/ed25519.js";
import type { SignatureVerifier } from "../core/types.js";
import { publicKeyObject } from "./keys.js";

/** The group order L of edwards25519. */
const GROUP_ORDER = 2n ** 252n + 27742317777372353535851937790883648493n;

/** Bound of the per-key caches: committees are small, so this holds every key in practice. */
const KEY_CACHE_LIMIT = 4096;

/** The field prime p = 2^255 - 19. */
const FIELD_PRIME = 2n ** 255n - 19n;

function littleEndian(bytes: Uint8Array, from: number, to: number): bigint {
  let n = 0n;
  for (let i = to - 1; i >= from; i--) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}

function scalarIsCanonical(signature: Uint8Array): boolean {
  return littleEndian(signature, 32, 64) < GROUP_ORDER;
}

/** A point encoding whose y coordinate (the low 255 bits) is reduced mod p. */
function pointEncodingIsCanonical(encoded: Uint8Array, offset: number): boolean {
  return littleEndian(encoded, offset, offset + 32) % 2n ** 255n < FIELD_PRIME;
}

/**
 * The canonical encodings of the eight small-order points. OpenSSL accepts a signature whose R is
 * one of these where noble refuses it, so both refuse it here.
 */
const SMALL_ORDER_ENCODINGS = new Set([
  "0100000000000000000000000000000000000000000000000000000000000000",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0000000000000000000000000000000000000000000000000000000000000080",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
]);

/**
 * Public keys are few (one per committee member), so the full check, a strict decode that must
 * land on the curve outside the small-order subgroup, is done once per key and cached.
 */
const keyVerdicts = new Map<string, boolean>();

function publicKeyIsAcceptable(publicKey: Uint8Array): boolean {
  const id = Buffer.from(publicKey).toString("hex");
  let ok = keyVerdicts.get(id);
  if (ok === undefined) {
    try {
      ok =
        pointEncodingIsCanonical(publicKey, 0) && !ed25519.Point.fromBytes(publicKey, false).isSmallOrder();
    } catch {
      ok = false;
    }
    if (keyVerdicts.size >= KEY_CACHE_LIMIT) keyVerdicts.clear();
    keyVerdicts.set(id, ok);
  }
  return ok;
}

/** Shared checks that both backends apply first, so that they never judge malformed input apart. */
function precheck(publicKey: Uint8Array, signature: Uint8Array): boolean {
  return (
    publicKey.length === 32 &&
    signature.length === 64 &&
    scalarIsCanonical(signature) &&
    pointEncodingIsCanonical(signature, 0) &&
    !SMALL_ORDER_ENCODINGS.has(Buffer.from(signature.subarray(0, 32)).toString("hex")) &&
    publicKeyIsAcceptable(publicKey)
  );
}

export class NativeVerifier implements SignatureVerifier {
  readonly name = "native";
  private readonly keys = new Map<string, KeyObject | null>();

  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (!precheck(publicKey, signature)) return false;
    const key = this.keyObject(publicKey);
    if (key === null) return false;
    try {
      return nodeVerify(null, message, key, signature);
    } catch {
      return false;
    }
  }

  private keyObject(publicKey: Uint8Array): KeyObject | null {
    const id = Buffer.from(publicKey).toString("hex");
    let key = this.keys.get(id);
    if (key === undefined) {
      try {
        key = publicKeyObject(publicKey);
      } catch {
        key = null;
      }
      if (this.keys.size >= KEY_CACHE_LIMIT) this.keys.clear();
      this.keys.set(id, key);
    }
    return key;
  }
}

/**
 * The noble backend checks the equation OpenSSL checks, cofactorless: encode([S]B − [k]A) must
 * equal the R bytes, k = SHA-512(R || A || M) mod L. noble's own `ed25519.verify` checks the
 * cofactored equation ([8]R + [8k]A = [8S]B) and so accepts signatures whose R, or whose key A,
 * carries a small-order component, which OpenSSL refuses: any committee member could then make
 * certifier blocks that one backend accepts and the other rejects.
 */
export class NobleVerifier implements SignatureVerifier {
  readonly name = "noble";

  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (!precheck(publicKey, signature)) return false;
    try {
      const a = ed25519.Point.fromBytes(publicKey, false);
      const r = signature.subarray(0, 32);
      const s = littleEndian(signature, 32, 64);
      const h = createHash("sha512").update(r).update(publicKey).update(message).digest();
      const k = littleEndian(h, 0, 64) % GROUP_ORDER;
      const rCheck = ed25519.Point.BASE.multiplyUnsafe(s).subtract(a.multiplyUnsafe(k)).toBytes();
      return Buffer.from(rCheck).equals(r);
    } catch {
      return false;
    }
  }
}

export type VerifierBackend = "native" | "noble";

export function createVerifier(backend: VerifierBackend = "native"): SignatureVerifier {
  return backend === "noble" ? new NobleVerifier() : new NativeVerifier();
}
