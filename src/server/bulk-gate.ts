/**
 * The gate in front of bulk unary calls (FetchCommits, FetchBlocks): admission before the request
 * is read, and the end of the call.
 *
 * - Admission happens when the call's headers arrive, before its body is read or decoded. Under
 *   overload most bulk calls are refused; a refusal decided after decoding a 1000-ref request
 *   cost the server more than a third of what serving it would (measured: request decoding was
 *   the largest single item in the profile of a server refusing three calls in four). A refused
 *   call gets its RESOURCE_EXHAUSTED status at once and its body is discarded unread.
 * - The admission (per-peer in-flight slot and server-wide bulk ticket) is given back when the
 *   call's status is sent, i.e. once its response has been written (grpc-js sends a unary
 *   response's status from the write's callback), or when the call is cancelled: a response
 *   queued behind a slow reader is still memory.
 *
 * The handler and the interceptor share the call's Metadata object (the one thing both see), so
 * the handler finds its admission under it.
 */
import * as grpc from "@grpc/grpc-js";
import type { BulkTicket } from "./admission.js";
import { RpcError } from "./errors.js";
import { peerKey } from "./rate-limit.js";

/** What an admitted call holds until it ends. */
export interface Admitted {
  readonly ticket: BulkTicket;
  /** Gives back everything the call holds (idempotent). */
  release(): void;
}

export type Admit = (path: string, peer: string) => Admitted | RpcError;

interface Slot {
  admitted: Admitted | undefined;
}

export class BulkGate {
  private readonly slots = new WeakMap<grpc.Metadata, Slot>();

  /** Gates calls of these method paths only. */
  constructor(
    private readonly paths: ReadonlySet<string>,
    private readonly admit: Admit,
  ) {}

  readonly interceptor: grpc.ServerInterceptor = (method, call) => {
    if (!this.paths.has(method.path)) return new grpc.ServerInterceptingCall(call);
    const slot: Slot = { admitted: undefined };
    const end = () => {
      slot.admitted?.release();
      slot.admitted = undefined;
    };
    const gated: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            const admitted = this.admit(method.path, peerKey(call.getPeer()));
            if (admitted instanceof RpcError) {
              // Not passed on: the handler never starts and the body is never read.
              gated.sendStatus(admitted.toServiceError());
              return;
            }
            slot.admitted = admitted;
            this.slots.set(metadata, slot);
            pass(metadata);
          },
          // Called besides the next listener's onCancel, not instead of it.
          onCancel: end,
        }),
      sendStatus: (status, next) => {
        end();
        next(status);
      },
    });
    return gated;
  };

  /** The admission of the gated call whose metadata is `metadata`, while it holds one. */
  admitted(metadata: grpc.Metadata): Admitted | undefined {
    return this.slots.get(metadata)?.admitted;
  }
}
