/**
 * StateSync/SubscribeCommits: replay from the store, then follow live (DESIGN §3), through the
 * store's SubDagFeed (store/subscription.ts): the same loop and the same errors as the in-process
 * subscription.
 */
import type { handleServerStreamingCall, ServerWritableStream } from "@grpc/grpc-js";
import { encodeRawFields, SubscriberLagError, SubscriptionError } from "../../core/index.js";
import type { BulkTicket } from "../admission.js";
import { internalError } from "../call-admission.js";
import type { Decoded } from "../codec.js";
import { invalidArgument, notFound, outOfRange, RpcError, resourceExhausted, statusName } from "../errors.js";
import { peerKey } from "../rate-limit.js";
import { index, type RpcContext } from "./context.js";

/**
 * Replays from the store from `start`, then follows the feed. The store is read at the
 * subscriber's pace (backpressure through the stream); each replay step waits for a bulk ticket;
 * a subscriber that falls more than `subscriberBufferCommits` behind the live tip gets
 * RESOURCE_EXHAUSTED naming where to resume, and costs the others nothing.
 */
export function subscribeCommits(
  ctx: RpcContext,
): handleServerStreamingCall<Decoded<{ start: bigint }>, Uint8Array> {
  const { deps, admission, feed } = ctx;
  return (call: ServerWritableStream<Decoded<{ start: bigint }>, Uint8Array>) => {
    const { store, options, metrics } = deps;
    const peer = peerKey(call.getPeer());
    const method = "SubscribeCommits";
    let release: (() => void) | undefined;
    const abort = new AbortController();
    /** Resolves a wait for "drain", so that a cancelled call never waits for a drain that cannot come. */
    let unblock: (() => void) | undefined;
    let counted = false;
    let cancelled = false;
    const fail = (e: unknown) => {
      const error = e instanceof RpcError ? e : internalError(deps.log, method, peer, e);
      metrics.calls.inc({ method, code: statusName(error.code) });
      call.emit("error", error.toServiceError());
    };
    call.on("cancelled", () => {
      cancelled = true;
      abort.abort();
      unblock?.();
    });
    const run = async () => {
      release = admission.admitStream(method, peer);
      const decoded = call.request;
      if (!decoded.ok) throw invalidArgument(decoded.error);
      if (decoded.value.start === 0n) throw invalidArgument("start must be ≥ 1 (commit indices start at 1)");
      const start = index("start", decoded.value.start);
      metrics.subscribers.inc();
      counted = true;
      let live = false;
      /** The bulk ticket of the replay step in progress. */
      let step: BulkTicket | undefined;
      const subDags = feed.iterate(start, {
        signal: abort.signal,
        bufferCommits: options.subscriberBufferCommits,
        readAhead: options.subscriberReadAhead,
        onLive: () => {
          live = true;
        },
        // A replay step is bulk work: it waits for a server-wide ticket (a stream is not refused
        // mid-replay; it is slowed down). Following live costs no ticket.
        admitReplayStep: async () => {
          while (step === undefined && !cancelled) {
            const r = admission.bulk.acquire(peer, options.maxFetchResponseBytes);
            if (r.ok) step = r.ticket;
            else await new Promise((resolve) => setTimeout(resolve, r.retryAfterMs));
          }
          return () => {
            step?.release();
            step = undefined;
          };
        },
      });
      try {
        for await (const subDag of subDags) {
          if (cancelled) return;
          const bytes = encodeRawFields([
            [1, [subDag.commit.bytes]],
            [2, subDag.blocks],
          ]);
          if (live) metrics.subscriberLag.observe(store.watermarks.highestSynced - subDag.index);
          metrics.bytesServed.inc({ method }, bytes.length);
          if (!call.write(bytes)) {
            // A subscriber that does not read must not pin server-wide bulk capacity: the step
            // gives its ticket back before waiting (what waits in its send buffer is at most one
            // step, and streams are capped per address and server-wide).
            step?.release();
            step = undefined;
            await new Promise<void>((resolve) => {
              const done = () => {
                call.off("drain", done);
                unblock = undefined;
                resolve();
              };
              unblock = done;
              call.once("drain", done);
              if (cancelled) done();
            });
          }
        }
      } catch (e) {
        throw subscriptionStatus(e);
      }
    };
    run()
      .then(
        () => {
          if (!cancelled) call.end();
        },
        (e: unknown) => {
          if (!cancelled) fail(e);
        },
      )
      .finally(() => {
        if (counted) metrics.subscribers.dec();
        abort.abort();
        release?.();
      });
  };
}

/** The gRPC status of a subscription's error (the same codes as the in-process subscription's). */
function subscriptionStatus(e: unknown): unknown {
  if (!(e instanceof SubscriptionError)) return e;
  switch (e.code) {
    case "invalid_argument":
      return invalidArgument(e.message);
    case "out_of_range":
      return outOfRange(e.message);
    case "not_found":
      return notFound(e.message);
    case "lagged":
      return resourceExhausted(
        e instanceof SubscriberLagError
          ? e.message.replace(/resubscribe from \d+$/, `resubscribe with start = ${e.resumeFrom}`)
          : e.message,
      );
  }
}
