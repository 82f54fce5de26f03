/** Sync engine metrics on a prom-client registry the node owns. */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { STALL_REASONS } from "./stall.js";

export class SyncMetrics {
  readonly highestSynced: Gauge;
  readonly highestVerified: Gauge;
  readonly target: Gauge;
  readonly commitsApplied: Counter;
  readonly blocksApplied: Counter;
  readonly bytesFetched: Counter<"method">;
  readonly fetchSeconds: Histogram<"method">;
  readonly peerErrors: Counter<"peer" | "kind">;
  readonly bans: Counter<"peer" | "reason">;
  readonly inflightBytes: Gauge;
  readonly bannedPeers: Gauge;
  readonly offChainPeers: Gauge;
  readonly stalled: Gauge<"reason">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.highestSynced = new Gauge({
      name: "dagsync_highest_synced_commit",
      help: "Highest commit stored with its blocks",
      registers,
    });
    this.highestVerified = new Gauge({
      name: "dagsync_highest_verified_commit",
      help: "Highest commit verified (certified and linked)",
      registers,
    });
    this.target = new Gauge({
      name: "dagsync_sync_target_commit",
      help: "Highest commit usable peers advertise",
      registers,
    });
    this.commitsApplied = new Counter({
      name: "dagsync_commits_applied_total",
      help: "Commits applied to the store",
      registers,
    });
    this.blocksApplied = new Counter({
      name: "dagsync_blocks_applied_total",
      help: "Committed blocks applied to the store",
      registers,
    });
    this.bytesFetched = new Counter({
      name: "dagsync_fetched_bytes_total",
      help: "Bytes fetched from peers by method",
      labelNames: ["method"],
      registers,
    });
    this.fetchSeconds = new Histogram({
      name: "dagsync_fetch_seconds",
      help: "Peer fetch latency by method",
      labelNames: ["method"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.peerErrors = new Counter({
      name: "dagsync_peer_errors_total",
      help: "Peer call failures by peer and kind",
      labelNames: ["peer", "kind"],
      registers,
    });
    this.bans = new Counter({
      name: "dagsync_peer_bans_total",
      help: "Peers banned for invalid data, by peer and verification code",
      labelNames: ["peer", "reason"],
      registers,
    });
    this.inflightBytes = new Gauge({
      name: "dagsync_inflight_bytes",
      help: "Bytes fetched but not yet applied",
      registers,
    });
    this.bannedPeers = new Gauge({ name: "dagsync_banned_peers", help: "Peers currently banned", registers });
    this.offChainPeers = new Gauge({
      name: "dagsync_off_chain_peers",
      help: "Peers serving another genesis (never used)",
      registers,
    });
    this.stalled = new Gauge({
      name: "dagsync_sync_stalled",
      help: "1 while no source can serve the next commit, labelled with why (0 for every other reason)",
      labelNames: ["reason"],
      registers,
    });
    for (const reason of STALL_REASONS) this.stalled.set({ reason }, 0);
  }
}
