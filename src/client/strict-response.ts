/**
 * Peer responses decoded strictly (core/wire-check.ts). connect-es decodes a response with
 * protobuf-es's fromBinary, which reads a known field whatever its wire type, and offers no hook
 * on the bytes. So the transport is asked to decode every response as google.protobuf.Empty:
 * protobuf-es then keeps each field as an unknown field `{no, wireType, data}` whose data are the
 * bytes as received (a view, not a copy). The response is recovered from them (as a view of the
 * received bytes, or rebuilt with tags re-encoded minimally, which changes nothing that a reader
 * sees) and decoded with decodeStrict.
 * A peer whose response fails that sent malformed data.
 *
 * Bytes that protobuf-es cannot even skip through (a truncated field, wire type 7) fail inside the
 * transport, as connect's "parse binary" error; that is malformed data too (`isParseError`).
 */
import type { DescMessage, DescMethod, MessageShape, UnknownField } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { decodeStrict } from "../core/wire-check.js";
import { PeerError } from "./errors.js";

/** The same method whose output the transport keeps as raw fields. */
export function rawOutput(method: DescMethod): DescMethod {
  return { ...method, output: EmptySchema } as DescMethod;
}

function varintSize(n: number): number {
  let size = 1;
  for (let v = n; v >= 0x80; v = Math.floor(v / 128)) size++;
  return size;
}

/**
 * The received bytes themselves when the fields lie back to back in one buffer behind minimal
 * tags (always, for a dagsync peer): a view, so the blocks decoded from it are views of the
 * response as before, with no copy.
 */
function receivedView(fields: readonly UnknownField[]): Uint8Array | undefined {
  const first = fields[0];
  if (first === undefined) return undefined;
  const { buffer } = first.data;
  const start = first.data.byteOffset - varintSize(first.no * 8 + first.wireType);
  if (start < 0) return undefined;
  const bytes = new Uint8Array(buffer);
  let pos = start;
  for (const f of fields) {
    if (f.data.buffer !== buffer) return undefined;
    let tag = f.no * 8 + f.wireType;
    for (; tag >= 0x80; tag = Math.floor(tag / 128))
      if (bytes[pos++] !== ((tag % 128) | 0x80)) return undefined;
    if (bytes[pos++] !== tag || f.data.byteOffset !== pos) return undefined;
    pos += f.data.length;
  }
  return new Uint8Array(buffer, start, pos - start);
}

/** The bytes of a message whose every field protobuf-es kept as unknown. */
export function reassemble(fields: readonly UnknownField[] | undefined): Uint8Array {
  if (fields === undefined) return new Uint8Array(0);
  const view = receivedView(fields);
  if (view !== undefined) return view;
  // Fields apart (a non-minimal tag, say): rebuild them, tags re-encoded minimally.
  let size = 0;
  for (const f of fields) size += varintSize(f.no * 8 + f.wireType) + f.data.length;
  const out = new Uint8Array(size);
  let pos = 0;
  for (const f of fields) {
    let tag = f.no * 8 + f.wireType;
    while (tag >= 0x80) {
      out[pos++] = (tag % 128) | 0x80;
      tag = Math.floor(tag / 128);
    }
    out[pos++] = tag;
    out.set(f.data, pos);
    pos += f.data.length;
  }
  return out;
}

/** Decodes a response received through `rawOutput` as `schema`; PeerError "invalid_data" if malformed. */
export function decodeResponse<Desc extends DescMessage>(
  schema: Desc,
  message: unknown,
  peer: string,
  method: string,
): MessageShape<Desc> {
  try {
    return decodeStrict(schema, reassemble((message as { $unknown?: UnknownField[] }).$unknown));
  } catch (e) {
    throw new PeerError(
      "invalid_data",
      peer,
      `${method}: malformed response: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
}

/**
 * Whether a transport error is connect failing to parse the response here, as opposed to a status
 * the peer sent: a peer's status always carries its grpc-status header or trailer as metadata.
 */
export function isParseError(e: unknown): e is ConnectError {
  return (
    e instanceof ConnectError && e.rawMessage.startsWith("parse binary:") && !e.metadata.has("grpc-status")
  );
}
