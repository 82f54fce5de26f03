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
 * - Nothing may hold a ticket for long without doing its part: the request must arrive within
 *   `requestTimeoutMs` of the headers, and the response be written within `responseTimeoutMs` of
 *   admission. Otherwise the call ends with DEADLINE_EXCEEDED, its ticket is given back and its
 *   HTTP/2 stream is reset (a response stuck behind a reader that never reads is dropped).
 *   Without these, a few calls sending headers and no body (or never reading) took the whole
 *   server's bulk capacity for good.
 *
 * The handler and the interceptor share the call's Metadata object (the one thing both see), so
 * the handler finds its admission under it.
 */
import * as http2 from "node:http2";
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

export interface BulkGateTimeouts {
  /** From the headers to the end of the request, ms. */
  readonly requestTimeoutMs: number;
  /** From admission to the response written, ms. */
  readonly responseTimeoutMs: number;
}

/** grpc-js's innermost call keeps its HTTP/2 stream here (1.10–1.14); used only to reset it. */
interface WithRawStream {
  readonly stream?: { readonly destroyed?: boolean; close?: (code?: number) => void };
}

export class BulkGate {
  private readonly slots = new WeakMap<grpc.Metadata, Slot>();

  /** Gates calls of these method paths only. */
  constructor(
    private readonly paths: ReadonlySet<string>,
    private readonly admit: Admit,
    private readonly timeouts: BulkGateTimeouts,
  ) {}

  readonly interceptor: grpc.ServerInterceptor = (method, call) => {
    if (!this.paths.has(method.path)) return new grpc.ServerInterceptingCall(call);
    const slot: Slot = { admitted: undefined };
    let requestTimer: NodeJS.Timeout | undefined;
    let responseTimer: NodeJS.Timeout | undefined;
    const end = () => {
      clearTimeout(requestTimer);
      clearTimeout(responseTimer);
      slot.admitted?.release();
      slot.admitted = undefined;
    };
    const cutOff = (details: string) => {
      if (slot.admitted === undefined) return;
      gated.sendStatus({ code: grpc.status.DEADLINE_EXCEEDED, details, metadata: new grpc.Metadata() });
      // A response stuck behind a reader that never reads keeps the stream open after the status:
      // reset it, which frees what it holds.
      const raw = (call as unknown as WithRawStream).stream;
      if (raw !== undefined && raw.destroyed !== true) raw.close?.(http2.constants.NGHTTP2_CANCEL);
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
            const { requestTimeoutMs, responseTimeoutMs } = this.timeouts;
            requestTimer = setTimeout(
              () => cutOff(`the request did not arrive within ${requestTimeoutMs} ms of its headers`),
              requestTimeoutMs,
            );
            responseTimer = setTimeout(
              () => cutOff(`the call held server capacity for ${responseTimeoutMs} ms (its bound)`),
              responseTimeoutMs,
            );
            pass(metadata);
          },
          onReceiveHalfClose: (next) => {
            clearTimeout(requestTimer);
            next();
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
