/**
 * Signed node info (DESIGN.md §9): the rules a peer-exchange entry must pass to be kept, as pure
 * functions. Time and signature verification are injected; nothing here does I/O.
 *
 * signature = Ed25519(network_key, "dagsync/node-info/v1" || 0x00 || chain_id || 0x00 || encoded NodeInfo)
 *
 * Raw view, as for SignedBlock (wire.ts): the signature covers field 1 of SignedNodeInfo exactly as
 * received, so the split is strict (one field 1, then one field 2, nothing else) and the info is
 * decoded from exactly the bytes the signature covers.
 *
 * Threats: forged entries (signature by the key they name), replayed old entries (at most 24 h
 * old, and a newer timestamp replaces an older one in the peer book), entries from the future
 * that would pin an address (at most 30 s ahead), addresses that are not dialable or that bloat
 * memory (`host:port`, at most 256 bytes), and entries that name us (our own key).
 *
 * Decision: an empty `gossip_address` is allowed, since exchange only finds sync sources (§9) and
 * a full node may serve sync without a gossip port; an empty `sync_address` is not (nothing to
 * dial). A non-empty gossip address must be `host:port` like the sync address.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { type NodeInfo, NodeInfoSchema } from "../gen/dagsync/v1/types_pb.js";
import { bytesEqual, concatBytes, safeNumber, utf8Bytes } from "./bytes.js";
import type { SignatureVerifier } from "./types.js";
import { PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH } from "./wire.js";
import { decodeStrict } from "./wire-check.js";

const NODE_INFO_SIGNING_DOMAIN = utf8Bytes("dagsync/node-info/v1");

/** How far in the future a node info's timestamp may be, ms (DESIGN §9). */
export const NODE_INFO_MAX_FUTURE_MS = 30_000;
/** How old a node info's timestamp may be, ms: 24 h (DESIGN §9). */
export const NODE_INFO_MAX_AGE_MS = 24 * 60 * 60 * 1000;
/** Longest address (sync or gossip), UTF-8 bytes (DESIGN §9). */
export const NODE_INFO_MAX_ADDRESS_BYTES = 256;

/** Why an entry was not kept. Stable strings: metrics label them. */
export type NodeInfoRejection =
  | "malformed"
  | "own_key"
  | "bad_address"
  | "future_timestamp"
  | "stale_timestamp"
  | "bad_signature";

export const NODE_INFO_REJECTIONS: readonly NodeInfoRejection[] = [
  "malformed",
  "own_key",
  "bad_address",
  "future_timestamp",
  "stale_timestamp",
  "bad_signature",
];

/** A signed node info that passed every rule, with the bytes it was received as. */
export interface NodeInfoEntry {
  /** The encoded SignedNodeInfo, as received (what is stored and relayed). */
  readonly bytes: Uint8Array;
  /** Field 1: the encoded NodeInfo the signature covers. */
  readonly infoBytes: Uint8Array;
  readonly signature: Uint8Array;
  readonly info: NodeInfo;
  readonly networkKey: Uint8Array;
  readonly syncAddress: string;
  /** "" when the node has no gossip address. */
  readonly gossipAddress: string;
  readonly timestampMs: number;
}

export interface NodeInfoRules {
  readonly chainId: string;
  readonly verifier: SignatureVerifier;
  /** Now, ms since the Unix epoch (injected). */
  readonly nowMs: number;
  /** This node's network key: an entry naming it is refused. */
  readonly ownKey?: Uint8Array | undefined;
  /** Default NODE_INFO_MAX_FUTURE_MS. */
  readonly maxFutureMs?: number | undefined;
  /** Default NODE_INFO_MAX_AGE_MS; Infinity skips the check (entries reloaded from the store). */
  readonly maxAgeMs?: number | undefined;
  /** Default NODE_INFO_MAX_ADDRESS_BYTES. */
  readonly maxAddressBytes?: number | undefined;
}

export type NodeInfoVerdict =
  | { readonly ok: true; readonly entry: NodeInfoEntry }
  | { readonly ok: false; readonly reason: NodeInfoRejection; readonly detail: string };

/** "dagsync/node-info/v1" || 0x00 || chain_id || 0x00 || encoded NodeInfo. */
export function nodeInfoSigningMessage(chainId: string, infoBytes: Uint8Array): Uint8Array {
  return concatBytes([
    NODE_INFO_SIGNING_DOMAIN,
    new Uint8Array([0]),
    utf8Bytes(chainId),
    new Uint8Array([0]),
    infoBytes,
  ]);
}

/**
 * `host:port`: a DNS name or IPv4 address, or an IPv6 address in brackets; a decimal port
 * 1..65535; at most `maxBytes` UTF-8 bytes. No spaces, schemes, paths or user info.
 */
