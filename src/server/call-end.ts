/**
 * Tells a unary handler when its response has been written, so that the bytes it holds against
 * the server's budget (admission.ts) are counted until they leave, not only until they are handed
 * to grpc-js: a response queued behind a slow reader is still memory.
 *
 * grpc-js writes a unary response and sends the status from the write's callback; a server
 * interceptor sees that status. The handler and the interceptor share the call's Metadata object
 * (the one thing both see), so the handler registers under it. A call that is cancelled may never
 * send a status: the handler also listens to the call's "cancelled" event.
 */
import * as grpc from "@grpc/grpc-js";

interface Slot {
  onEnd?: () => void;
}

export class CallEndWatch {
  private readonly slots = new WeakMap<grpc.Metadata, Slot>();

  /** Watches calls of these method paths only. */
  constructor(private readonly paths: ReadonlySet<string>) {}

  readonly interceptor: grpc.ServerInterceptor = (method, call) => {
    if (!this.paths.has(method.path)) return new grpc.ServerInterceptingCall(call);
    const slot: Slot = {};
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            this.slots.set(metadata, slot);
            pass(metadata);
          },
        }),
      sendStatus: (status, next) => {
        slot.onEnd?.();
        next(status);
      },
    });
  };

  /** Runs `fn` once the call whose metadata is `metadata` has sent its status; false if not watched. */
  onEnd(metadata: grpc.Metadata, fn: () => void): boolean {
    const slot = this.slots.get(metadata);
    if (slot === undefined) return false;
    slot.onEnd = fn;
    return true;
  }
}
