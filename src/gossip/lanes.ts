/**
 * The two lanes of the live channel (DESIGN.md §5): BROADCAST (signed blocks near the tip, high
 * priority) and MEMPOOL (transactions), each with, per peer, a GCRA rate quota and backlogs
 * bounded by frames and by bytes, inbound and outbound.
 *
 * Design: `LaneQueues` is one peer's four queues with their byte counts; `Lanes` holds the
 * per-lane quotas and limits and decides, for every frame, whether it is queued or dropped
 * (counted in dagsync_gossip_frames_dropped_total under its own reason); `InboundScheduler`
 * drains the inbound queues, BROADCAST of every peer before any MEMPOOL, a batch per turn of the
 * event loop. Outbound, `LaneQueues.nextOutbound` hands out BROADCAST first.
 *
 * Threats handled: one lane starving the other (separate quotas and backlogs, BROADCAST first in
 * both directions), a peer filling memory (every backlog is bounded by bytes as well as frames,
 * so worst-case memory is peers × the four byte limits), and a flood hogging the event loop
 * (processing yields after `processBatch` frames).
 *
 * Time: quotas and queue ages read the injected `now()` (default: the monotonic
 * `performance.now()`), never the clock directly, so that tests can drive time.
 */
import { Gcra } from "../core/gcra.js";
import type { Lane, RawFrame } from "./frames.js";
import type { GossipMetrics } from "./metrics.js";
import type { GossipOptions } from "./options.js";

/** The lanes in priority order. */
export const LANES: readonly Lane[] = ["broadcast", "mempool"];

export interface InboundItem {
  readonly payload: Uint8Array;
  /** The whole frame's size (the payload is a view into it, so the frame is what is held). */
  readonly frameBytes: number;
  readonly at: number;
}

/** One peer's queues, per lane, with the bytes each holds. */
export class LaneQueues {
  readonly inbound: Record<Lane, InboundItem[]> = { broadcast: [], mempool: [] };
  /** Frame bytes held in `inbound`, per lane (the `inboundBacklogBytes` limit). */
  readonly inboundBytes: Record<Lane, number> = { broadcast: 0, mempool: 0 };
  readonly outbound: Record<Lane, Uint8Array[]> = { broadcast: [], mempool: [] };
  /** Frame bytes held in `outbound`, per lane (the `outboundBacklogBytes` limit). */
  readonly outboundBytes: Record<Lane, number> = { broadcast: 0, mempool: 0 };

  /** The next frame to send, BROADCAST first; it leaves the backlog (and its bytes) here. */
  nextOutbound(): Uint8Array | undefined {
    const lane: Lane = this.outbound.broadcast.length > 0 ? "broadcast" : "mempool";
    const frame = this.outbound[lane].shift();
    if (frame !== undefined) this.outboundBytes[lane] -= frame.byteLength;
    return frame;
  }

  /** The oldest inbound item of `lane`; it leaves the backlog (and its bytes) here. */
  nextInbound(lane: Lane): InboundItem | undefined {
    const item = this.inbound[lane].shift();
    if (item !== undefined) this.inboundBytes[lane] -= item.frameBytes;
    return item;
  }

  get hasInbound(): boolean {
    return this.inbound.broadcast.length > 0 || this.inbound.mempool.length > 0;
  }
}

/** Per-lane quotas and backlog limits: what is queued and what is dropped. */
export class Lanes {
  private readonly quotas: Record<Lane, Gcra>;

  constructor(
    private readonly options: GossipOptions,
    private readonly metrics: GossipMetrics | undefined,
    readonly now: () => number = () => performance.now(),
  ) {
    this.quotas = {
      broadcast: new Gcra(options.broadcast.quota, 10_000),
      mempool: new Gcra(options.mempool.quota, 10_000),
    };
  }

  /**
   * An inbound lane frame of the peer `peerKey` (`frameBytes` long): queued on `queues` unless
   * over the peer's quota or a backlog. True when queued.
   */
  admitInbound(
    peerKey: string,
    queues: LaneQueues,
    lane: Lane,
    frame: RawFrame,
    frameBytes: number,
  ): boolean {
    const m = this.metrics;
    m?.received.inc({ lane });
    const now = this.now();
    if (!this.quotas[lane].take(peerKey, now).ok) {
      m?.dropped.inc({ lane, reason: "quota" });
      return false;
    }
    const queue = queues.inbound[lane];
    const limits = this.options[lane];
    if (queue.length >= limits.inboundBacklog) {
      m?.dropped.inc({ lane, reason: "backlog" });
      return false;
    }
    if (queues.inboundBytes[lane] + frameBytes > limits.inboundBacklogBytes) {
      m?.dropped.inc({ lane, reason: "backlog_bytes" });
      return false;
    }
    queue.push({ payload: frame.payload, frameBytes, at: now });
    queues.inboundBytes[lane] += frameBytes;
    return true;
  }

  /** An outbound frame for one peer: queued on `queues` unless over a backlog. True when queued. */
  enqueueOutbound(queues: LaneQueues, lane: Lane, frame: Uint8Array): boolean {
    const queue = queues.outbound[lane];
    const limits = this.options[lane];
    if (queue.length >= limits.outboundBacklog) {
      this.metrics?.dropped.inc({ lane, reason: "outbound_backlog" });
      return false;
    }
    if (queues.outboundBytes[lane] + frame.byteLength > limits.outboundBacklogBytes) {
      this.metrics?.dropped.inc({ lane, reason: "outbound_backlog_bytes" });
      return false;
    }
    queue.push(frame);
    queues.outboundBytes[lane] += frame.byteLength;
    return true;
  }

  /** Records how long an inbound item waited, by the lanes' clock. */
  observeWait(lane: Lane, item: InboundItem): void {
    this.metrics?.processingSeconds.observe({ lane }, (this.now() - item.at) / 1000);
  }
}

/** What the scheduler drains: a peer's queues, while it is open. */
export interface InboundSource {
  readonly queues: LaneQueues;
  readonly closed: boolean;
}

/**
 * Drains inbound backlogs, BROADCAST of every peer before any MEMPOOL, at most `batch` items per
 * turn of the event loop; schedules another turn while anything is left.
 */
export class InboundScheduler<S extends InboundSource> {
  private scheduled = false;

  constructor(
    private readonly sources: () => Iterable<S>,
    private readonly batch: number,
    private readonly handle: (source: S, lane: Lane, item: InboundItem) => void,
    private readonly defer: (run: () => void) => void = setImmediate,
  ) {}

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.defer(() => this.turn());
  }

  private turn(): void {
    let budget = this.batch;
    for (const lane of LANES) {
      for (const source of this.sources()) {
        while (budget > 0 && !source.closed) {
          const item = source.queues.nextInbound(lane);
          if (item === undefined) break;
          budget--;
          this.handle(source, lane, item);
        }
        if (budget === 0) break;
      }
    }
    this.scheduled = false;
    if ([...this.sources()].some((s) => s.queues.hasInbound)) this.schedule();
  }
}
