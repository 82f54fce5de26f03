/**
 * The StateSync and Admin handlers (DESIGN.md §3). Reads come straight from the store's canonical
 * bytes; responses are assembled through the wire twins, never by decoding and re-encoding.
 *
 * Threats: a peer may send malformed or huge requests, ask for ranges it cannot have, or flood
 * us. Every request is admitted by a per-peer GCRA quota and in-flight cap first, validated
 * second, and only then touches the store, read-only. Nothing a peer sends changes the store:
 * PushCommit is a hint passed to the sync engine, which verifies everything it fetches.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import {
  encodeRawFields,
  formatBlockRef,
  rawFieldSize,
  SubscriberLagError,
  SubscriptionError,
} from "../core/index.js";
import {
  GetStatusRequestSchema,
  GetStatusResponseSchema,
  type PeerStatus,
} from "../gen/dagsync/v1/admin_pb.js";
import {
  FetchBlocksRequestSchema,
  FetchCommitsRequestSchema,
  GetCommitAvailabilityRequestSchema,
  GetCommitAvailabilityResponseSchema,
  type PushCommitRequest,
  PushCommitRequestSchema,
  PushCommitResponseSchema,
  SubscribeCommitsRequestSchema,
} from "../gen/dagsync/v1/sync_pb.js";
import { WireFetchCommitsResponseSchema } from "../gen/dagsync/wire/v1/wire_pb.js";
import { type Store, SubDagFeed } from "../store/index.js";
import { BulkAdmission, type BulkTicket } from "./admission.js";
import type { Admitted, BulkGate } from "./bulk-gate.js";
import { type Decoded, rawMethod } from "./codec.js";
import { invalidArgument, notFound, outOfRange, RpcError, resourceExhausted, statusName } from "./errors.js";
import type { ServerMetrics } from "./metrics.js";
import type { ServerOptions } from "./options.js";
import { Gcra, InflightLimiter, peerKey } from "./rate-limit.js";

/**
 * What the server's SubscribeCommits follows: the store's SubDagFeed, which whoever applies commits
 * publishes to (the sync engine's broadcast, serve's live producer). Without one, the server makes
 * its own, which replays the store and then waits.
 */
export type CommitFeed = SubDagFeed;

export interface StateSyncDeps {
  readonly store: Store;
  readonly options: ServerOptions;
  readonly metrics: ServerMetrics;
  readonly log: Logger;
  readonly feed?: CommitFeed | undefined;
  /** A peer's PushCommit hint, for the sync engine (never trusted). */
  readonly onPushCommit?: ((peer: string, request: PushCommitRequest) => void) | undefined;
  /** The node's status for Admin/GetStatus, beyond what the store knows. */
  readonly status?: (() => NodeStatus) | undefined;
  /**
   * Admits bulk calls before their request is read and holds the admission until the response
   * is written (bulk-gate.ts); without it the handlers admit them, after decoding.
   */
  readonly gate?: BulkGate | undefined;
}

/** What the node adds to Admin/GetStatus beyond the store's watermarks. */
export interface NodeStatus {
  readonly syncState?: string;
  readonly role?: string;
  readonly targetCommit?: bigint;
  readonly peers?: PeerStatus[];
  /** While the sync state is "stalled": why, and since when (ms since the Unix epoch). */
  readonly stallReason?: string;
  readonly stalledSinceMs?: bigint;
}

type RpcName = keyof ServerOptions["rateLimits"];

export const STATE_SYNC_SERVICE = {
  getCommitAvailability: rawMethod(
    "/dagsync.v1.StateSync/GetCommitAvailability",
    GetCommitAvailabilityRequestSchema,
  ),
  fetchCommits: rawMethod("/dagsync.v1.StateSync/FetchCommits", FetchCommitsRequestSchema),
  fetchBlocks: rawMethod("/dagsync.v1.StateSync/FetchBlocks", FetchBlocksRequestSchema),
  pushCommit: rawMethod("/dagsync.v1.StateSync/PushCommit", PushCommitRequestSchema),
  subscribeCommits: rawMethod("/dagsync.v1.StateSync/SubscribeCommits", SubscribeCommitsRequestSchema, {
    responseStream: true,
  }),
};

/** Bulk unary methods by path: their quota name and their name in metrics and messages. */
const BULK_METHODS = new Map<string, readonly [RpcName, string]>([
  [STATE_SYNC_SERVICE.fetchCommits.path, ["fetchCommits", "FetchCommits"]],
  [STATE_SYNC_SERVICE.fetchBlocks.path, ["fetchBlocks", "FetchBlocks"]],
]);

export const ADMIN_SERVICE = {
  getStatus: rawMethod("/dagsync.v1.Admin/GetStatus", GetStatusRequestSchema),
};

