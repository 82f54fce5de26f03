/** Every limit and timeout of the live channel, with its default and unit (DESIGN.md §5). */
import type { RateQuota } from "../core/gcra.js";

export interface LaneOptions {
  /** Inbound GCRA quota per peer. */
  readonly quota: RateQuota;
  /** Inbound frames per peer waiting to be processed; beyond it frames are dropped. */
  readonly inboundBacklog: number;
  /** Outbound frames per peer waiting to be sent; beyond it the newest are dropped. */
  readonly outboundBacklog: number;
}

export interface GossipOptions {
  /** The whole handshake must finish within this, ms. Default 5,000. */
  readonly handshakeTimeoutMs: number;
  /** Oldest acceptable Hello timestamp, ms. Default 10,000. */
  readonly maxHelloAgeMs: number;
  /** Furthest-future acceptable Hello timestamp, ms. Default 5,000. */
  readonly maxHelloSkewMs: number;
  /** Largest frame accepted, bytes; a bigger one blocks the sender. Default 4 MiB. */
  readonly maxFrameBytes: number;
  /** BROADCAST lane (signed blocks). Default 200/s, burst 400, backlogs 512. */
  readonly broadcast: LaneOptions;
  /** MEMPOOL lane (transactions). Default 1,000/s, burst 2,000, backlogs 2,048. */
  readonly mempool: LaneOptions;
  /** Digests remembered for dedup. Default 200,000. */
  readonly dedupCapacity: number;
  /** How long a digest is remembered, ms. Default 120,000. */
  readonly dedupMaxAgeMs: number;
  /** How long a misbehaving peer is disconnected and refused, ms. Default 60,000. */
  readonly blockDurationMs: number;
  /** First reconnect delay, ms; doubles per failure, with jitter. Default 500. */
  readonly reconnectBaseMs: number;
  /** Cap of the reconnect delay, ms. Default 15,000. */
  readonly reconnectMaxMs: number;
  /** Inbound frames processed per turn of the event loop before yielding. Default 64. */
  readonly processBatch: number;
  /** How often open sessions are checked against the allowed set (it follows the committee), ms. Default 1,000. */
  readonly admissionCheckIntervalMs: number;
}

export const DEFAULT_GOSSIP_OPTIONS: GossipOptions = {
  handshakeTimeoutMs: 5_000,
  maxHelloAgeMs: 10_000,
  maxHelloSkewMs: 5_000,
  maxFrameBytes: 4 * 1024 * 1024,
  broadcast: { quota: { perSecond: 200, burst: 400 }, inboundBacklog: 512, outboundBacklog: 512 },
  mempool: { quota: { perSecond: 1000, burst: 2000 }, inboundBacklog: 2048, outboundBacklog: 2048 },
  dedupCapacity: 200_000,
  dedupMaxAgeMs: 120_000,
  blockDurationMs: 60_000,
  reconnectBaseMs: 500,
  reconnectMaxMs: 15_000,
  processBatch: 64,
  admissionCheckIntervalMs: 1_000,
};

export type GossipOptionsInput = Partial<Omit<GossipOptions, "broadcast" | "mempool">> & {
  readonly broadcast?: Partial<LaneOptions>;
  readonly mempool?: Partial<LaneOptions>;
};

export function resolveGossipOptions(input: GossipOptionsInput = {}): GossipOptions {
  return {
    ...DEFAULT_GOSSIP_OPTIONS,
    ...input,
    broadcast: { ...DEFAULT_GOSSIP_OPTIONS.broadcast, ...input.broadcast },
    mempool: { ...DEFAULT_GOSSIP_OPTIONS.mempool, ...input.mempool },
  };
}
