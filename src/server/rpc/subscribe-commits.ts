/**
 * StateSync/SubscribeCommits: replay from the store, then follow live (DESIGN §3). The
 * replay-then-follow loop is kept as it was in state-sync.ts (to be replaced separately).
 */
import type { handleServerStreamingCall, ServerWritableStream } from "@grpc/grpc-js";
import { encodeRawFields, formatBlockRef, parseCommit } from "../../core/index.js";
import type { BulkTicket } from "../admission.js";
import { internalError } from "../call-admission.js";
import type { Decoded } from "../codec.js";
import { invalidArgument, notFound, outOfRange, RpcError, resourceExhausted, statusName } from "../errors.js";
import { peerKey } from "../rate-limit.js";
import { index, type RpcContext } from "./context.js";

/**
 * Replays from the store from `start`, then follows the feed. The store is read at the
 * subscriber's pace (backpressure through the stream); a subscriber that falls more than
 * `subscriberBufferCommits` behind the live tip gets RESOURCE_EXHAUSTED naming where to resume,
 * and costs the others nothing, since each reads the store on its own.
 */
export function subscribeCommits(
  ctx: RpcContext,
): handleServerStreamingCall<Decoded<{ start: bigint }>, Uint8Array> {
  const { deps, admission } = ctx;
  return (call: ServerWritableStream<Decoded<{ start: bigint }>, Uint8Array>) => {
    const { store, options, metrics } = deps;
    const peer = peerKey(call.getPeer());
    const method = "SubscribeCommits";
    let release: (() => void) | undefined;
    let unsubscribe: (() => void) | undefined;
    let wake: (() => void) | undefined;
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
      wake?.();
      unblock?.();
    });
    const run = async () => {
      release = admission.admitStream(method, peer);
      const decoded = call.request;
      if (!decoded.ok) throw invalidArgument(decoded.error);
      if (decoded.value.start === 0n) throw invalidArgument("start must be ≥ 1 (commit indices start at 1)");
      let next = index("start", decoded.value.start);
      if (next < store.watermarks.lowestAvailable)
        throw outOfRange(
          `commit ${next} was pruned: this node serves from ${store.watermarks.lowestAvailable}`,
        );
      metrics.subscribers.inc();
      counted = true;
      let live = false;
      unsubscribe = deps.feed?.subscribe(() => wake?.());
      while (!cancelled) {
        const highest = store.watermarks.highestSynced;
        if (live && highest - next + 1 > options.subscriberBufferCommits)
          throw resourceExhausted(
            `subscriber fell more than ${options.subscriberBufferCommits} commits behind the tip: resubscribe with start = ${next}`,
          );
        if (next > highest) {
          live = true;
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = undefined;
          continue;
        }
        const end = Math.min(highest, next + options.subscriberReadAhead - 1);
        // A replay step is bulk work: it waits for a server-wide ticket (a stream is not refused
        // mid-replay; it is slowed down). Following live costs no ticket.
        let step: BulkTicket | undefined;
        while (!live && step === undefined && !cancelled) {
          const r = admission.bulk.acquire(peer, options.maxFetchResponseBytes);
          if (r.ok) step = r.ticket;
          else await new Promise((resolve) => setTimeout(resolve, r.retryAfterMs));
        }
        try {
          for (const commitBytes of await store.getCommits(next, end)) {
            if (cancelled) return;
            const entry = parseCommit(commitBytes);
            const blocks = await store.getBlocks(entry.commit.blocks);
            const missing = blocks.indexOf(undefined);
            if (missing >= 0)
              throw notFound(
                `commit ${entry.index}: block ${formatBlockRef(entry.commit.blocks[missing]!)} is missing`,
              );
            const bytes = encodeRawFields([
              [1, [commitBytes]],
              [2, blocks as Uint8Array[]],
            ]);
            if (live) metrics.subscriberLag.observe(store.watermarks.highestSynced - entry.index);
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
            next = entry.index + 1;
          }
        } finally {
          step?.release();
        }
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
        unsubscribe?.();
        release?.();
      });
  };
}
