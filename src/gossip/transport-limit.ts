/**
 * Frames over grpc-js's receive limit, made visible to GossipNode so that it can block their sender.
 *
 * grpc-js enforces `grpc.max_receive_message_length` below the handler: a message over it ends
 * the call with RESOURCE_EXHAUSTED "Received message larger than max (N vs M)" (compressed:
 * "Received message that decompresses to a size larger than M"), and the handler only hears
 * "cancelled", exactly as when a peer hangs up. Its sender could reconnect at once, unblocked.
 * This server interceptor hears those statuses and hands them to a callback registered for the
 * call, which may replace the status sent (GossipNode: PERMISSION_DENIED "blocked: ...").
 *
 * grpc-js (1.10 and later) reports its own decoder errors by calling `sendStatus` on the innermost
 * call object, not through the interceptor chain, so the interceptor wraps that method on the call
 * it is given: it must be the server's first interceptor (the gossip port has no other). Should a
 * grpc-js release change this, test/integration/gossip-blocker.test.ts fails (nothing else breaks:
 * the frame is still refused, only the block is missed).
 */
import * as grpc from "@grpc/grpc-js";

type Status = Parameters<grpc.ServerInterceptingCallInterface["sendStatus"]>[0];

/** Given grpc-js's details, returns the status to send instead, or undefined to keep its own. */
export type TransportRejectionHandler = (details: string) => Status | undefined;

/** What grpc-js says when a received message is over the limit (and nothing else says). */
const RECEIVE_LIMIT = /^Received message (larger than max|that decompresses to a size larger than)/;

export function isReceiveLimitError(code: grpc.status, details: string): boolean {
  return code === grpc.status.RESOURCE_EXHAUSTED && RECEIVE_LIMIT.test(details);
}

export class TransportLimitWatch {
  /** Keyed by the call's Metadata object: the one thing the handler and the interceptor both see. */
  private readonly handlers = new WeakMap<grpc.Metadata, { handle?: TransportRejectionHandler }>();

  /** Watches calls of `path` only. */
  constructor(private readonly path: string) {}

  readonly interceptor: grpc.ServerInterceptor = (method, call) => {
    if (method.path !== this.path) return new grpc.ServerInterceptingCall(call); // passes everything through
    const slot: { handle?: TransportRejectionHandler } = {};
    const send = call.sendStatus.bind(call);
    call.sendStatus = (status: Status) => {
      const replaced = isReceiveLimitError(status.code, status.details)
        ? slot.handle?.(status.details)
        : undefined;
      send(replaced ?? status);
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            this.handlers.set(metadata, slot);
            pass(metadata);
          },
        }),
    });
  };

  /**
   * Registers what to do when grpc-js refuses a frame of the call whose metadata is `metadata`
   * (`call.metadata` in the handler); false when that call did not pass through the interceptor.
   */
  onRejected(metadata: grpc.Metadata, handle: TransportRejectionHandler): boolean {
    const slot = this.handlers.get(metadata);
    if (slot === undefined) return false;
    slot.handle = handle;
    return true;
  }
}
