/**
 * `npm start`: the whole story on one machine. Generates a devnet if none exists, starts one
 * validator process per store serving it over gRPC, then runs a full node in this process that
 * catches up from them with a progress bar, verifies everything and prints a summary. Without
 * `--once` it keeps following until Ctrl-C.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { PeerClient } from "../client/index.js";
import { toHex } from "../core/bytes.js";
import { parseCommit } from "../core/wire.js";
import { readKeyFile, writeKeyFile } from "../crypto/key-file.js";
import { Ed25519Signer } from "../crypto/keys.js";
import { type FullNode, startFullNode } from "../node/full-node.js";
import { peersBySource, reportProgress } from "../node/progress.js";
import type { DevnetOptions } from "./chain.js";
import { readDevnetSummary, writeDevnet } from "./write.js";

export interface DemoOptions {
  readonly dir: string;
  readonly once: boolean;
  readonly devnet: Partial<DevnetOptions>;
  /** Full node's own sync port. */
  readonly listen: string;
  /** Live round interval, ms (0: no live production). */
  readonly roundMs: number;
  readonly log: Logger;
}

/** The installed command's wrapper, so that validators run with the same memory settings (bin/dagsync). */
const CLI = fileURLToPath(new URL("../../bin/dagsync", import.meta.url));
/** How long validators get to start listening, ms. */
const VALIDATOR_START_TIMEOUT_MS = 20_000;

async function waitServing(address: string, child: ChildProcess, deadline: number): Promise<void> {
  const client = new PeerClient(address, { smallCallTimeoutMs: 1000 });
  try {
    for (;;) {
      if (child.exitCode !== null)
        throw new Error(`validator at ${address} exited with code ${child.exitCode}`);
      try {
        await client.getCommitAvailability();
        return;
      } catch {
        if (Date.now() > deadline)
          throw new Error(`validator at ${address} did not start within ${VALIDATOR_START_TIMEOUT_MS} ms`);
        await new Promise((r) => setTimeout(r, 150));
      }
    }
  } finally {
    client.close();
  }
}

/**
 * Every 2 s, one line: the validators' tip, the full node's, the lag in commits, and the delay
 * between a commit's first appearance on any validator's SubscribeCommits stream (the moment it
 * formed the commit and could serve it) and its delivery to the full node's own subscribers.
 * Negative delays (the node delivered first, from gossip) count as 0.
 */
