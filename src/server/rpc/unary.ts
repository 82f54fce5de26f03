/**
 * The frame of every unary handler: admission (by the bulk gate before the request was read, or
 * here), request decoding, metrics, and for bulk calls the server-wide ticket, held until the
 * response is written.
 */
import { type handleUnaryCall, type ServerUnaryCall, type sendUnaryData, status } from "@grpc/grpc-js";
import type { BulkTicket } from "../admission.js";
import { internalError } from "../call-admission.js";
import type { Decoded, RawResponse } from "../codec.js";
import { invalidArgument, RpcError, statusName } from "../errors.js";
import { peerKey } from "../rate-limit.js";
import type { RpcName } from "../services.js";
import type { RpcContext } from "./context.js";

export function unary<T>(
  ctx: RpcContext,
  rpc: RpcName,
  method: string,
  run: (request: T, peer: string) => Promise<RawResponse>,
  kind: "light" | "bulk" = "light",
): handleUnaryCall<Decoded<T>, RawResponse> {
  const { deps, admission } = ctx;
  return (call: ServerUnaryCall<Decoded<T>, RawResponse>, callback: sendUnaryData<RawResponse>) => {
    const started = performance.now();
    const peer = peerKey(call.getPeer());
    const finish = (code: number, bytes?: RawResponse, error?: RpcError) => {
      const { metrics } = deps;
      metrics.calls.inc({ method, code: statusName(code) });
      metrics.latency.observe({ method }, (performance.now() - started) / 1000);
      if (bytes !== undefined) {
        metrics.bytesServed.inc({ method }, bytes.byteLength);
        callback(null, bytes);
      } else callback(error!.toServiceError());
    };
    // Admitted by the gate already (released by it when the call ends), or admitted here.
    const gated = kind === "bulk" ? deps.gate?.admitted(call.metadata) : undefined;
    let release: (() => void) | undefined;
    let ticket: BulkTicket | undefined = gated?.ticket;
    (async () => {
      if (gated === undefined) release = admission.admit(rpc, method, peer, kind);
      const decoded = call.request;
      if (!decoded.ok) throw invalidArgument(decoded.error);
      if (kind === "bulk" && gated === undefined) ticket = admission.admitBulk(method, peer);
      return run(decoded.value, peer);
    })().then(
      (bytes) => {
        release?.();
        // Held until the response is written (or the call cancelled), not only assembled.
        ticket?.resize(bytes.byteLength);
        if (gated === undefined && ticket !== undefined) {
          const t = ticket;
          // A call cancelled while its response was assembled sends no status and has already
          // emitted "cancelled": release now, or the ticket is held forever.
          if (call.cancelled) t.release();
          else call.once("cancelled", () => t.release());
          queueMicrotask(() => t.release());
        }
        finish(status.OK, bytes);
      },
      (e: unknown) => {
        release?.();
        if (gated === undefined) ticket?.release();
        const error = e instanceof RpcError ? e : internalError(deps.log, method, peer, e);
        finish(error.code, undefined, error);
      },
    );
  };
}
