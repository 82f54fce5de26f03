/** Live-channel metrics on a prom-client registry the node owns. */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export class GossipMetrics {
  readonly received: Counter<"lane">;
  readonly delivered: Counter<"lane">;
  readonly dropped: Counter<"lane" | "reason">;
  readonly relayed: Counter<"lane">;
  readonly duplicates: Counter<"lane">;
  readonly handshakes: Counter<"role" | "result">;
  readonly blocks: Counter<"reason">;
  readonly peers: Gauge;
  readonly processingSeconds: Histogram<"lane">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.received = new Counter({
      name: "dagsync_gossip_frames_received_total",
      help: "Lane frames received",
      labelNames: ["lane"],
      registers,
    });
    this.delivered = new Counter({
      name: "dagsync_gossip_items_delivered_total",
      help: "New items delivered locally",
      labelNames: ["lane"],
      registers,
    });
    this.dropped = new Counter({
      name: "dagsync_gossip_frames_dropped_total",
      help: "Frames dropped by lane and reason (quota; backlog, backlog_bytes; outbound_backlog, outbound_backlog_bytes; stale_epoch, unknown_epoch)",
      labelNames: ["lane", "reason"],
      registers,
    });
    this.relayed = new Counter({
      name: "dagsync_gossip_frames_relayed_total",
      help: "Frames relayed to other peers",
      labelNames: ["lane"],
      registers,
    });
    this.duplicates = new Counter({
      name: "dagsync_gossip_duplicates_total",
      help: "Items already seen",
      labelNames: ["lane"],
      registers,
    });
    this.handshakes = new Counter({
      name: "dagsync_gossip_handshakes_total",
      help: "Handshakes by role and result",
      labelNames: ["role", "result"],
      registers,
    });
    this.blocks = new Counter({
      name: "dagsync_gossip_peer_blocks_total",
      help: "Peers blocked, by reason",
      labelNames: ["reason"],
      registers,
    });
    this.peers = new Gauge({
      name: "dagsync_gossip_peers",
      help: "Authenticated gossip sessions",
      registers,
    });
    this.processingSeconds = new Histogram({
      name: "dagsync_gossip_queue_seconds",
      help: "Time an inbound frame waits in its lane backlog before processing",
      labelNames: ["lane"],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers,
    });
  }
}
