/**
 * The `dagsync` command. Each subcommand parses and checks its flags, then hands over to a module;
 * every failure a user can cause ends as one line naming the flag, file or peer, and exit code 1.
 */
import { readFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { toJsonString } from "@bufbuild/protobuf";
import { logVerbosity, setLogVerbosity } from "@grpc/grpc-js";
import { Command, CommanderError } from "commander";
import { PeerClient } from "../client/index.js";
import { fromHex, toHex } from "../core/bytes.js";
import { parseGenesis } from "../core/genesis.js";
import { writeKeyFile } from "../crypto/key-file.js";
import { Ed25519Signer } from "../crypto/keys.js";
import { DEFAULT_DEVNET_OPTIONS } from "../devnet/chain.js";
import { runDemo } from "../devnet/demo.js";
import { writeDevnet } from "../devnet/write.js";
import { GetStatusResponseSchema } from "../gen/dagsync/v1/admin_pb.js";
import { exportCheckpoint, readCheckpoint } from "../node/checkpoint.js";
import { readGenesisFile, startFullNode } from "../node/full-node.js";
import { createLogger } from "../node/logger.js";
import { reportProgress } from "../node/progress.js";
import { startServe, untilSignal } from "../node/serve.js";
import { DEFAULT_SERVER_OPTIONS } from "../server/options.js";
import { Store } from "../store/index.js";
import { DEFAULT_SYNC_OPTIONS } from "../sync/index.js";
import { withConfig } from "./config.js";
import { collect, duration, hexKey, hostPort, integer, readTls, readTlsOrCa } from "./options.js";

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

const program = new Command()
  .name("dagsync")
  .description(
    "State sync and checkpoints for DAG-BFT chains: serve, fetch, verify and stream committed sub-DAGs.",
  )
  .version(packageVersion(), "-V, --version", "print the dagsync version")
  .showHelpAfterError("(run with --help for usage)")
  .exitOverride();

program
  .command("keygen")
  .description("write a new Ed25519 key file (mode 0600) and print its public key")
  .requiredOption("--out <file>", "key file to write")
  .action(async (opts: { out: string }) => {
    const signer = Ed25519Signer.generate();
    await writeKeyFile(opts.out, signer);
    console.log(`wrote ${opts.out}\npublic key ${toHex(signer.publicKey)}`);
  });

program
  .command("devnet")
  .description(
    "generate a local committee, genesis and a synthetic multi-epoch chain, one store per validator",
  )
  .requiredOption("--out <dir>", "directory to create (must be empty or absent)")
  .option("--validators <n>", "committee size", integer(1, 64), DEFAULT_DEVNET_OPTIONS.validators)
  .option("--epochs <n>", "epochs to generate", integer(1, 10_000), DEFAULT_DEVNET_OPTIONS.epochs)
  .option(
    "--commits-per-epoch <n>",
    "commits in each epoch",
    integer(1),
    DEFAULT_DEVNET_OPTIONS.commitsPerEpoch,
  )
  .option(
    "--txs-per-block <n>",
    "transactions in each block",
    integer(0, 100_000),
    DEFAULT_DEVNET_OPTIONS.txsPerBlock,
  )
  .option("--tx-bytes <n>", "bytes per transaction", integer(1, 1 << 20), DEFAULT_DEVNET_OPTIONS.txBytes)
  .option(
    "--seed <n>",
    "seed: the same seed gives the same chain",
    integer(0, 2 ** 31),
    DEFAULT_DEVNET_OPTIONS.seed,
  )
  .option(
    "--base-port <n>",
    "validator i serves sync on base+2i, gossip on base+2i+1",
    integer(1, 65000),
    DEFAULT_DEVNET_OPTIONS.basePort,
  )
  .action(
    async (opts: {
      out: string;
      validators: number;
      epochs: number;
      commitsPerEpoch: number;
      txsPerBlock: number;
      txBytes: number;
      seed: number;
      basePort: number;
    }) => {
      const started = performance.now();
      const { out, ...devnetOptions } = opts;
      const s = await writeDevnet(out, devnetOptions);
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      console.log(
        `devnet "${s.chainId}" in ${s.dir} (${secs} s)\n` +
          `  genesis   ${s.genesisFile} (digest ${s.genesisDigest.slice(0, 16)}…)\n` +
          `  chain     ${s.commits} commits, ${s.blocks} blocks (${(s.blockBytes / 1e6).toFixed(1)} MB), ${s.epochs} epochs\n` +
          `  summary   ${join(s.dir, "devnet.json")}\n` +
          s.validators
            .map(
              (v) =>
                `  validator ${v.index}  store ${v.store}  sync ${v.syncAddress}  gossip ${v.gossipAddress}`,
            )
            .join("\n"),
      );
    },
  );

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
  .option("--network-key <file>", "this validator's network key file (for --gossip-listen)")
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
  .action(
    async (opts: {
      store: string;
      listen: string;
      metrics?: string;
      gossipListen?: string;
      networkKey?: string;
      allowKey: string[];
      live?: string;
      index?: number;
      roundMs: number;
      txsPerRound: number;
      follower: string[];
      tlsCert?: string;
      tlsKey?: string;
      tlsCa?: string;
      maxBulkCalls: number;
      maxServerInflightMib: number;
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
        allowKeys: opts.allowKey.map((k) => fromHex(k)),
        tls: await readTls(opts),
        serverOptions: {
          maxBulkCalls: opts.maxBulkCalls,
          maxServerInflightBytes: opts.maxServerInflightMib * 1024 * 1024,
        },
        live:
          opts.live === undefined
            ? undefined
            : {
                devnetDir: opts.live,
                index: opts.index!,
                roundMs: opts.roundMs,
                txsPerRound: opts.txsPerRound,
                followers: opts.follower,
              },
      });
      await untilSignal(() => running.stop());
    },
  );

