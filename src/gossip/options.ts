/** Every limit and timeout of the live channel, with its default and unit (DESIGN.md §5). */
import type { RateQuota } from "../core/gcra.js";

/**
 * The limits of one lane, per peer. Each backlog is bounded twice, by frames and by bytes: the
 * count bounds bookkeeping, the bytes bound memory (a count alone lets 512 frames of 4 MiB hold
 * 2 GiB per peer). Over either, the frame is dropped and counted in
 * dagsync_gossip_frames_dropped_total{lane,reason}, under its own reason. A byte limit must be
 * at least `maxFrameBytes`, so that any frame the channel accepts fits in an empty backlog.
 * Worst case memory of the lanes: peers × (sum of the four byte limits).
 */
export interface LaneOptions {
  /** Inbound GCRA quota per peer. Over it: reason "quota". */
  readonly quota: RateQuota;
  /** Inbound frames per peer waiting to be processed; beyond it frames are dropped (reason "backlog"). */
  readonly inboundBacklog: number;
  /** Inbound bytes (whole frames) per peer waiting to be processed, bytes; beyond it frames are dropped (reason "backlog_bytes"). */
  readonly inboundBacklogBytes: number;
  /** Outbound frames per peer waiting to be sent; beyond it the newest are dropped (reason "outbound_backlog"). */
  readonly outboundBacklog: number;
  /** Outbound bytes (whole frames) per peer waiting to be sent, bytes; beyond it the newest are dropped (reason "outbound_backlog_bytes"). */
  readonly outboundBacklogBytes: number;
}

export interface GossipOptions {
  /** The whole handshake must finish within this, ms. Default 5,000. */
  readonly handshakeTimeoutMs: number;
  /**
   * Handshakes in progress at once on the listener, in total. At the cap the oldest is ended
   * (RESOURCE_EXHAUSTED) to admit the newest (pending-handshakes.ts). Default 256.
   */
  readonly maxPendingHandshakes: number;
  /** Handshakes in progress at once from one source address; beyond it new streams are refused. Default 8. */
  readonly maxPendingHandshakesPerAddress: number;
  /** Oldest acceptable Hello timestamp, ms. Default 10,000. */
  readonly maxHelloAgeMs: number;
  /** Furthest-future acceptable Hello timestamp, ms. Default 5,000. */
  readonly maxHelloSkewMs: number;
  /**
   * Largest frame accepted, bytes; a bigger one blocks the sender. Default 4 MiB. grpc-js on the
   * gossip port cuts off messages over 2 × this (`transportReceiveLimit`) before GossipNode reads
   * them; those block the sender too (see transport-limit.ts).
   */
  readonly maxFrameBytes: number;
  /**
   * BROADCAST lane (signed blocks). Default 200/s, burst 400; backlogs 512 frames and 16 MiB
   * inbound, 512 frames and 16 MiB outbound.
   */
  readonly broadcast: LaneOptions;
  /**
   * MEMPOOL lane (transactions). Default 1,000/s, burst 2,000; backlogs 2,048 frames and 8 MiB
   * inbound, 2,048 frames and 8 MiB outbound.
   */
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

const MiB = 1024 * 1024;

export const DEFAULT_GOSSIP_OPTIONS: GossipOptions = {
  handshakeTimeoutMs: 5_000,
  maxPendingHandshakes: 256,
  maxPendingHandshakesPerAddress: 8,
  maxHelloAgeMs: 10_000,
  maxHelloSkewMs: 5_000,
  maxFrameBytes: 4 * MiB,
  broadcast: {
    quota: { perSecond: 200, burst: 400 },
    inboundBacklog: 512,
    inboundBacklogBytes: 16 * MiB,
    outboundBacklog: 512,
    outboundBacklogBytes: 16 * MiB,
  },
  mempool: {
    quota: { perSecond: 1000, burst: 2000 },
    inboundBacklog: 2048,
    inboundBacklogBytes: 8 * MiB,
    outboundBacklog: 2048,
    outboundBacklogBytes: 8 * MiB,
  },
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

/** The options with defaults filled in; throws RangeError when a backlog cannot hold one largest frame. */
export function resolveGossipOptions(input: GossipOptionsInput = {}): GossipOptions {
  const o: GossipOptions = {
    ...DEFAULT_GOSSIP_OPTIONS,
    ...input,
    broadcast: { ...DEFAULT_GOSSIP_OPTIONS.broadcast, ...input.broadcast },
    mempool: { ...DEFAULT_GOSSIP_OPTIONS.mempool, ...input.mempool },
  };
  for (const lane of ["broadcast", "mempool"] as const)
    for (const name of ["inboundBacklogBytes", "outboundBacklogBytes"] as const)
      if (!(o[lane][name] >= o.maxFrameBytes))
        throw new RangeError(
          `gossip ${lane}.${name} (${o[lane][name]} bytes) must be at least maxFrameBytes (${o.maxFrameBytes} bytes)`,
        );
  for (const name of ["maxPendingHandshakes", "maxPendingHandshakesPerAddress"] as const)
    if (!(Number.isInteger(o[name]) && o[name] >= 1))
      throw new RangeError(`gossip ${name} (${o[name]}) must be an integer of at least 1`);
  return o;
}

/**
 * grpc-js's receive limit on Connect streams, bytes: 2 × maxFrameBytes. The headroom lets frames
 * a little over maxFrameBytes reach GossipNode, which blocks their sender with the frame's size
 * in the reason; bigger ones are cut off by grpc-js and block the sender through transport-limit.ts.
 */
export function transportReceiveLimit(o: GossipOptions): number {
  return 2 * o.maxFrameBytes;
}
