/**
 * grpc-js method definitions over protobuf-es schemas.
 *
 * Responses are always pre-encoded bytes: handlers assemble them from stored canonical bytes
 * through the wire twins (src/gen/dagsync/wire), so the serving path never decodes and re-encodes
 * a block or commit. Requests decode into a result instead of throwing, so that a malformed
 * request becomes INVALID_ARGUMENT with a reason rather than grpc-js's generic INTERNAL. They
 * decode strictly (core/wire-check.ts): a field of the wrong wire type is refused, never read
 * otherwise than another protobuf implementation would read it.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { MethodDefinition } from "@grpc/grpc-js";
import { decodeStrict } from "../core/wire-check.js";

export type Decoded<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: string };

export function rawMethod<I extends DescMessage>(
  path: string,
  input: I,
  streams: { requestStream?: boolean; responseStream?: boolean } = {},
): MethodDefinition<Decoded<MessageShape<I>>, Uint8Array> {
  return {
    path,
    requestStream: streams.requestStream ?? false,
    responseStream: streams.responseStream ?? false,
    requestSerialize: () => {
      throw new Error(`${path}: server-side definition cannot serialize requests`);
    },
    requestDeserialize: (bytes: Buffer): Decoded<MessageShape<I>> => {
      try {
        return { ok: true, value: decodeStrict(input, bytes) };
      } catch (e) {
        return {
          ok: false,
          error: `request does not decode as ${input.typeName}: ${e instanceof Error ? e.message : String(e)}`,
        };
      }
    },
    responseSerialize: (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    responseDeserialize: (bytes: Buffer) => new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
  };
}
