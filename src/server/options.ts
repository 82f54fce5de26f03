/**
 * Every limit and timeout of the sync server, with its default and unit, in one place
 * (DESIGN.md §3 and §8).
 */

import type { RateQuota } from "../core/gcra.js";

export type { RateQuota };

export interface ServerOptions {
  /** Most commits in one FetchCommits response. Default 100. */
  readonly maxCommitsPerFetch: number;
  /** Most refs in one FetchBlocks request; more is INVALID_ARGUMENT. Default 1000. */
  readonly maxBlocksPerFetch: number;
  /** Response size bound for FetchCommits and FetchBlocks, bytes. Default 4 MiB. */
  readonly maxFetchResponseBytes: number;
  /** Largest request message accepted, bytes (1000 refs need ≈ 45 KB). Default 1 MiB. */
  readonly maxReceiveMessageBytes: number;
  /** Largest message sent, bytes: a response is bounded by maxFetchResponseBytes plus one block. Default 16 MiB. */
  readonly maxSendMessageBytes: number;
  /** Per-peer (remote IP) GCRA quotas by RPC. */
  readonly rateLimits: {
    readonly getCommitAvailability: RateQuota;
    readonly fetchCommits: RateQuota;
    readonly fetchBlocks: RateQuota;
    readonly pushCommit: RateQuota;
    readonly subscribeCommits: RateQuota;
    /** Peer exchange (DESIGN §9): a node asks one peer every 5 s and each new peer once. */
    readonly getKnownPeers: RateQuota;
    readonly admin: RateQuota;
  };
  /** Most peer entries in one GetKnownPeers answer (DESIGN §9; receivers ignore the rest). Default 200. */
  readonly maxKnownPeersPerAnswer: number;
  /** Requests in flight per peer (remote IP) before RESOURCE_EXHAUSTED; streams count apart. Default 32. */
  readonly maxInflightPerPeer: number;
  /**
   * Bulk calls (FetchCommits, FetchBlocks, SubscribeCommits replay steps) served at once,
   * server-wide; more get RESOURCE_EXHAUSTED with a retry hint at once. Default 32.
   */
  readonly maxBulkCalls: number;
  /**
   * Response bytes of bulk calls being assembled or sent, server-wide: with the idle footprint,
   * what bounds a crowd's cost in memory. A call reserves maxFetchResponseBytes until its
   * response is assembled. Default 64 MiB.
   */
  readonly maxServerInflightBytes: number;
  /**
   * A bulk call is admitted on its headers; its request must then arrive within this, or the call
   * ends with DEADLINE_EXCEEDED and its ticket is given back (a caller sending headers and never a
   * body would otherwise hold a ticket forever), ms. Default 5,000.
   */
  readonly bulkRequestTimeoutMs: number;
  /**
   * The most a bulk call holds its ticket, from admission until its response has been written,
   * ms: a caller that never reads its response is cut off after this. Default 60,000 (a full
   * 4 MiB answer at 70 KB/s).
   */
  readonly bulkResponseTimeoutMs: number;
  /** How long an address refused bulk work still counts for fair shares, ms. Default 1,000. */
  readonly bulkContentionWindowMs: number;
  /** Bounds of the retry-after-ms hint given to refused bulk calls, ms. Default 10 and 2,000. */
  readonly bulkRetryAfterMinMs: number;
  readonly bulkRetryAfterMaxMs: number;
  /** Open SubscribeCommits streams per peer (apart from maxInflightPerPeer). Default 8. */
  readonly maxStreamsPerPeer: number;
  /** Open SubscribeCommits streams, server-wide. Default 256. */
  readonly maxStreams: number;
  /** HTTP/2 sessions (connections) open at once, server-wide; more are closed as they open. Default 4,096. */
  readonly maxSessions: number;
  /**
   * HTTP/2 sessions open at once from one address. Default 128: several nodes may share an
   * address (NAT), and each opens a connection per peer client.
   */
  readonly maxSessionsPerPeer: number;
  /** A session without calls for this long is closed, ms. Default 300,000 (5 minutes). */
  readonly idleSessionTimeoutMs: number;
  /** Peers tracked by the rate limiter before idle ones are forgotten. Default 10,000. */
  readonly maxTrackedPeers: number;
  /** HTTP/2 keepalive ping interval, ms. Default 30,000. */
  readonly keepaliveTimeMs: number;
  /** Keepalive ping timeout, ms. Default 10,000. */
  readonly keepaliveTimeoutMs: number;
  /** Concurrent HTTP/2 streams per connection. Default 256. */
  readonly maxConcurrentStreams: number;
  /** Commits a live subscriber may fall behind the tip before RESOURCE_EXHAUSTED. Default 1024. */
  readonly subscriberBufferCommits: number;
  /** Commits read from the store per step of a subscription replay. Default 32. */
  readonly subscriberReadAhead: number;
  /** Grace period for in-flight calls on shutdown, ms. Default 5,000. */
  readonly drainTimeoutMs: number;
}

export const DEFAULT_SERVER_OPTIONS: ServerOptions = {
  maxCommitsPerFetch: 100,
  maxBlocksPerFetch: 1000,
  maxFetchResponseBytes: 4 * 1024 * 1024,
  maxReceiveMessageBytes: 1024 * 1024,
  maxSendMessageBytes: 16 * 1024 * 1024,
  rateLimits: {
    getCommitAvailability: { perSecond: 50, burst: 100 },
    fetchCommits: { perSecond: 200, burst: 400 },
    fetchBlocks: { perSecond: 500, burst: 1000 },
    pushCommit: { perSecond: 20, burst: 40 },
    subscribeCommits: { perSecond: 2, burst: 10 },
    getKnownPeers: { perSecond: 1, burst: 10 },
    admin: { perSecond: 20, burst: 40 },
  },
  maxKnownPeersPerAnswer: 200,
  maxInflightPerPeer: 32,
  maxBulkCalls: 32,
  maxServerInflightBytes: 64 * 1024 * 1024,
  bulkRequestTimeoutMs: 5_000,
  bulkResponseTimeoutMs: 60_000,
  bulkContentionWindowMs: 1_000,
  bulkRetryAfterMinMs: 10,
  bulkRetryAfterMaxMs: 2_000,
  maxStreamsPerPeer: 8,
  maxStreams: 256,
  maxSessions: 4096,
  maxSessionsPerPeer: 128,
  idleSessionTimeoutMs: 300_000,
  maxTrackedPeers: 10_000,
  keepaliveTimeMs: 30_000,
  keepaliveTimeoutMs: 10_000,
  maxConcurrentStreams: 256,
  subscriberBufferCommits: 1024,
  subscriberReadAhead: 32,
  drainTimeoutMs: 5_000,
};

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };
export type ServerOptionsInput = DeepPartial<ServerOptions>;

export function resolveServerOptions(input: ServerOptionsInput = {}): ServerOptions {
  return {
    ...DEFAULT_SERVER_OPTIONS,
    ...(input as Partial<ServerOptions>),
    rateLimits: {
      ...DEFAULT_SERVER_OPTIONS.rateLimits,
      ...(input.rateLimits as Partial<ServerOptions["rateLimits"]> | undefined),
    },
  };
}