/**
 * Commit indices (and heights) are JS numbers inside dagsync; a u64 above 2^53 − 1 would round to
 * another index. So such a value is refused, naming it exactly, before anything converts it.
 */
function index(what: string, value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER))
    throw invalidArgument(
      `${what} ${value} is above 2^53 − 1 (${Number.MAX_SAFE_INTEGER}), the largest index dagsync accepts`,
    );
  return Number(value);
}

/** Bytes a repeated length-delimited field adds around a payload: the tag and the varint length. */
function fieldOverhead(length: number): number {
  return rawFieldSize(length) - length;
}

export class StateSyncHandlers {
  private readonly quotas: Record<RpcName, Gcra>;
  private readonly inflight: InflightLimiter;
  private readonly streams: InflightLimiter;
  private openStreams = 0;
  readonly bulk: BulkAdmission;
  private readonly feed: SubDagFeed;

  constructor(private readonly deps: StateSyncDeps) {
    const { options } = deps;
    const entries = Object.entries(options.rateLimits).map(([k, q]) => [
      k,
      new Gcra(q, options.maxTrackedPeers),
    ]);
    this.quotas = Object.fromEntries(entries) as Record<RpcName, Gcra>;
    this.inflight = new InflightLimiter(options.maxInflightPerPeer);
    this.streams = new InflightLimiter(options.maxStreamsPerPeer);
    this.feed = deps.feed ?? new SubDagFeed(deps.store);
    this.bulk = new BulkAdmission({
      maxBulkCalls: options.maxBulkCalls,
      maxServerInflightBytes: options.maxServerInflightBytes,
      contentionWindowMs: options.bulkContentionWindowMs,
      minRetryAfterMs: options.bulkRetryAfterMinMs,
      maxRetryAfterMs: options.bulkRetryAfterMaxMs,
    });
  }