export function isHostPort(address: string, maxBytes = NODE_INFO_MAX_ADDRESS_BYTES): boolean {
  if (address.length === 0 || utf8Bytes(address).length > maxBytes) return false;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)):([0-9]{1,5})$/.exec(
    address,
  );
  if (m === null) return false;
  const port = Number(m[3]);
  if (port < 1 || port > 65535 || m[3]!.startsWith("0")) return false;
  if (m[1] !== undefined) return m[1].includes(":");
  return !m[2]!.includes("..");
}

/** Splits an encoded SignedNodeInfo into the signed info bytes and the signature, strictly; throws. */
function splitSignedNodeInfo(bytes: Uint8Array): { infoBytes: Uint8Array; signature: Uint8Array } {
  let infoBytes: Uint8Array | undefined;
  let signature: Uint8Array | undefined;
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (wireType !== WireType.LengthDelimited) throw new Error(`field ${field} has wire type ${wireType}`);
    if (field === 1 && infoBytes === undefined && signature === undefined) infoBytes = reader.bytes();
    else if (field === 2 && infoBytes !== undefined && signature === undefined) signature = reader.bytes();
    else throw new Error(`unexpected or repeated field ${field}`);
  }
  if (infoBytes === undefined) throw new Error("no info (field 1)");
  if (signature === undefined || signature.length !== SIGNATURE_LENGTH)
    throw new Error(`signature must be ${SIGNATURE_LENGTH} bytes`);
  return { infoBytes, signature };
}

/**
 * Validates one encoded SignedNodeInfo against every rule of §9, cheapest first: decoding, our
 * own key, addresses, timestamp window, and last the signature. Never throws.
 */
export function validateSignedNodeInfo(bytes: Uint8Array, rules: NodeInfoRules): NodeInfoVerdict {
  let infoBytes: Uint8Array;
  let signature: Uint8Array;
  let info: NodeInfo;
  let timestampMs: number;
  try {
    ({ infoBytes, signature } = splitSignedNodeInfo(bytes));
    info = decodeStrict(NodeInfoSchema, infoBytes);
    if (info.networkKey.length !== PUBLIC_KEY_LENGTH)
      throw new Error(`network_key is ${info.networkKey.length} bytes, not ${PUBLIC_KEY_LENGTH}`);
    timestampMs = safeNumber(info.timestampMs, "timestamp_ms");
  } catch (e) {
    return {
      ok: false,
      reason: "malformed",
      detail: `SignedNodeInfo does not decode: ${e instanceof Error ? e.message : String(e)}`,
    };
  }
  if (rules.ownKey !== undefined && bytesEqual(info.networkKey, rules.ownKey))
    return { ok: false, reason: "own_key", detail: "the entry names this node's own network key" };
  const maxAddressBytes = rules.maxAddressBytes ?? NODE_INFO_MAX_ADDRESS_BYTES;
  if (!isHostPort(info.syncAddress, maxAddressBytes))
    return {
      ok: false,
      reason: "bad_address",
      detail: `sync_address is not host:port of at most ${maxAddressBytes} bytes`,
    };
  if (info.gossipAddress !== "" && !isHostPort(info.gossipAddress, maxAddressBytes))
    return {
      ok: false,
      reason: "bad_address",
      detail: `gossip_address is neither empty nor host:port of at most ${maxAddressBytes} bytes`,
    };
  const maxFutureMs = rules.maxFutureMs ?? NODE_INFO_MAX_FUTURE_MS;
  const maxAgeMs = rules.maxAgeMs ?? NODE_INFO_MAX_AGE_MS;
  if (timestampMs > rules.nowMs + maxFutureMs)
    return {
      ok: false,
      reason: "future_timestamp",
      detail: `timestamp is ${timestampMs - rules.nowMs} ms ahead (at most ${maxFutureMs})`,
    };
  if (timestampMs < rules.nowMs - maxAgeMs)
    return {
      ok: false,
      reason: "stale_timestamp",
      detail: `timestamp is ${rules.nowMs - timestampMs} ms old (at most ${maxAgeMs})`,
    };
  if (!rules.verifier.verify(info.networkKey, nodeInfoSigningMessage(rules.chainId, infoBytes), signature))
    return { ok: false, reason: "bad_signature", detail: "signature does not verify under network_key" };
  return {
    ok: true,
    entry: {
      bytes,
      infoBytes,
      signature,
      info,
      networkKey: info.networkKey,
      syncAddress: info.syncAddress,
      gossipAddress: info.gossipAddress,
      timestampMs,
    },
  };
}
