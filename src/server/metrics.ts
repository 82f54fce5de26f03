/** Server metrics on a prom-client registry the node owns (DESIGN.md §7). */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export class ServerMetrics {
  readonly calls: Counter<"method" | "code">;
  readonly bytesServed: Counter<"method">;
  readonly latency: Histogram<"method">;
  readonly rateLimited: Counter<"method" | "reason">;
  readonly subscribers: Gauge;
  readonly subscriberLag: Histogram;

  constructor(registry: Registry) {
    const registers = [registry];
    this.calls = new Counter({
      name: "dagsync_server_calls_total",
      help: "Sync RPC calls by method and gRPC status code",
      labelNames: ["method", "code"],
      registers,
    });
    this.bytesServed = new Counter({
      name: "dagsync_server_bytes_served_total",
      help: "Response bytes served by method",
      labelNames: ["method"],
      registers,
    });
    this.latency = new Histogram({
      name: "dagsync_server_call_seconds",
      help: "Sync RPC latency by method",
      labelNames: ["method"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.rateLimited = new Counter({
      name: "dagsync_server_rate_limited_total",
      help: "Calls refused with RESOURCE_EXHAUSTED by per-peer limits",
      labelNames: ["method", "reason"],
      registers,
    });
    this.subscribers = new Gauge({
      name: "dagsync_server_subscribers",
      help: "Open SubscribeCommits streams",
      registers,
    });
    this.subscriberLag = new Histogram({
      name: "dagsync_server_subscriber_lag_commits",
      help: "Commits a live subscriber is behind the tip when it is sent one",
      buckets: [0, 1, 2, 4, 8, 16, 64, 256, 1024],
      registers,
    });
  }
}
