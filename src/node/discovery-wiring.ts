/**
 * What the node adds around discovery (DESIGN §9): the GetKnownPeers network over real peer
 * clients, the PeerBook's counters as Prometheus metrics, and the advertised address.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import { PeerClient, type PeerClientOptions } from "../client/index.js";
import { NODE_INFO_REJECTIONS } from "../core/index.js";
import { type DiscoveryNetwork, PEER_SOURCES, type PeerBook } from "../discovery/index.js";

/** GetKnownPeers over a short-lived client per call (peers asked every few seconds, not held open). */
export function exchangeNetwork(clientOptions: Partial<PeerClientOptions> = {}): DiscoveryNetwork {
  return {
    async getKnownPeers(address, caller) {
      const client = new PeerClient(address, clientOptions);
      try {
        return await client.getKnownPeers(caller);
      } finally {
        client.close();
      }
    },
  };
}

/**
 * The book's counters as metrics (the engine's dagsync_sync_* count the engine's own peers and
 * dials; these count the known set and its exchange): known peers by source, rejected entries by
 * reason, GetKnownPeers dial failures.
 */
export function registerDiscoveryMetrics(registry: Registry, book: () => PeerBook | undefined): void {
  const registers = [registry];
  new Gauge({
    name: "dagsync_discovery_known_peers",
    help: "Peers in the known set, by source (a peer may count under several)",
    labelNames: ["source"],
    registers,
    collect() {
      const b = book();
      if (b === undefined) return;
      const known = b.stats().known;
      for (const s of PEER_SOURCES) this.set({ source: s }, known[s]);
    },
  });
  const rejected = new Counter({
    name: "dagsync_discovery_rejected_entries_total",
    help: "Peer-exchange entries refused, by reason (over_limit: beyond the entries read per answer; full: the known set was full)",
    labelNames: ["reason"],
    registers,
    collect() {
      const b = book();
      if (b === undefined) return;
      const st = b.stats();
      const totals: Record<string, number> = {
        ...st.rejected,
        over_limit: st.ignoredOverLimit,
        full: st.refusedFull,
      };
      for (const [reason, n] of Object.entries(totals)) {
        const seen = seenRejected.get(reason) ?? 0;
        if (n > seen) rejected.inc({ reason }, n - seen);
        seenRejected.set(reason, n);
      }
    },
  });
  const seenRejected = new Map<string, number>();
  for (const r of [...NODE_INFO_REJECTIONS, "over_limit", "full"]) rejected.inc({ reason: r }, 0);
  let seenFailures = 0;
  const failures = new Counter({
    name: "dagsync_discovery_dial_failures_total",
    help: "GetKnownPeers calls that failed (the address backs off)",
    registers,
    collect() {
      const n = book()?.stats().dialFailures ?? 0;
      if (n > seenFailures) failures.inc(n - seenFailures);
      seenFailures = n;
    },
  });
}

/** `--advertise`, or the listen address with the port actually bound. */
export function advertisedAddress(listen: string, port: number, advertise?: string | undefined): string {
  if (advertise !== undefined) return advertise;
  const host = listen.slice(0, listen.lastIndexOf(":"));
  return `${host}:${port}`;
}