  /** A server-wide ticket for bulk work (admission.ts), or RESOURCE_EXHAUSTED with a retry hint. */
  private admitBulk(method: string, peer: string): BulkTicket {
    const { options, metrics } = this.deps;
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
  private admitStream(method: string, peer: string): () => void {
    const { options, metrics } = this.deps;
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

  /** Admission for one call: quota, then in-flight cap. Returns the release function. */
  private admit(rpc: RpcName, method: string, peer: string): () => void {
    const admission = this.quotas[rpc].take(peer);
    if (!admission.ok) {
      this.deps.metrics.rateLimited.inc({ method, reason: "rate" });
      throw resourceExhausted(
        `rate limit for ${method} exceeded for ${peer}: retry in ${admission.retryAfterMs} ms`,
        admission.retryAfterMs,
      );
    }
    const release = this.inflight.acquire(peer);
    if (release === undefined) {
      this.deps.metrics.rateLimited.inc({ method, reason: "inflight" });
      throw resourceExhausted(
        `${peer} has ${this.deps.options.maxInflightPerPeer} requests in flight (the per-peer cap): retry when one completes`,
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
      release = this.admit(rpc, method, peer);
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
      const error = e instanceof RpcError ? e : this.internal(method, peer, e);
      this.deps.metrics.calls.inc({ method, code: statusName(error.code) });
      return error;
    }
  }

  private unary<T>(
    rpc: RpcName,
    method: string,
    run: (request: T, peer: string) => Promise<Uint8Array>,
    kind: "light" | "bulk" = "light",
  ): handleUnaryCall<Decoded<T>, Uint8Array> {
    return (call: ServerUnaryCall<Decoded<T>, Uint8Array>, callback: sendUnaryData<Uint8Array>) => {
      const started = performance.now();
      const peer = peerKey(call.getPeer());
      const finish = (code: number, bytes?: Uint8Array, error?: RpcError) => {
        const { metrics } = this.deps;
        metrics.calls.inc({ method, code: statusName(code) });
        metrics.latency.observe({ method }, (performance.now() - started) / 1000);
        if (bytes !== undefined) {
          metrics.bytesServed.inc({ method }, bytes.length);
          callback(null, bytes);
        } else callback(error!.toServiceError());
      };
      // Admitted by the gate already (released by it when the call ends), or admitted here.
      const gated = kind === "bulk" ? this.deps.gate?.admitted(call.metadata) : undefined;
      let release: (() => void) | undefined;
      let ticket: BulkTicket | undefined = gated?.ticket;
      (async () => {
        if (gated === undefined) release = this.admit(rpc, method, peer);
        const decoded = call.request;
        if (!decoded.ok) throw invalidArgument(decoded.error);
        if (kind === "bulk" && gated === undefined) ticket = this.admitBulk(method, peer);
        return run(decoded.value, peer);
      })().then(
        (bytes) => {
          release?.();
          // Held until the response is written (or the call cancelled), not only assembled.
          ticket?.resize(bytes.length);
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
          const error = e instanceof RpcError ? e : this.internal(method, peer, e);
          finish(error.code, undefined, error);
        },
      );
    };
  }

  private internal(method: string, peer: string, e: unknown): RpcError {
    this.deps.log.error({ err: e, method, peer }, "internal error serving a request");
    return new RpcError(status.INTERNAL, `internal error in ${method}; the server log has details`);
  }

  getCommitAvailability = this.unary("getCommitAvailability", "GetCommitAvailability", async () => {
    const { store } = this.deps;
    const marks = store.watermarks;
    return toBinary(
      GetCommitAvailabilityResponseSchema,
      create(GetCommitAvailabilityResponseSchema, {
        highestSyncedCommit: BigInt(marks.highestSynced),
        lowestAvailableCommit: BigInt(marks.lowestAvailable),
        epoch: BigInt(marks.highestSynced === 0 ? 0 : store.epochBoundsOf(marks.highestSynced).epoch),
        genesisDigest: store.genesis.digest,
        highestCommitDigest: marks.highestSyncedDigest,
      }),
    );
  });

  /** Where this node can serve from, or OUT_OF_RANGE saying what it can serve. */
  private checkAvailable(start: number): void {
    const { lowestAvailable, highestSynced } = this.deps.store.watermarks;
    if (start < lowestAvailable || start > highestSynced)
      throw outOfRange(
        highestSynced < lowestAvailable
          ? `commit ${start} is not available: this node holds no commits yet`
          : `commit ${start} is not available: this node serves commits ${lowestAvailable}..${highestSynced}`,
      );
  }

  fetchCommits = this.unary(
    "fetchCommits",
    "FetchCommits",
    async (req: { start: bigint; end: bigint }) => {
      const { store, options } = this.deps;
      if (req.start === 0n) throw invalidArgument("start must be ≥ 1 (commit indices start at 1)");
      const start = index("start", req.start);
      const requestedEnd = index("end", req.end);
      if (start > requestedEnd) throw invalidArgument(`start ${start} is after end ${requestedEnd}`);
      this.checkAvailable(start);
      const marks = store.watermarks;
      const bounds = store.epochBoundsOf(start);
      let end = Math.min(requestedEnd, start + options.maxCommitsPerFetch - 1, marks.highestSynced);
      if (bounds.end !== undefined) end = Math.min(end, bounds.end);

      const commits = await store.getCommits(start, end);
      const budget = options.maxFetchResponseBytes;
      // Size bound on the commits alone first; the certifier blocks are added below.
      let size = 0;
      let count = 0;
      for (const c of commits) {
        const next = size + c.length + fieldOverhead(c.length);
        if (count > 0 && next > budget) break;
        size = next;
        count++;
      }
      // End at the highest commit in range whose certifier blocks we hold; shrink while too big.
      const certified = await store.highestCertifiedIn(start, start + count - 1);
      if (certified === undefined) {
        // Nothing certifiable within the bounds: run past them to the first commit of the epoch we
        // can certify (the batch contract, DESIGN §3). DESIGN caps this at maxCommitsPerFetch too,
        // but a node that synced from a server with a larger cap holds certifiers farther apart, and
        // refusing would leave such a node unable to serve at all; a batch of commits alone is small.
        const first = await store.lowestCertifiedIn(start, bounds.end ?? marks.highestSynced);
        if (first === undefined) throw notFound(`no certified commit at or after ${start} on this node`);
        return this.encodeCommits(
          await store.getCommits(start, first),
          (await store.getCertifiers(first)) ?? [],
        );
      }
      let last: number = certified;
      for (;;) {
        const certifiers: Uint8Array[] = (await store.getCertifiers(last)) ?? [];
        const chosen = commits.slice(0, last - start + 1);
        let total = 0;
        for (const b of [...chosen, ...certifiers]) total += b.length + fieldOverhead(b.length);
        const lower: number | undefined =
          total > budget && last > start ? await store.highestCertifiedIn(start, last - 1) : undefined;
        if (lower === undefined) return this.encodeCommits(chosen, certifiers);
        last = lower;
      }
    },
    "bulk",
  );

  private encodeCommits(commits: Uint8Array[], certifierBlocks: Uint8Array[]): Uint8Array {
    return toBinary(
      WireFetchCommitsResponseSchema,
      create(WireFetchCommitsResponseSchema, { commits, certifierBlocks }),
    );
  }

  fetchBlocks = this.unary(
    "fetchBlocks",
    "FetchBlocks",
    async (req: { refs: { round: number; author: number; digest: Uint8Array }[] }) => {
      const { store, options } = this.deps;
      const { refs } = req;
      if (refs.length === 0) throw invalidArgument("refs is empty: ask for at least one block");
      if (refs.length > options.maxBlocksPerFetch)
        throw invalidArgument(
          `${refs.length} refs requested; at most ${options.maxBlocksPerFetch} per FetchBlocks`,
        );
      refs.forEach((ref, i) => {
        if (ref.digest.length !== 32)
          throw invalidArgument(
            `refs[${i}] (round ${ref.round}, author ${ref.author}) has a ${ref.digest.length}-byte digest; digests are 32 bytes`,
          );
      });
      const found = await store.getBlocks(refs);
      const blocks: Uint8Array[] = [];
      let size = 0;
      for (let i = 0; i < found.length; i++) {
        const bytes = found[i];
        if (bytes === undefined)
          throw notFound(`refs[${i}] ${formatBlockRef(refs[i]!)} is not stored on this node`);
        const next = size + bytes.length + fieldOverhead(bytes.length);
        if (blocks.length > 0 && next > options.maxFetchResponseBytes) break; // a prefix: the client asks again
        size = next;
        blocks.push(bytes);
      }
      return encodeRawFields([[1, blocks]]);
    },
    "bulk",
  );

  pushCommit = this.unary("pushCommit", "PushCommit", async (req: PushCommitRequest, peer) => {
    if (req.commit !== undefined && req.commit.digest.length !== 32)
      throw invalidArgument("commit.digest must be 32 bytes");
    if (req.commit !== undefined) index("commit.index", req.commit.index);
    index("highest_synced_commit", req.highestSyncedCommit);
    this.deps.onPushCommit?.(peer, req);
    return toBinary(PushCommitResponseSchema, create(PushCommitResponseSchema));
  });

  getStatus = this.unary("admin", "GetStatus", async () => {
    const { store } = this.deps;
    const marks = store.watermarks;
    const base = create(GetStatusResponseSchema, {
      chainId: store.genesis.genesis.chainId,
      genesisDigest: store.genesis.digest,
      highestVerifiedCommit: BigInt(marks.highestVerified),
      highestSyncedCommit: BigInt(marks.highestSynced),
      lowestAvailableCommit: BigInt(marks.lowestAvailable),
      epoch: BigInt(marks.epoch),
      syncState: "serving",
      role: "validator",
      ...this.deps.status?.(),
    });
    return toBinary(GetStatusResponseSchema, base);
  });

  /**
   * Replays from the store from `start`, then follows the feed: the store's SubDagFeed
   * (subscription.ts), the same loop and errors as the in-process subscription. The store is read
   * at the subscriber's pace (backpressure through the stream); each replay step waits for a bulk
   * ticket; a subscriber that falls more than `subscriberBufferCommits` behind the live tip gets
   * RESOURCE_EXHAUSTED naming where to resume, and costs the others nothing.
   */
  subscribeCommits: handleServerStreamingCall<Decoded<{ start: bigint }>, Uint8Array> = (
    call: ServerWritableStream<Decoded<{ start: bigint }>, Uint8Array>,
  ) => {
    const { store, options, metrics } = this.deps;
    const peer = peerKey(call.getPeer());
    const method = "SubscribeCommits";
    let release: (() => void) | undefined;
    const abort = new AbortController();
    /** Resolves a wait for "drain", so that a cancelled call never waits for a drain that cannot come. */
    let unblock: (() => void) | undefined;
    let counted = false;
    let cancelled = false;
    const fail = (e: unknown) => {
      const error = e instanceof RpcError ? e : this.internal(method, peer, e);
      metrics.calls.inc({ method, code: statusName(error.code) });
      call.emit("error", error.toServiceError());
    };
    call.on("cancelled", () => {
      cancelled = true;
      abort.abort();
      unblock?.();
    });
    const run = async () => {
      release = this.admitStream(method, peer);
      const decoded = call.request;
      if (!decoded.ok) throw invalidArgument(decoded.error);
      if (decoded.value.start === 0n) throw invalidArgument("start must be ≥ 1 (commit indices start at 1)");
      const start = index("start", decoded.value.start);
      metrics.subscribers.inc();
      counted = true;
      let live = false;
      /** The bulk ticket of the replay step in progress. */
      let step: BulkTicket | undefined;
      const subDags = this.feed.iterate(start, {
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
            const r = this.bulk.acquire(peer, options.maxFetchResponseBytes);
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

/** Decodes a FetchCommits wire response into its parts (for tests and tools). */
export function decodeFetchCommitsResponse(bytes: Uint8Array) {
  return fromBinary(WireFetchCommitsResponseSchema, bytes);
}
