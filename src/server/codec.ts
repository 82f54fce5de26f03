/**
 * grpc-js method definitions over protobuf-es schemas.
 *
 * Responses are always pre-encoded bytes: handlers assemble them from stored canonical bytes
 * through the wire twins (src/gen/dagsync/wire), so the serving path never decodes and re-encodes
 * a block or commit. A bulk response is handed over as its fields (RawFieldsResponse) and written
 * once, straight into a reused scratch buffer that grpc-js copies into its frame: a fresh 2–4 MB
 * buffer per answer costs more in page faults and zeroing than the copy itself (the serving
 * profile in BENCHMARKS.md). Requests decode into a result instead of throwing, so that a malformed
 * request becomes INVALID_ARGUMENT with a reason rather than grpc-js's generic INTERNAL. They
 * decode strictly (core/wire-check.ts): a field of the wrong wire type is refused, never read
 * otherwise than another protobuf implementation would read it.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { MethodDefinition } from "@grpc/grpc-js";
import { type RawFields, rawFieldsSize, writeRawFields } from "../core/wire.js";
import { decodeStrict } from "../core/wire-check.js";

/**
 * A response made only of length-delimited fields, encoded when grpc-js serializes it. Its
 * byteLength is the encoded size, known before encoding (for budgets and metrics).
 */
export class RawFieldsResponse {
  readonly byteLength: number;
  constructor(readonly fields: RawFields) {
    this.byteLength = rawFieldsSize(fields);
  }
}

/** What a handler answers: encoded bytes, or fields to encode at serialization. */
export type RawResponse = Uint8Array | RawFieldsResponse;

/**
 * The largest response encoded in the reused scratch buffer, bytes; a larger one (none, with
 * the default limits: a response is at most maxFetchResponseBytes plus one block) gets a buffer
 * of its own. The scratch buffer is this process's (thread's) only, at most this size.
 */
export const SERIALIZE_SCRATCH_MAX_BYTES = 8 * 1024 * 1024;
let scratch = Buffer.allocUnsafeSlow(0);

/**
 * Serializes a response for grpc-js. A RawFieldsResponse is written into the scratch buffer and
 * returned as a view of it. That is safe because grpc-js copies what serialize returns into its
 * frame before it returns (server-interceptors.ts, serializeMessage), and JavaScript runs one
 * serialize at a time; test/integration/server-serialize.test.ts checks concurrent answers stay
 * intact, so a grpc-js that kept the view would fail it.
 */
export function serializeResponse(response: RawResponse): Buffer {
  if (response instanceof Uint8Array)
    return Buffer.from(response.buffer, response.byteOffset, response.byteLength);
  const size = response.byteLength;
  if (size > SERIALIZE_SCRATCH_MAX_BYTES) {
    const own = Buffer.allocUnsafe(size);
    writeRawFields(response.fields, own);
    return own;
  }
  if (scratch.length < size)
    scratch = Buffer.allocUnsafeSlow(Math.min(SERIALIZE_SCRATCH_MAX_BYTES, size * 2));
  writeRawFields(response.fields, scratch);
  return scratch.subarray(0, size);
}

export type Decoded<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: string };

export function rawMethod<I extends DescMessage>(
  path: string,
  input: I,
  streams: { requestStream?: boolean; responseStream?: boolean } = {},
): MethodDefinition<Decoded<MessageShape<I>>, RawResponse> {
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
    responseSerialize: serializeResponse,
    responseDeserialize: (bytes: Buffer) => new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
  };
}
