/**
 * `dagsync serve`: a validator's store over StateSync and Admin; with `--live`, on a devnet, the
 * devnet's live producer is plugged into serve as its producer hook.
 */
import { type Command, InvalidArgumentError } from "commander";
import { DEFAULT_ARCHIVE_WRITER_OPTIONS } from "../../archive/options.js";
import { fromHex } from "../../core/bytes.js";
import { devnetProducer } from "../../devnet/live.js";
import { createLogger } from "../../node/logger.js";
import { startServe, untilSignal } from "../../node/serve.js";
import { DEFAULT_SERVER_OPTIONS } from "../../server/options.js";
import { withConfig } from "../config.js";
import { collect, duration, hexKey, hostPort, integer, ipAddress, readTls } from "../options.js";

/** --archive-interval: a duration of at least 100 ms. */
function archiveInterval(value: string): number {
  const ms = duration(value);
  if (ms < 100) throw new InvalidArgumentError("expected a duration of at least 100ms, such as 30s or 5m.");
  return ms;
}

/** Adds the command to `program`; returns it. */
export function addServe(program: Command): Command {
  const serve = program
    .command("serve")
    .description("serve a validator's store over StateSync and Admin (with reflection and health)")
    .option("--store <dir>", "store directory (e.g. a devnet's validator-0/store); required")
    .option("--listen <host:port>", "sync port address", hostPort, "0.0.0.0:9100")
    .option("--metrics <host:port>", "serve Prometheus metrics on http://HOST:PORT/metrics", hostPort)
    .option(
      "--gossip-listen <host:port>",
      "serve the authenticated live channel on this address (default port 9101)",
      hostPort,
    )
    .option(
      "--network-key <file>",
      "this validator's network key file: its live-channel identity (for --gossip-listen), and the key its advertised peer info is signed with",
    )
    .option(
      "--advertise <host:port>",
      "the sync address advertised to peers (default: this validator's committee sync address, else --listen)",
      hostPort,
    )
    .option(
      "--allow-key <hex>",
      "admit this network key on the gossip port beyond the committee (repeat)",
      collect(hexKey),
      [],
    )
    .option(
      "--live <devnet-dir>",
      "devnet only: keep producing rounds in real time, continuing the generated chain",
    )
    .option("--index <n>", "with --live: this validator's index", integer(0, 1023))
    .option("--round-ms <n>", "with --live: round interval, ms", integer(10, 60_000), 500)
    .option("--txs-per-round <n>", "with --live: transactions gossiped per round", integer(0, 100_000), 4)
    .option(
      "--follower <host:port>",
      "with --live: PushCommit new commits to this sync address (repeat)",
      collect(hostPort),
      [],
    )
    .option(
      "--local-address <ip>",
      "with --live: source address of the PushCommit connections to followers (a host with several addresses; default: the OS's choice)",
      ipAddress,
    )
    .option("--tls-cert <file>", "TLS certificate chain (PEM) for both ports")
    .option("--tls-key <file>", "TLS private key (PEM)")
    .option("--tls-ca <file>", "CA (PEM) to trust when dialing peers over TLS")
    .option(
      "--max-bulk-calls <n>",
      "bulk calls (FetchCommits, FetchBlocks, replay steps) served at once, server-wide",
      integer(1, 100_000),
      DEFAULT_SERVER_OPTIONS.maxBulkCalls,
    )
    .option(
      "--max-server-inflight-mib <n>",
      "response bytes of bulk calls in flight, server-wide, MiB",
      integer(1, 65536),
      DEFAULT_SERVER_OPTIONS.maxServerInflightBytes / (1024 * 1024),
    )
    .option(
      "--archive-out <dir>",
      "keep an archive (manifest.json and chunks/, for `dagsync sync --archive`) of this store current in DIR while serving",
    )
    .option(
      "--archive-interval <duration>",
      "with --archive-out: how often to export what is new (e.g. 30s, 5m)",
      archiveInterval,
      DEFAULT_ARCHIVE_WRITER_OPTIONS.exportIntervalMs,
    )
    .option(
      "--archive-chunk-commits <n>",
      "with --archive-out: most commits in one chunk",
      integer(1, 1_000_000),
      DEFAULT_ARCHIVE_WRITER_OPTIONS.chunkCommits,
    )
    .action(
      async (opts: {
        store: string;
        listen: string;
        metrics?: string;
        gossipListen?: string;
        networkKey?: string;
        advertise?: string;
        allowKey: string[];
        live?: string;
        index?: number;
        roundMs: number;
        txsPerRound: number;
        follower: string[];
        localAddress?: string;
        tlsCert?: string;
        tlsKey?: string;
        tlsCa?: string;
        maxBulkCalls: number;
        maxServerInflightMib: number;
        archiveOut?: string;
        archiveInterval: number;
        archiveChunkCommits: number;
      }) => {
        const log = createLogger("dagsync");
        if (opts.live !== undefined && opts.index === undefined)
          throw new Error("--live needs --index N (this validator's index)");
        const running = await startServe({
          store: opts.store,
          listen: opts.listen,
          metrics: opts.metrics,
          log,
          gossipListen: opts.gossipListen,
          networkKeyFile: opts.networkKey,
          advertise: opts.advertise,
          allowKeys: opts.allowKey.map((k) => fromHex(k)),
          tls: await readTls(opts),
          serverOptions: {
            maxBulkCalls: opts.maxBulkCalls,
            maxServerInflightBytes: opts.maxServerInflightMib * 1024 * 1024,
          },
          archive:
            opts.archiveOut === undefined
              ? undefined
              : {
                  out: opts.archiveOut,
                  options: { exportIntervalMs: opts.archiveInterval, chunkCommits: opts.archiveChunkCommits },
                },
          producer:
            opts.live === undefined
              ? undefined
              : devnetProducer({
                  devnetDir: opts.live,
                  index: opts.index!,
                  roundMs: opts.roundMs,
                  txsPerRound: opts.txsPerRound,
                  followers: opts.follower,
                  ...(opts.localAddress === undefined ? {} : { localAddress: opts.localAddress }),
                }),
        });
        await untilSignal(() => running.stop());
      },
    );
  return withConfig(serve, ["store"]);
}
