/** `dagsync sync`: a full node catching up from peers, verifying, storing and following. */
import type { Command } from "commander";
import { DEFAULT_VERIFY_POOL_OPTIONS } from "../../crypto/index.js";
import { startFullNode } from "../../node/full-node.js";
import { createLogger } from "../../node/logger.js";
import { reportProgress } from "../../node/progress.js";
import { DEFAULT_SYNC_OPTIONS } from "../../sync/index.js";
import { withConfig } from "../config.js";
import { archiveLocation, collect, duration, hostPort, integer, ipAddress, readTlsOrCa } from "../options.js";

/** Adds the command to `program`; returns it. */
export function addSync(program: Command): Command {
  const sync = program
    .command("sync")
    .description(
      "run a full node: catch up from peers (from genesis or a trusted checkpoint), verify, store, follow",
    )
    .option("--store <dir>", "store directory (created if absent); required")
    .option("--genesis <file>", "genesis.pb of the chain; required")
    .option(
      "--peer <host:port>",
      "a bootstrap peer's sync address (repeat, or comma-separate, for several); optional when the committee carries sync addresses or the store remembers peers",
      collect(hostPort),
      [],
    )
    .option(
      "--archive <dir|url>",
      "an archive of this chain's history (a directory or an http(s):// URL of one, from `dagsync archive export`): one more source, used where no peer can serve or where it is faster, verified like a peer (repeat for several)",
      archiveLocation,
      [],
    )
    .option(
      "--checkpoint <file>",
      "start a new store from this trusted checkpoint (from `dagsync checkpoint export`)",
    )
    .option(
      "--no-discovery",
      "sync from the --peer addresses only: no committee addresses, no remembered peers, no peer exchange",
    )
    .option("--listen <host:port>", "also serve what this node has synced on this address", hostPort)
    .option(
      "--advertise <host:port>",
      "with --listen and --network-key: the sync address other nodes are told (default: the listen address)",
      hostPort,
    )
    .option(
      "--local-address <ip>",
      "source address of outgoing sync connections (a host with several addresses; default: the OS's choice)",
      ipAddress,
    )
    .option("--metrics <host:port>", "serve Prometheus metrics on http://HOST:PORT/metrics", hostPort)
    .option("--exit-when-synced", "exit 0 once the node holds the highest commit its peers advertise")
    .option(
      "--max-stall <duration>",
      "with --exit-when-synced: exit 1 with the reason once no peer could serve the next commit for this long (e.g. 90s, 2m)",
      duration,
      DEFAULT_SYNC_OPTIONS.maxStallMs,
    )
    .option(
      "--commits-per-request <n>",
      "commits asked for per FetchCommits (servers answer at most 100 by default)",
      integer(1, 1000),
      DEFAULT_SYNC_OPTIONS.commitsPerRequest,
    )
    .option(
      "--verify-block-signatures",
      "also check every committed block's signature (default: digest only)",
    )
    .option(
      "--max-inflight-mib <n>",
      "memory budget for fetched, unapplied data, MiB",
      integer(1, 65536),
      128,
    )
    .option("--verifier <backend>", "Ed25519 backend: native or noble", "native")
    .option(
      "--verify-workers <n>",
      "most threads checking signatures off the event loop, started as work needs them (certifier blocks; every block with --verify-block-signatures); 0 checks them inline",
      integer(0, 256),
      DEFAULT_VERIFY_POOL_OPTIONS.workers,
    )
    .option(
      "--network-key <file>",
      "this node's network key (from `dagsync keygen`): joins the live channel (dials the validators' gossip addresses) and, with --listen, advertises this node to peers",
    )
    .option("--gossip-listen <host:port>", "also accept live-channel connections here", hostPort)
    .option("--tls-cert <file>", "TLS certificate chain (PEM) for this node's ports")
    .option("--tls-key <file>", "TLS private key (PEM)")
    .option("--tls-ca <file>", "CA (PEM) to trust when connecting to peers over TLS")
    .action(
      async (opts: {
        store: string;
        genesis: string;
        peer: string[];
        archive: string[];
        checkpoint?: string;
        listen?: string;
        advertise?: string;
        localAddress?: string;
        discovery: boolean;
        metrics?: string;
        exitWhenSynced?: boolean;
        maxStall: number;
        commitsPerRequest: number;
        verifyBlockSignatures?: boolean;
        maxInflightMib: number;
        verifier: string;
        verifyWorkers: number;
        networkKey?: string;
        gossipListen?: string;
        tlsCert?: string;
        tlsKey?: string;
        tlsCa?: string;
      }) => {
        if (opts.verifier !== "native" && opts.verifier !== "noble")
          throw new Error(`--verifier ${opts.verifier}: expected native or noble`);
        const log = createLogger("dagsync");
        const node = await startFullNode({
          store: opts.store,
          genesisFile: opts.genesis,
          checkpointFile: opts.checkpoint,
          peers: opts.peer,
          archives: opts.archive,
          listen: opts.listen,
          advertise: opts.advertise,
          localAddress: opts.localAddress,
          noDiscovery: !opts.discovery,
          metrics: opts.metrics,
          log,
          verifier: opts.verifier,
          verifyWorkers: opts.verifyWorkers,
          networkKeyFile: opts.networkKey,
          gossipListen: opts.gossipListen,
          tls: await readTlsOrCa(opts),
          sync: {
            verifyBlockSignatures: opts.verifyBlockSignatures === true,
            maxInflightBytes: opts.maxInflightMib * 1024 * 1024,
            maxStallMs: opts.maxStall,
            commitsPerRequest: opts.commitsPerRequest,
          },
        });
        const progress = reportProgress(node.engine, log);
        const started = performance.now();
        const cpuAtStart = process.cpuUsage();
        const onSignal = () => void node.engine.stop();
        process.once("SIGINT", onSignal);
        process.once("SIGTERM", onSignal);
        try {
          await node.run(opts.exitWhenSynced === true);
        } finally {
          progress.stop();
          process.off("SIGINT", onSignal);
          process.off("SIGTERM", onSignal);
          const p = node.engine.progress;
          const secs = (performance.now() - started) / 1000;
          const cpu = process.cpuUsage(cpuAtStart);
          log.info(
            {
              highest: p.highestSynced,
              commits: p.commitsApplied,
              blocks: p.blocksApplied,
              seconds: Number(secs.toFixed(2)),
              commitsPerSec: Math.round(p.commitsApplied / secs),
              mbPerSec: Number((p.bytesApplied / secs / 1e6).toFixed(1)),
              maxRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
              // CPU of every thread (JS, LevelDB, GC, compiler) over the same span: a catch-up on a
              // small machine is CPU-bound, so this is the figure to compare runs by.
              cpuSeconds: Number(((cpu.user + cpu.system) / 1e6).toFixed(2)),
            },
            p.phase === "synced" ? "synced: every commit and block verified" : "stopped",
          );
          await node.stop();
        }
      },
    );
  return withConfig(sync, ["store", "genesis"]);
}