function reportLive(node: FullNode, validators: readonly string[]): { stop: () => void } {
  const clients = validators.map((v) => new PeerClient(v, { smallCallTimeoutMs: 1000 }));
  const announced = new Map<number, number>();
  const delivered = new Map<number, number>();
  const latencies: number[] = [];
  let tip = 0;
  const controller = new AbortController();
  const pair = (index: number) => {
    const a = announced.get(index);
    const d = delivered.get(index);
    if (a === undefined || d === undefined) return;
    latencies.push(Math.max(0, d - a));
    announced.delete(index);
    delivered.delete(index);
  };
  const from = node.store.watermarks.highestSynced + 1;
  for (const client of clients)
    void (async () => {
      // Each validator's stream, from the first commit not yet seen; the first stream to show a
      // commit sets its announcement time.
      while (!controller.signal.aborted) {
        try {
          for await (const sub of client.subscribeCommits(Math.max(from, tip + 1), controller.signal)) {
            const index = parseCommit(sub.commit).index;
            if (!announced.has(index) && index > tip - 100) announced.set(index, performance.now());
            tip = Math.max(tip, index);
            pair(index);
          }
        } catch {
          // a validator restarting, or a lagged stream: resubscribe shortly
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
  void (async () => {
    try {
      for await (const sub of node.engine.broadcast.iterate(from, controller.signal)) {
        delivered.set(sub.index, performance.now());
        pair(sub.index);
      }
    } catch {
      // lagged or stopped: the report simply ends
    }
  })();
  const print = setInterval(() => {
    const mine = node.store.watermarks.highestSynced;
    const sorted = latencies.splice(0).sort((a, b) => a - b);
    const p50 = sorted[Math.floor(sorted.length / 2)];
    const max = sorted.at(-1);
    for (const m of [announced, delivered]) for (const k of m.keys()) if (k < mine - 100) m.delete(k);
    process.stdout.write(
      `live: validators at commit ${tip}, full node at ${mine} (lag ${Math.max(0, tip - mine)}); ` +
        `sub-DAG delivered ${p50 === undefined ? "-" : `p50 ${Math.round(p50)} ms, max ${Math.round(max!)} ms`} after a validator formed it; ` +
        `sync peers ${peersLine(node)}; gossip peers ${node.gossip?.peers().length ?? 0}, near-tip blocks ${node.nearTip.size}\n`,
    );
  }, 2_000);
  return {
    stop: () => {
      clearInterval(print);
      controller.abort();
      for (const c of clients) c.close();
    },
  };
}

/** Sync peers by source, working/known: "committee 4/4, bootstrap 1/1". */
function peersLine(node: FullNode): string {
  const by = Object.entries(peersBySource(node.engine)).map(([s, n]) => `${s} ${n}`);
  return by.length === 0 ? "none" : by.join(", ");
}

export async function runDemo(options: DemoOptions): Promise<void> {
  const { log } = options;
  const dir = resolve(options.dir);
  let summary = await readDevnetSummary(dir);
  if (summary === undefined && existsSync(join(dir, "devnet.json"))) {
    log.warn(
      { dir },
      "the devnet there is unreadable or was written by another dagsync version (store layout): generating it again",
    );
    await rm(dir, { recursive: true, force: true });
  }
  if (summary !== undefined) {
    log.info(
      { dir, commits: summary.commits, blocks: summary.blocks },
      "using the existing devnet (delete the folder for a new one)",
    );
  } else {
    log.info({ dir }, "generating a devnet (first run only)");
    const started = performance.now();
    summary = await writeDevnet(dir, options.devnet);
    log.info(
      {
        commits: summary.commits,
        blocks: summary.blocks,
        mb: Number((summary.blockBytes / 1e6).toFixed(1)),
        seconds: Number(((performance.now() - started) / 1000).toFixed(1)),
      },
      "devnet generated",
    );
  }

  const validators: ChildProcess[] = [];
  const stopValidators = async () => {
    await Promise.all(
      validators.map(
        (child) =>
          new Promise<void>((done) => {
            if (child.exitCode !== null) return done();
            child.once("exit", () => done());
            child.kill("SIGTERM");
          }),
      ),
    );
  };
  try {
    // The full node's own network key, admitted by the validators' gossip ports.
    const nodeKeyFile = join(dir, "fullnode-network.key");
    if (!existsSync(nodeKeyFile)) await writeKeyFile(nodeKeyFile, Ed25519Signer.generate());
    const nodeKey = await readKeyFile(nodeKeyFile);
    for (const v of summary.validators) {
      // Validators advertise themselves (signed with their network key) for peer exchange.
      const args = [
        "serve",
        "--store",
        v.store,
        "--listen",
        v.syncAddress,
        "--network-key",
        v.networkKeyFile,
      ];
      // Validator 0 keeps an archive of the chain current (DESIGN §10): `dagsync sync --archive
      // .devnet/archive` reads it, and any static host can serve the directory.
      if (v.index === 0) args.push("--archive-out", join(dir, "archive"));
      if (options.roundMs > 0)
        args.push(
          ...["--gossip-listen", v.gossipAddress, "--allow-key", toHex(nodeKey.publicKey)],
          ...[
            "--live",
            dir,
            "--index",
            String(v.index),
            "--round-ms",
            String(options.roundMs),
            "--follower",
            options.listen,
          ],
        );
      const child = spawn(CLI, args, {
        stdio: ["ignore", "ignore", "pipe"],
        env: { ...process.env, DAGSYNC_LOG_LEVEL: "warn" },
      });
      child.stderr?.on("data", (d: Buffer) => process.stderr.write(`[validator ${v.index}] ${d}`));
      validators.push(child);
    }
    const deadline = Date.now() + VALIDATOR_START_TIMEOUT_MS;
    await Promise.all(summary.validators.map((v, i) => waitServing(v.syncAddress, validators[i]!, deadline)));
    log.info(
      { validators: summary.validators.map((v) => v.syncAddress), archive: join(dir, "archive") },
      `${validators.length} validator processes serving; validator 0 keeps an archive of the chain in ${join(dir, "archive")}`,
    );

    const storeDir = join(dir, "fullnode");
    await rm(storeDir, { recursive: true, force: true }); // every run catches up from scratch
    const node = await startFullNode({
      store: storeDir,
      genesisFile: summary.genesisFile,
      // One validator's address: the node finds the others (the genesis committee's addresses,
      // and peer exchange), as DESIGN §9 says.
      peers: [summary.validators[0]!.syncAddress],
      listen: options.listen,
      networkKeyFile: options.roundMs > 0 ? nodeKeyFile : undefined,
      log,
    });
    const progress = reportProgress(node.engine, log);
    const started = performance.now();
    const onSignal = () => void node.engine.stop();
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    try {
      await node.run(true);
      progress.stop();
      const p = node.engine.progress;
      const secs = (performance.now() - started) / 1000;
      const line =
        `caught up: ${p.commitsApplied} commits, ${p.blocksApplied} blocks, ${(p.bytesApplied / 1e6).toFixed(1)} MB in ${secs.toFixed(2)} s — ` +
        `${Math.round(p.commitsApplied / secs)} commits/s, ${Math.round(p.blocksApplied / secs)} blocks/s, ${(p.bytesApplied / secs / 1e6).toFixed(1)} MB/s; ` +
        "every commit certified by its epoch's committee, every block checked by digest";
      process.stdout.write(`\n${line}\n`);
      if (!options.once && p.phase === "synced") {
        process.stdout.write(
          `following the validators live; the full node serves on ${options.listen} (SubscribeCommits, Admin/GetStatus). Ctrl-C to stop.\n`,
        );
        const live = reportLive(
          node,
          summary.validators.map((v) => v.syncAddress),
        );
        try {
          await node.run(false);
        } finally {
          live.stop();
        }
      }
    } finally {
      progress.stop();
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      await node.stop();
    }
  } finally {
    await stopValidators();
  }
}
