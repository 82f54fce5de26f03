/**
 * The handshake of the live channel (modelled on Commonware's authenticated p2p), pure parts:
 * transcript bytes, Hello checks and the replay cache. The exact bytes are in gossip.proto and
 * the README so that another implementation can interoperate:
 *
 *   T(role) = "dagsync/handshake/v1" 0x00 role 0x00 chain_id 0x00
 *             dialer.network_key(32) listener.network_key(32) dialer.nonce(32) listener.nonce(32)
 *             u64be(dialer.timestamp_ms) u64be(listener.timestamp_ms)
 *
 * Each side signs T(its role) with its network key. Binding both keys, both nonces and both
 * timestamps means a signature is good for this session only; binding the role means a dialer's
 * signature cannot be reflected back as a listener's.
 */
import { bytesEqual, concatBytes, toHex, u64be, utf8Bytes } from "../core/bytes.js";
import type { Hello } from "../gen/dagsync/v1/gossip_pb.js";

export const NONCE_LENGTH = 32;
const DOMAIN = utf8Bytes("dagsync/handshake/v1");
const ZERO = new Uint8Array([0]);

export type Role = "dialer" | "listener";

export interface HelloView {
  readonly chainId: string;
  readonly networkKey: Uint8Array;
  readonly timestampMs: number;
  readonly nonce: Uint8Array;
}

export function helloView(hello: Hello): HelloView {
  return {
    chainId: hello.chainId,
    networkKey: hello.networkKey,
    timestampMs: Number(hello.timestampMs),
    nonce: hello.nonce,
  };
}

export function transcript(role: Role, chainId: string, dialer: HelloView, listener: HelloView): Uint8Array {
  return concatBytes([
    DOMAIN,
    ZERO,
    utf8Bytes(role),
    ZERO,
    utf8Bytes(chainId),
    ZERO,
    dialer.networkKey,
    listener.networkKey,
    dialer.nonce,
    listener.nonce,
    u64be(dialer.timestampMs),
    u64be(listener.timestampMs),
  ]);
}

/** Which check a Hello failed (stable, for metrics, tests and the handshake's typed errors). */
export type HelloRefusalCode =
  | "BAD_KEY_LENGTH"
  | "BAD_NONCE_LENGTH"
  | "WRONG_CHAIN"
  | "KEY_NOT_ALLOWED"
  | "PEER_BLOCKED"
  | "STALE_HELLO"
  | "FUTURE_HELLO";

/** Why a Hello is refused: `permission` ones are PERMISSION_DENIED, the rest UNAUTHENTICATED. */
export type HelloRefusal =
  | {
      readonly kind: "permission" | "unauthenticated";
      readonly code: HelloRefusalCode;
      readonly reason: string;
    }
  | undefined;

export interface HelloPolicy {
  readonly chainId: string;
  readonly now: number;
  readonly maxAgeMs: number;
  readonly maxSkewMs: number;
  isAllowed(key: Uint8Array): boolean;
  blockedUntil(key: Uint8Array): number;
}

export function checkHello(hello: HelloView, policy: HelloPolicy): HelloRefusal {
  if (hello.networkKey.length !== 32)
    return { kind: "unauthenticated", code: "BAD_KEY_LENGTH", reason: "network_key must be 32 bytes" };
  if (hello.nonce.length !== NONCE_LENGTH)
    return {
      kind: "unauthenticated",
      code: "BAD_NONCE_LENGTH",
      reason: `nonce must be ${NONCE_LENGTH} bytes`,
    };
  if (hello.chainId !== policy.chainId)
    return {
      kind: "permission",
      code: "WRONG_CHAIN",
      reason: `wrong chain: "${hello.chainId}", this node is on "${policy.chainId}"`,
    };
  if (!policy.isAllowed(hello.networkKey))
    return {
      kind: "permission",
      code: "KEY_NOT_ALLOWED",
      reason: `network key ${toHex(hello.networkKey).slice(0, 16)}… is not in the allowed set`,
    };
  const until = policy.blockedUntil(hello.networkKey);
  if (until > policy.now)
    return {
      kind: "permission",
      code: "PEER_BLOCKED",
      reason: `peer is blocked for misbehaviour for ${Math.ceil((until - policy.now) / 1000)} s more`,
    };
  if (hello.timestampMs < policy.now - policy.maxAgeMs)
    return {
      kind: "unauthenticated",
      code: "STALE_HELLO",
      reason: `stale hello: timestamp ${policy.now - hello.timestampMs} ms old (max ${policy.maxAgeMs})`,
    };
  if (hello.timestampMs > policy.now + policy.maxSkewMs)
    return {
      kind: "unauthenticated",
      code: "FUTURE_HELLO",
      reason: `hello from the future: ${hello.timestampMs - policy.now} ms ahead (max ${policy.maxSkewMs})`,
    };
  return undefined;
}

/** Nonces seen within the acceptance window: a replayed Hello is refused. Bounded by age. */
export class NonceCache {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly windowMs: number,
    private readonly capacity = 100_000,
  ) {}

  /** Records the nonce; false when it was seen within the window (a replay). */
  admit(nonce: Uint8Array, now: number): boolean {
    for (const [k, t] of this.seen) {
      if (t > now - this.windowMs && this.seen.size < this.capacity) break;
      this.seen.delete(k);
    }
    const key = toHex(nonce);
    if (this.seen.has(key)) return false;
    this.seen.set(key, now);
    return true;
  }
}

export function sameKey(a: Uint8Array, b: Uint8Array): boolean {
  return bytesEqual(a, b);
}
