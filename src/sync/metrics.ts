/** Sync engine metrics on a prom-client registry the node owns. */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { PEER_SOURCES } from "./peers.js";
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
  readonly knownPeers: Gauge<"source">;
  readonly workingPeers: Gauge<"source">;
  readonly dialFailures: Counter<"reason">;
  readonly workingSetExits: Counter<"reason">;
  readonly needPeers: Counter<"reason">;

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
    this.knownPeers = new Gauge({
      name: "dagsync_sync_known_peers",
      help: "Peers the sync engine knows, working or not, by source (committee, bootstrap, exchange)",
      labelNames: ["source"],
      registers,
    });
    this.workingPeers = new Gauge({
      name: "dagsync_sync_working_peers",
      help: "Peers in the sync working set (asked heights and fetched from), by source",
      labelNames: ["source"],
      registers,
    });
    for (const source of PEER_SOURCES) {
      this.knownPeers.set({ source }, 0);
      this.workingPeers.set({ source }, 0);
    }
    this.dialFailures = new Counter({
      name: "dagsync_sync_dial_failures_total",
      help: "Failed peer calls that count towards maxDialFailures (refused, unreachable, deadline, error status), by error kind",
      labelNames: ["reason"],
      registers,
    });
    this.workingSetExits = new Counter({
      name: "dagsync_sync_working_set_exits_total",
      help: "Peers benched out of the working set for another known peer, by reason (dial_failures, cannot_serve)",
      labelNames: ["reason"],
      registers,
    });
    this.needPeers = new Counter({
      name: "dagsync_sync_need_peers_total",
      help: "Times no working peer could serve the next commit and the engine asked for more peers, by stall reason",
      labelNames: ["reason"],
      registers,
    });
  }
}