const sync = program
  .command("sync")
  .description(
    "run a full node: catch up from peers (from genesis or a trusted checkpoint), verify, store, follow",
  )
  .option("--store <dir>", "store directory (created if absent); required")
  .option("--genesis <file>", "genesis.pb of the chain; required")
  .option(
    "--peer <host:port>",
    "a validator's sync address (repeat, or comma-separate, for several); required",
    collect(hostPort),
    [],
  )
  .option(
    "--checkpoint <file>",
    "start a new store from this trusted checkpoint (from `dagsync checkpoint export`)",
  )
  .option("--listen <host:port>", "also serve what this node has synced on this address", hostPort)
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
  .option("--verify-block-signatures", "also check every committed block's signature (default: digest only)")
  .option("--max-inflight-mib <n>", "memory budget for fetched, unapplied data, MiB", integer(1, 65536), 128)
  .option("--verifier <backend>", "Ed25519 backend: native or noble", "native")
  .option(
    "--network-key <file>",
    "join the live channel with this network key (dials the validators' gossip addresses)",
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
      checkpoint?: string;
      listen?: string;
      metrics?: string;
      exitWhenSynced?: boolean;
      maxStall: number;
      commitsPerRequest: number;
      verifyBlockSignatures?: boolean;
      maxInflightMib: number;
      verifier: string;
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
        listen: opts.listen,
        metrics: opts.metrics,
        log,
        verifier: opts.verifier,
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

withConfig(serve, ["store"]);
withConfig(sync, ["store", "genesis", "peer"]);

const checkpoint = program.command("checkpoint").description("trusted checkpoints");
checkpoint
  .command("export")
  .description(
    "print a checkpoint (JSON) of a store's highest synced commit, for `dagsync sync --checkpoint`",
  )
  .requiredOption("--store <dir>", "store of a node you trust (not in use by a running process)")
  .option("--index <n>", "the commit to export (default: the highest synced)", integer(1))
  .action(async (opts: { store: string; index?: number }) => {
    const store = await Store.open(opts.store, { mustExist: true });
    try {
      process.stdout.write(`${JSON.stringify(await exportCheckpoint(store, opts.index), null, 2)}\n`);
    } finally {
      await store.close();
    }
  });

checkpoint
  .command("import")
  .description("start a new store from a trusted checkpoint; `dagsync sync --store DIR …` then syncs from it")
  .requiredOption("--store <dir>", "store directory to create (must not exist yet)")
  .requiredOption("--genesis <file>", "genesis.pb of the chain")
  .argument("<checkpoint.json>", "a checkpoint from `dagsync checkpoint export` on a node you trust")
  .action(async (file: string, opts: { store: string; genesis: string }) => {
    if (await isNonEmptyDir(opts.store))
      throw new Error(`--store ${opts.store}: already exists; a checkpoint starts a new store`);
    const genesis = await readGenesisFile(opts.genesis);
    const cp = await readCheckpoint(file, parseGenesis(genesis).digest);
    const store = await Store.open(opts.store, { genesis, checkpoint: cp });
    try {
      console.log(
        `initialized ${opts.store} at checkpoint ${cp.index} (next epoch ${cp.committee.epoch}); ` +
          `run dagsync sync --store ${opts.store} --genesis ${opts.genesis} --peer …`,
      );
    } finally {
      await store.close();
    }
  });

program
  .command("prune")
  .description("delete commits, their blocks and certifiers below a commit (a stopped node's store)")
  .requiredOption("--store <dir>", "store directory (not in use by a running process)")
  .requiredOption("--keep-from <n>", "the lowest commit to keep (never above the highest synced)", integer(1))
  .action(async (opts: { store: string; keepFrom: number }) => {
    const store = await Store.open(opts.store, { mustExist: true });
    try {
      const pruned = await store.prune(opts.keepFrom);
      const m = store.watermarks;
      console.log(
        `pruned ${pruned} commits; ${opts.store} now holds ${m.lowestAvailable}..${m.highestSynced}`,
      );
    } finally {
      await store.close();
    }
  });

program
  .command("status")
  .description("print a node's Admin/GetStatus")
  .argument("<host:port>", "the node's sync address")
  .action(async (address: string) => {
    hostPort(address);
    const client = new PeerClient(address);
    try {
      const s = await client.getStatus();
      console.log(toJsonString(GetStatusResponseSchema, s, { prettySpaces: 2 }));
    } finally {
      client.close();
    }
  });

program
  .command("demo")
  .description(
    "npm start: a local devnet served by validator processes and a full node catching up from them",
  )
  .option("--dir <dir>", "devnet folder (generated on first run)", ".devnet")
  .option("--once", "exit after the catch-up summary instead of following")
  .option("--listen <host:port>", "the full node's own sync address", hostPort, "127.0.0.1:9200")
  .option("--epochs <n>", "epochs, when generating", integer(1, 10_000), 4)
  .option("--commits-per-epoch <n>", "commits per epoch, when generating", integer(1), 1500)
  .option(
    "--base-port <n>",
    "validator i serves sync on base+2i",
    integer(1, 65000),
    DEFAULT_DEVNET_OPTIONS.basePort,
  )
  .option(
    "--round-ms <n>",
    "live round interval after catch-up, ms (0: no live production)",
    integer(0, 60_000),
    500,
  )
  .action(
    async (opts: {
      dir: string;
      once?: boolean;
      listen: string;
      epochs: number;
      commitsPerEpoch: number;
      basePort: number;
      roundMs: number;
    }) => {
      await runDemo({
        roundMs: opts.roundMs,
        dir: opts.dir,
        once: opts.once === true,
        listen: opts.listen,
        log: createLogger("dagsync"),
        devnet: { epochs: opts.epochs, commitsPerEpoch: opts.commitsPerEpoch, basePort: opts.basePort },
      });
    },
  );

async function isNonEmptyDir(path: string): Promise<boolean> {
  try {
    return (await readdir(path)).length > 0;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    if ((e as NodeJS.ErrnoException).code === "ENOTDIR") return true;
    throw e;
  }
}

export async function main(argv: string[]): Promise<number> {
  // grpc-js writes its own errors to stderr, e.g. "E No address added out of total 1 resolved" on
  // top of our one-line "cannot listen on …: the port is already in use". Its log stays available
  // with GRPC_VERBOSITY (or GRPC_NODE_VERBOSITY) or DAGSYNC_DEBUG.
  if (!process.env.GRPC_VERBOSITY && !process.env.GRPC_NODE_VERBOSITY && !process.env.DAGSYNC_DEBUG)
    setLogVerbosity(logVerbosity.NONE);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode; // commander already printed the message
    const message = e instanceof Error ? e.message : String(e);
    console.error(`dagsync: ${message}`);
    if (process.env.DAGSYNC_DEBUG) console.error(e);
    return 1;
  }
}

process.exitCode = await main(process.argv);
