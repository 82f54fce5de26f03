/**
 * GossipFrame on the wire: exactly one length-delimited field (1 hello, 2 auth, 3 block,
 * 4 transaction). Read as a raw view, so a block is relayed and hashed exactly as received.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { encodeRawFields } from "../core/wire.js";
import { decodeStrict } from "../core/wire-check.js";
import {
  type HandshakeAuth,
  HandshakeAuthSchema,
  type Hello,
  HelloSchema,
} from "../gen/dagsync/v1/gossip_pb.js";

export const FRAME = { hello: 1, auth: 2, block: 3, transaction: 4 } as const;
export type FrameKind = keyof typeof FRAME;
export type Lane = "broadcast" | "mempool";

export interface RawFrame {
  readonly kind: FrameKind;
  readonly payload: Uint8Array;
}

const KIND_BY_FIELD: Record<number, FrameKind> = { 1: "hello", 2: "auth", 3: "block", 4: "transaction" };

/** Parses a frame; throws on junk (unknown field, several fields, wrong wire type). */
export function parseFrame(bytes: Uint8Array): RawFrame {
  const reader = new BinaryReader(bytes);
  if (reader.len === 0) throw new Error("empty frame");
  const [field, wireType] = reader.tag();
  const kind = KIND_BY_FIELD[field];
  if (kind === undefined || wireType !== WireType.LengthDelimited)
    throw new Error(`unknown frame field ${field}`);
  const payload = reader.bytes();
  if (reader.pos !== reader.len) throw new Error("a frame carries exactly one field");
  return { kind, payload };
}

export function encodeFrame(kind: FrameKind, payload: Uint8Array): Uint8Array {
  return encodeRawFields([[FRAME[kind], [payload]]]);
}

export function encodeHello(hello: Omit<Hello, "$typeName" | "$unknown">): Uint8Array {
  return encodeFrame("hello", toBinary(HelloSchema, create(HelloSchema, hello)));
}

/** Strict (core/wire-check.ts): the handshake transcript must read the same to every implementation. */
export function decodeHello(payload: Uint8Array): Hello {
  return decodeStrict(HelloSchema, payload);
}

export function encodeAuth(signature: Uint8Array): Uint8Array {
  return encodeFrame("auth", toBinary(HandshakeAuthSchema, create(HandshakeAuthSchema, { signature })));
}

export function decodeAuth(payload: Uint8Array): HandshakeAuth {
  return decodeStrict(HandshakeAuthSchema, payload);
}

export function laneOf(kind: FrameKind): Lane | undefined {
  return kind === "block" ? "broadcast" : kind === "transaction" ? "mempool" : undefined;
}
