/**
 * Admission of every StateSync call, shared by the RPC handlers (rpc/) and the bulk gate
 * (bulk-gate.ts): a per-peer GCRA quota on each RPC, a cap on calls in flight per peer, a
 * server-wide ticket for bulk work (admission.ts), and the caps on open streams (server-wide and
 * per peer). Every refusal is RESOURCE_EXHAUSTED with a message naming the cap and a retry hint,
 * and is counted in `rateLimited` by reason.
 */
import { status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { BulkAdmission, type BulkTicket } from "./admission.js";
import type { Admitted } from "./bulk-gate.js";
import { RpcError, resourceExhausted, statusName } from "./errors.js";
import type { ServerMetrics } from "./metrics.js";
import type { ServerOptions } from "./options.js";
import { Gcra, InflightLimiter } from "./rate-limit.js";
import { BULK_METHODS, type RpcName } from "./services.js";

/** An unexpected failure: logged with its details, answered INTERNAL without them. */
export function internalError(log: Logger, method: string, peer: string, e: unknown): RpcError {
  log.error({ err: e, method, peer }, "internal error serving a request");
  return new RpcError(status.INTERNAL, `internal error in ${method}; the server log has details`);
}

export class CallAdmission {
  private readonly quotas: Record<RpcName, Gcra>;
  /** Calls in flight per peer, bulk and light apart: bulk calls held must not lock out heights. */
  private readonly inflight: Record<"bulk" | "light", InflightLimiter>;
  private readonly streams: InflightLimiter;
  private openStreams = 0;
  readonly bulk: BulkAdmission;

  constructor(
    private readonly options: ServerOptions,
    private readonly metrics: ServerMetrics,
    private readonly log: Logger,
  ) {
    const entries = Object.entries(options.rateLimits).map(([k, q]) => [
      k,
      new Gcra(q, options.maxTrackedPeers),
    ]);
    this.quotas = Object.fromEntries(entries) as Record<RpcName, Gcra>;
    this.inflight = {
      bulk: new InflightLimiter(options.maxInflightPerPeer),
      light: new InflightLimiter(options.maxInflightPerPeer),
    };
    this.streams = new InflightLimiter(options.maxStreamsPerPeer);
    this.bulk = new BulkAdmission({
      maxBulkCalls: options.maxBulkCalls,
      maxServerInflightBytes: options.maxServerInflightBytes,
      contentionWindowMs: options.bulkContentionWindowMs,
      minRetryAfterMs: options.bulkRetryAfterMinMs,
      maxRetryAfterMs: options.bulkRetryAfterMaxMs,
    });
  }

  /** A server-wide ticket for bulk work (admission.ts), or RESOURCE_EXHAUSTED with a retry hint. */
  admitBulk(method: string, peer: string): BulkTicket {
    const { options, metrics } = this;
    const result = this.bulk.acquire(peer, options.maxFetchResponseBytes);
    if (result.ok) return result.ticket;
    metrics.rateLimited.inc({ method, reason: `server_${result.reason}` });
    const why =
      result.reason === "share"
        ? `${peer} holds its fair share of the server's bulk capacity while others wait`
        : result.reason === "calls"
          ? `the server is serving ${options.maxBulkCalls} bulk calls (its cap)`
          : `the server holds ${Math.round(options.maxServerInflightBytes / 1048576)} MiB of responses (its budget)`;
    throw resourceExhausted(`server busy: ${why}; retry in ${result.retryAfterMs} ms`, result.retryAfterMs);
  }

  /** Quota and the stream caps (apart from the per-peer in-flight cap of calls). */
  admitStream(method: string, peer: string): () => void {
    const { options, metrics } = this;
    const admission = this.quotas.subscribeCommits.take(peer);
    if (!admission.ok) {
      metrics.rateLimited.inc({ method, reason: "rate" });
      throw resourceExhausted(
        `rate limit for ${method} exceeded for ${peer}: retry in ${admission.retryAfterMs} ms`,
        admission.retryAfterMs,
      );
    }
    if (this.openStreams >= options.maxStreams) {
      metrics.rateLimited.inc({ method, reason: "server_streams" });
      throw resourceExhausted(
        `the server has ${options.maxStreams} open streams (its cap): retry later`,
        1_000,
      );
    }
    const release = this.streams.acquire(peer);
    if (release === undefined) {
      metrics.rateLimited.inc({ method, reason: "streams" });
      throw resourceExhausted(
        `${peer} has ${options.maxStreamsPerPeer} open streams (the per-peer cap): close one first`,
        1_000,
      );
    }
    this.openStreams++;
    return () => {
      release();
      this.openStreams--;
    };
  }

  /**
   * Admission for one call: quota, then the in-flight cap of its kind (bulk and light calls are
   * counted apart, so an address holding its bulk calls can still ask for heights). Returns the
   * release function.
   */
  admit(rpc: RpcName, method: string, peer: string, kind: "light" | "bulk"): () => void {
    const admission = this.quotas[rpc].take(peer);
    if (!admission.ok) {
      this.metrics.rateLimited.inc({ method, reason: "rate" });
      throw resourceExhausted(
        `rate limit for ${method} exceeded for ${peer}: retry in ${admission.retryAfterMs} ms`,
        admission.retryAfterMs,
      );
    }
    const release = this.inflight[kind].acquire(peer);
    if (release === undefined) {
      this.metrics.rateLimited.inc({ method, reason: "inflight" });
      throw resourceExhausted(
        `${peer} has ${this.options.maxInflightPerPeer} ${kind} requests in flight (the per-peer cap): retry when one completes`,
        50,
      );
    }
    return release;
  }

  /**
   * Everything a bulk call needs before its request is read: quota, the per-peer in-flight slot
   * and a server-wide ticket. For the gate (bulk-gate.ts), which holds it until the call ends.
   */
  admitBulkCall(path: string, peer: string): Admitted | RpcError {
    const name = BULK_METHODS.get(path);
    if (name === undefined) return new RpcError(status.INTERNAL, `${path} is not a bulk method`);
    const [rpc, method] = name;
    let release: (() => void) | undefined;
    try {
      release = this.admit(rpc, method, peer, "bulk");
      const ticket = this.admitBulk(method, peer);
      const done = release;
      return {
        ticket,
        release: () => {
          done();
          ticket.release();
        },
      };
    } catch (e) {
      release?.();
      const error = e instanceof RpcError ? e : internalError(this.log, method, peer, e);
      this.metrics.calls.inc({ method, code: statusName(error.code) });
      return error;
    }
  }
}
