/** A gRPC status error with an actionable message, thrown by handlers and sent as the call's status. */
import { Metadata, status } from "@grpc/grpc-js";

export class RpcError extends Error {
  override readonly name = "RpcError";
  constructor(
    readonly code: status,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }

  /** The object grpc-js callbacks and `emit("error")` take; carries a retry hint as metadata. */
  toServiceError(): { code: status; details: string; metadata: Metadata } {
    const metadata = new Metadata();
    if (this.retryAfterMs !== undefined) metadata.set("retry-after-ms", String(this.retryAfterMs));
    return { code: this.code, details: this.message, metadata };
  }
}

export const invalidArgument = (m: string) => new RpcError(status.INVALID_ARGUMENT, m);
export const outOfRange = (m: string) => new RpcError(status.OUT_OF_RANGE, m);
export const notFound = (m: string) => new RpcError(status.NOT_FOUND, m);
export const resourceExhausted = (m: string, retryAfterMs?: number) =>
  new RpcError(status.RESOURCE_EXHAUSTED, m, retryAfterMs);

export function statusName(code: number): string {
  return status[code] ?? String(code);
}
