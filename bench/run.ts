/**
 * `npm run bench`: measures the machine's limits, then dagsync against them, in one run.
 *
 *   BENCH_BLOCKS  blocks in the catch-up chain (default 100000; the RSS check also syncs half)
 *   BENCH_QUICK=1 a smaller run (20000 blocks, shorter limit measurements) for a smoke test
 *   BENCH_ONLY    a comma-separated subset of: serving, load, catchup, signatures, archive,
 *                 network, gossip
 *                 (default: all)
 *   BENCH_SYNC_NODE_OPTIONS  V8 options for the syncing node only, in place of bin/dagsync's
 *                 (e.g. "" for V8's defaults instead of the 1 GB heap limit)
 *
 * The full-chain catch-up is followed by the catch-up floor (bench/catch-up-floor.ts) against
 * the same servers: what fetching, digest-checking and writing the blocks costs with nothing
 * else, the most a catch-up could reach on this machine.
 *
 * The network section (bench/network.ts, issue 15) catches up the half chain from 4 serving
 * processes behind link proxies: uncapped (R), then each link capped at R/8, with one peer at a
 * tenth of that, and with 200 ms RTT on every link.
 *
 * Devnets are generated once and cached in bench/.cache.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { MANIFEST_FILE, parseManifest } from "../src/archive/index.js";
import { PeerClient } from "../src/client/index.js";
import { verifyBlocksAgainstRefs } from "../src/core/index.js";
import { type DevnetSummary, readDevnetSummary, writeDevnet } from "../src/devnet/write.js";
import type { BlockRef } from "../src/gen/dagsync/v1/types_pb.js";
import { diskBytes, storeDatabases } from "../src/store/index.js";
import { NGINX, startNginx } from "../test/helpers/archive-http.js";
import { decodeFetchBlocksBody, fetchBlocksBodies, runBulkLoad } from "../test/helpers/bulk-load.js";
import { allRefs, fetchEveryBlock } from "./chain-refs.js";
import {
  BLOCKS_PER_SECOND_PER_NODE,
  FLOOD_FACTOR,
  gossipLatency,
  MEMPOOL_QUOTA_PER_SECOND,
} from "./gossip.js";
import { type Limits, measureLimits } from "./limits.js";
import { formatLoadReport, loadBench } from "./load.js";
import { formatNetworkReport, networkBench } from "./network.js";
import { peakMemory, processCpuSeconds } from "./process-stats.js";
import { type ServeProcess, startServeProcess, stopProcesses } from "./serve-process.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The installed command (a wrapper that sets Node's memory options), as an operator runs it. */
const CLI = join(ROOT, "bin/dagsync");
const CACHE = join(ROOT, "bench/.cache");
const QUICK = process.env.BENCH_QUICK === "1";
const ONLY = new Set(
  (process.env.BENCH_ONLY ?? "serving,load,catchup,signatures,archive,network,gossip")
    .split(",")
    .map((x) => x.trim()),
);
const BLOCKS = Number(process.env.BENCH_BLOCKS ?? (QUICK ? 20_000 : 100_000));
const SYNC_NODE_OPTIONS = process.env.BENCH_SYNC_NODE_OPTIONS;
/** The devnet generator averages ≈ 4.5 committed blocks per commit with 4 validators. */
const BLOCKS_PER_COMMIT = 4.5;

async function devnet(blocks: number): Promise<DevnetSummary> {
  const dir = join(CACHE, `devnet-${blocks}`);
  const cached = await readDevnetSummary(dir);
  if (cached !== undefined) return cached;
  await rm(dir, { recursive: true, force: true });
  await mkdir(CACHE, { recursive: true });
  const epochs = 4;
  const commitsPerEpoch = Math.ceil(blocks / BLOCKS_PER_COMMIT / epochs);
  process.stderr.write(`generating a devnet of ≈${blocks} blocks in ${dir}…\n`);
  return writeDevnet(dir, { epochs, commitsPerEpoch, seed: 42 });
}

/** A serve process of this checkout's command on `store`. */
const serve = (store: string): Promise<ServeProcess> => startServeProcess(CLI, store);
const stop = stopProcesses;

/**
 * FetchBlocks serving throughput with PeerClient (connect-node, decoding every answer in this
 * process): `clients` connections fetch every block in chunks of 1000 refs; MB/s and the server
 * process's CPU (all its threads: LevelDB reads run on libuv's pool) per GB.
 */
async function fetchBlocksThroughput(
  server: ServeProcess,
  refs: BlockRef[],
  clients: number,
): Promise<{ mbPerSec: number; serverCoreSecPerGb: number }> {
  const pool = Array.from({ length: clients }, () => new PeerClient(server.address));
  const cpuBefore = processCpuSeconds(server.child.pid);
  const started = performance.now();
  const bytes = await fetchEveryBlock(refs, {
    workers: clients,
    refsPerCall: 1000,
    clientFor: (worker) => pool[worker]!,
  });
  const secs = (performance.now() - started) / 1000;
  const cpu = processCpuSeconds(server.child.pid) - cpuBefore;
  for (const c of pool) c.close();
  return { mbPerSec: bytes / secs / 1e6, serverCoreSecPerGb: cpu / (bytes / 1e9) };
}

const SERVING_REFS_PER_CALL = 1000;

/**
 * FetchBlocks serving throughput as the raw stream bound measures gRPC: `clients` HTTP/2
 * connections from distinct loopback addresses, one call in flight each, on a worker thread that
 * frames requests once and receives answers without decoding them (test/helpers/bulk-load.ts),
 * so that the figure is the server's and not this process's protobuf decoding on the same two
 * cores. One kept answer per run is decoded and compared with the store's blocks.
 */
async function servingThroughput(
  server: ServeProcess,
  refs: readonly BlockRef[],
  clients: number,
): Promise<{ mbPerSec: number; serverCoreSecPerGb: number; p50Ms: number }> {
  const bodies = fetchBlocksBodies(refs, SERVING_REFS_PER_CALL);
  const cpuBefore = processCpuSeconds(server.child.pid);
  const run = await runBulkLoad({
    port: Number(server.address.split(":")[1]),
    addresses: Array.from({ length: clients }, (_, i) => `127.0.20.${10 + i}`),
    callsPerAddress: 1,
    bodies,
    durationMs: (QUICK ? 3 : 8) * 1000,
    deadlineMs: 30_000,
    samplesPerThread: 1,
  });
  const cpu = processCpuSeconds(server.child.pid) - cpuBefore;
  const ok = run.calls.filter((c) => c.status === 0);
  if (ok.length !== run.calls.length)
    throw new Error(`serving bench: ${run.calls.length - ok.length} of ${run.calls.length} calls failed`);
  for (const sample of run.samples) {
    const got = decodeFetchBlocksBody(sample.payload);
    const at = sample.body * SERVING_REFS_PER_CALL;
    const { error } = verifyBlocksAgainstRefs(refs.slice(at, at + SERVING_REFS_PER_CALL), got);
    if (got.length === 0 || error !== undefined)
      throw new Error(
        `serving bench: a wrong answer to body ${sample.body}: ${error?.message ?? "no blocks"}`,
      );
  }
  const bytes = ok.reduce((sum, c) => sum + c.bytes, 0);
  const ms = ok.map((c) => c.ms).sort((a, b) => a - b);
  return {
    mbPerSec: bytes / (run.elapsedMs / 1000) / 1e6,
    serverCoreSecPerGb: cpu / (bytes / 1e9),
    p50Ms: ms[ms.length >> 1] ?? Number.NaN,
  };
}

interface CatchUp {
  commits: number;
  blocks: number;
  seconds: number;
  commitsPerSec: number;
  blocksPerSec: number;
  mbPerSec: number;
  maxRssMb: number;
  /** Peak anonymous and file-backed resident memory (Linux), MB: see peakMemory. */
  peakAnonMb: number;
  peakFileMb: number;
  /** CPU of the syncing node (all its threads) and of the three serving processes, core-seconds. */
  nodeCpuSeconds: number;
  serverCpuSeconds: number;
  floor: Floor | undefined;
  /** The synced store's bytes on disk (both databases, logs included). */
  storeBytes: number;
}

/** The catch-up floor (bench/catch-up-floor.ts) against the same servers. */
interface Floor {
  seconds: number;
  mbPerSec: number;
  clientCpuSeconds: number;
  serverCpuSeconds: number;
}

const serversCpu = (children: ChildProcess[]) =>
  children.reduce((sum, c) => sum + processCpuSeconds(c.pid), 0);

/** Runs bench/catch-up-floor.ts against `peers`, taking refs from `refsStore`. */
async function catchUpFloor(refsStore: string, peers: string[], servers: ChildProcess[]): Promise<Floor> {
  const before = serversCpu(servers);
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(ROOT, "bench/catch-up-floor.ts"), refsStore, ...peers],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, MALLOC_MMAP_THRESHOLD_: "131072" } },
  );
  let out = "";
  child.stdout.on("data", (d: Buffer) => {
    out += d;
  });
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  if (code !== 0) throw new Error(`catch-up floor failed (exit ${code}): ${out}`);
  const r = JSON.parse(out.trim()) as { bytes: number; seconds: number; cpuSeconds: number };
  return {
    seconds: r.seconds,
    mbPerSec: r.bytes / r.seconds / 1e6,
    clientCpuSeconds: r.cpuSeconds,
    serverCpuSeconds: serversCpu(servers) - before,
  };
}

/**
 * A full node process syncing the whole chain from three serving processes; with `floor`, the
 * catch-up floor then runs against the same servers (refs from the fourth validator's store,
 * which no server holds open).
 */
/**
 * A full node process catching up `summary`'s chain: from 3 serving processes, or with `archive`,
 * from that archive alone (a directory or URL; no peer, no discovery).
 */
async function catchUp(
  summary: DevnetSummary,
  floor = false,
  archive?: string,
  extraArgs: readonly string[] = [],
): Promise<CatchUp> {
  const servers =
    archive === undefined ? await Promise.all(summary.validators.slice(0, 3).map((v) => serve(v.store))) : [];
  const serverCpuBefore = serversCpu(servers.map((s) => s.child));
  const store = join(CACHE, "fullnode");
  await rm(store, { recursive: true, force: true });
  try {
    const args = [
      "sync",
      "--store",
      store,
      "--genesis",
      summary.genesisFile,
      "--exit-when-synced",
      ...extraArgs,
    ];
    for (const s of servers) args.push("--peer", s.address);
    if (archive !== undefined) args.push("--no-discovery", "--archive", archive);
    const child = spawn(CLI, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env:
        SYNC_NODE_OPTIONS === undefined
          ? process.env
          : { ...process.env, DAGSYNC_NODE_OPTIONS: SYNC_NODE_OPTIONS },
    });
    const memory = peakMemory(child.pid ?? 0);
    let log = "";
    child.stderr.on("data", (d: Buffer) => {
      log += d;
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    const peaks = memory.stop();
    const line = log.split("\n").find((l) => l.includes("synced: every commit"));
    if (code !== 0 || line === undefined) throw new Error(`sync failed (exit ${code}):\n${log.slice(-2000)}`);
    const r = JSON.parse(line) as {
      commits: number;
      blocks: number;
      seconds: number;
      mbPerSec: number;
      maxRssMb: number;
      cpuSeconds: number;
    };
    const serverCpuSeconds = serversCpu(servers.map((s) => s.child)) - serverCpuBefore;
    const storeBytes = await diskBytes(store);
    const refsStore = summary.validators[3]?.store;
    return {
      commits: r.commits,
      blocks: r.blocks,
      seconds: r.seconds,
      commitsPerSec: r.commits / r.seconds,
      blocksPerSec: r.blocks / r.seconds,
      mbPerSec: r.mbPerSec,
      maxRssMb: r.maxRssMb,
      peakAnonMb: peaks.anonMb,
      peakFileMb: peaks.fileMb,
      nodeCpuSeconds: r.cpuSeconds,
      serverCpuSeconds,
      storeBytes,
      floor:
        floor && refsStore !== undefined
          ? await catchUpFloor(
              refsStore,
              servers.map((s) => s.address),
              servers.map((s) => s.child),
            )
          : undefined,
    };
  } finally {
    await stop(servers.map((s) => s.child));
    await rm(store, { recursive: true, force: true });
  }
}

const f = (n: number, d = 1) => n.toFixed(d);

async function main(): Promise<void> {
  // Measure what operators run: the compiled CLI (bin/dagsync.js runs dist/ when it is current).
  const compiled = spawnSync(process.execPath, [join(ROOT, "scripts/compile.mjs")], { stdio: "inherit" });
  if (compiled.status !== 0) throw new Error("bench: compiling dist/ failed");
  console.log(
    `dagsync benchmarks — node ${process.version}, processes started as bin/dagsync from dist/, ${new Date().toISOString()}${QUICK ? " (quick)" : ""}`,
  );
  const limits: Limits = await measureLimits();
  console.log("\nphysical limits (this run)");
  console.log(`  LevelDB batch writes, 4 KiB values     ${f(limits.leveldbWriteMBps)} MB/s`);
  console.log(
    `  raw grpc-js stream, 16 MiB window      ${f(limits.grpcStreamMBps)} MB/s (server ${f(limits.grpcStreamServerCoreSecPerGb, 2)} core-s per GB)`,
  );
  console.log(`  SHA-256 (node:crypto), 4 KiB           ${f(limits.sha256MBps)} MB/s`);
  console.log(
    `  Ed25519 verify native / noble          ${f(limits.ed25519NativePerSec, 0)} / ${f(limits.ed25519NoblePerSec, 0)} per s`,
  );

  if (["serving", "load", "catchup", "signatures", "archive"].some((s) => ONLY.has(s)))
    await chainBenches(limits);
  if (ONLY.has("network")) await networkSection();
  if (ONLY.has("gossip")) await gossipBench();
}

async function chainBenches(limits: Limits): Promise<void> {
  const full = await devnet(BLOCKS);
  const half = await devnet(Math.round(BLOCKS / 2));
  if (ONLY.has("serving")) await servingBench(limits, full);
  if (ONLY.has("load")) await loadSection(full);
  const fromPeers = ONLY.has("catchup") ? await catchUpBench(limits, half, full) : undefined;
  if (ONLY.has("signatures")) await signaturesBench(limits, full);
  if (ONLY.has("archive")) await archiveBench(limits, full, fromPeers);
}

async function servingBench(limits: Limits, full: DevnetSummary): Promise<void> {
  const refs = await allRefs(full.validators[0]!.store);
  const server = await serve(full.validators[0]!.store);
  let results: [string, { mbPerSec: number; serverCoreSecPerGb: number; p50Ms: number }, number][];
  let decoding: { mbPerSec: number; serverCoreSecPerGb: number };
  try {
    await servingThroughput(server, refs, 4); // warm up the server's caches and JIT
    results = [
      ["1 client  ", await servingThroughput(server, refs, 1), 0.3],
      ["16 clients", await servingThroughput(server, refs, 16), 0.5],
    ];
    decoding = await fetchBlocksThroughput(server, refs, 16);
  } finally {
    await stop([server.child]);
  }
  console.log(
    `\nFetchBlocks serving (${refs.length} blocks, ${f(full.blockBytes / 1e6)} MB, ${SERVING_REFS_PER_CALL} refs per call; ` +
      `clients on raw HTTP/2 that do not decode, one call in flight each, as the raw stream bound's client)`,
  );
  for (const [name, r, target] of results)
    console.log(
      `  ${name}   ${f(r.mbPerSec)} MB/s   ratio to raw gRPC stream ${f(r.mbPerSec / limits.grpcStreamMBps, 2)} (target ≥ ${target}); ` +
        `server ${f(r.serverCoreSecPerGb, 2)} core-s per GB served (raw stream server ${f(limits.grpcStreamServerCoreSecPerGb, 2)}); p50 ${f(r.p50Ms)} ms per call`,
    );
  console.log(
    `  16 PeerClients decoding in the bench process: ${f(decoding.mbPerSec)} MB/s, ratio ${f(decoding.mbPerSec / limits.grpcStreamMBps, 2)}; ` +
      `server ${f(decoding.serverCoreSecPerGb, 2)} core-s per GB`,
  );
}

async function loadSection(full: DevnetSummary): Promise<void> {
  const store = full.validators[0]!.store;
  const r = await loadBench(await allRefs(store), () => serve(store), QUICK ? 4 : 8);
  console.log(`\n${formatLoadReport(r)}`);
}

async function catchUpBench(limits: Limits, half: DevnetSummary, full: DevnetSummary): Promise<CatchUp> {
  const small = await catchUp(half);
  const big = await catchUp(full, true);
  console.log(
    `\ncatch-up: a full node process syncing from 3 serving processes${SYNC_NODE_OPTIONS === undefined ? "" : ` (node V8 options: ${SYNC_NODE_OPTIONS})`}`,
  );
  for (const [name, r] of [
    ["half chain", small],
    ["full chain", big],
  ] as const)
    console.log(
      `  ${name}: ${r.commits} commits, ${r.blocks} blocks in ${f(r.seconds, 2)} s — ${f(r.commitsPerSec, 0)} commits/s, ` +
        `${f(r.blocksPerSec, 0)} blocks/s, ${f(r.mbPerSec)} MB/s; peak RSS ${f(r.maxRssMb, 0)} MB ` +
        `(anonymous ${f(r.peakAnonMb, 0)} MB, file-backed ${f(r.peakFileMb, 0)} MB); ` +
        `CPU node ${f(r.nodeCpuSeconds, 2)} + servers ${f(r.serverCpuSeconds, 2)} core-s`,
    );
  console.log(
    `  ratio to LevelDB batch-write bound   ${f(big.mbPerSec / limits.leveldbWriteMBps, 2)}  (target ≥ 0.5)`,
  );
  console.log(`  ratio to raw gRPC stream bound       ${f(big.mbPerSec / limits.grpcStreamMBps, 2)}`);
  const fl = big.floor;
  if (fl !== undefined) {
    console.log(
      `  floor (bench/catch-up-floor.ts: the same blocks from the same servers, digest-checked and written, nothing else):\n` +
        `    ${f(fl.seconds, 2)} s — ${f(fl.mbPerSec)} MB/s, ratio to LevelDB bound ${f(fl.mbPerSec / limits.leveldbWriteMBps, 2)}; ` +
        `CPU client ${f(fl.clientCpuSeconds, 2)} + servers ${f(fl.serverCpuSeconds, 2)} core-s`,
    );
    console.log(`  catch-up / floor                     ${f(big.mbPerSec / fl.mbPerSec, 2)}`);
  }
  console.log(
    `  peak RSS half → full chain           ${f(small.maxRssMb, 0)} → ${f(big.maxRssMb, 0)} MB  (target ≤ 300 MB, flat)`,
  );
  console.log(
    `  peak anonymous RSS half → full       ${f(small.peakAnonMb, 0)} → ${f(big.peakAnonMb, 0)} MB  (file-backed: ${f(small.peakFileMb, 0)} → ${f(big.peakFileMb, 0)} MB)`,
  );
  await diskReport(full, big.storeBytes);
  return big;
}

/**
 * Catch-up checking every block's signature (`--verify-block-signatures`): through the worker
 * pool (one worker per core, the default) and inline on the event loop (`--verify-workers 0`),
 * as blocks/s ÷ one core's native verifies/s measured in the same run.
 */
async function signaturesBench(limits: Limits, full: DevnetSummary): Promise<void> {
  const pooled = await catchUp(full, false, undefined, ["--verify-block-signatures"]);
  const inline = await catchUp(full, false, undefined, [
    "--verify-block-signatures",
    "--verify-workers",
    "0",
  ]);
  console.log(
    `\ncatch-up checking every block's signature (--verify-block-signatures), ${pooled.blocks} blocks from 3 serving processes`,
  );
  for (const [name, r] of [
    [`worker pool (${availableParallelism()} workers)`, pooled],
    ["inline (--verify-workers 0)", inline],
  ] as const)
    console.log(
      `  ${name.padEnd(28)} ${f(r.seconds, 2)} s — ${f(r.blocksPerSec, 0)} blocks/s, ` +
        `ratio to one core's native verify/s ${f(r.blocksPerSec / limits.ed25519NativePerSec, 2)}; ` +
        `CPU node ${f(r.nodeCpuSeconds, 2)} + servers ${f(r.serverCpuSeconds, 2)} core-s; peak RSS ${f(r.maxRssMb, 0)} MB`,
    );
  console.log("  target: worker pool ≥ 1.3");
}

/**
 * Disk per byte of chain: a store's bytes on disk (both LevelDB databases, logs and manifests
 * included) ÷ the chain's canonical bytes (every commit and block as encoded), for validator 0's
 * store as the devnet wrote it and for the full node's store after its catch-up.
 */
async function diskReport(full: DevnetSummary, syncedBytes: number): Promise<void> {
  const chainBytes = full.blockBytes + full.commitBytes;
  const validator = full.validators[0]!.store;
  const dbs = storeDatabases(validator);
  const [blocks, chain] = [await diskBytes(dbs.blocks), await diskBytes(dbs.chain)];
  console.log(
    `  store bytes ÷ chain bytes (${f(chainBytes / 1e6)} MB: blocks ${f(full.blockBytes / 1e6)} + commits ${f(full.commitBytes / 1e6)}):\n` +
      `    validator ${f((blocks + chain) / chainBytes, 3)} (blocks/ ${f(blocks / 1e6)} MB, chain/ ${f(chain / 1e6)} MB); ` +
      `synced full node ${f(syncedBytes / chainBytes, 3)} (${f(syncedBytes / 1e6)} MB)  (target ≤ 1.15)`,
  );
}

/**
 * Catch-up from an archive (DESIGN §10) of the full chain, exported once from validator 0's store
 * (cached beside the devnet): from the directory, and from nginx serving it, beside catch-up from
 * peers in the same run (measured here if the catch-up section did not run).
 */
async function archiveBench(
  limits: Limits,
  full: DevnetSummary,
  fromPeers: CatchUp | undefined,
): Promise<void> {
  const dir = join(CACHE, `archive-${BLOCKS}`);
  const exported = await exportArchiveOnce(full, dir);
  const peers = fromPeers ?? (await catchUp(full));
  const fromDir = await catchUp(full, false, dir);
  const work = await mkdtemp(join(tmpdir(), "dagsync-bench-nginx-"));
  let fromNginx: CatchUp | undefined;
  let nginxNote = "";
  if (existsSync(NGINX)) {
    const host = await startNginx(dir, work);
    try {
      fromNginx = await catchUp(full, false, host.url);
    } finally {
      await host.stop();
      await rm(work, { recursive: true, force: true });
    }
  } else nginxNote = ` (${NGINX} is not installed: apt-get install nginx)`;
  console.log(
    `\ncatch-up from an archive: ${exported.chunks} chunks, ${f(exported.bytes / 1e6)} MB, exported from validator 0's store`,
  );
  for (const [name, r] of [
    ["3 peers (serving processes)", peers],
    ["archive directory", fromDir],
    ["archive over HTTP (nginx)", fromNginx],
  ] as const) {
    if (r === undefined) {
      console.log(`  ${name.padEnd(30)} skipped${nginxNote}`);
      continue;
    }
    console.log(
      `  ${name.padEnd(30)} ${f(r.seconds, 2)} s — ${f(r.mbPerSec)} MB/s, ratio to LevelDB bound ${f(r.mbPerSec / limits.leveldbWriteMBps, 2)}; ` +
        `peak RSS ${f(r.maxRssMb, 0)} MB; CPU node ${f(r.nodeCpuSeconds, 2)} core-s`,
    );
  }
}

/** Exports validator 0's store to `dir` unless an archive of it is there already. */
async function exportArchiveOnce(
  full: DevnetSummary,
  dir: string,
): Promise<{ chunks: number; bytes: number }> {
  const manifestFile = join(dir, MANIFEST_FILE);
  if (!existsSync(manifestFile)) {
    await rm(dir, { recursive: true, force: true });
    const r = spawnSync(CLI, ["archive", "export", "--store", full.validators[0]!.store, "--out", dir], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    if (r.status !== 0) throw new Error("bench: archive export failed");
  }
  const m = parseManifest(readFileSync(manifestFile, "utf8"));
  return { chunks: m.chunks.length, bytes: m.chunks.reduce((n, c) => n + c.bytes, 0) };
}

/** Catch-up over shaped links (bench/network.ts), on the half chain. */
async function networkSection(): Promise<void> {
  const summary = await devnet(Math.round(BLOCKS / 2));
  const r = await networkBench({ cli: CLI, summary, workDir: CACHE, nodeOptions: SYNC_NODE_OPTIONS });
  console.log(`\n${formatNetworkReport(r)}`);
}

async function gossipBench(): Promise<void> {
  const seconds = QUICK ? 4 : 10;
  const quiet = await gossipLatency(seconds, false);
  const flooded = await gossipLatency(seconds, true);
  console.log(
    `\nBROADCAST delivery latency, 4-node mesh, ${4 * BLOCKS_PER_SECOND_PER_NODE} signed blocks/s for ${seconds} s` +
      ` (each node publishes ${BLOCKS_PER_SECOND_PER_NODE}/s; latency = publish → onBlock at each other node)`,
  );
  for (const [name, r] of [
    ["no flood", quiet],
    [`MEMPOOL flood ${FLOOD_FACTOR}× quota (${FLOOD_FACTOR * MEMPOOL_QUOTA_PER_SECOND} tx/s)`, flooded],
  ] as const)
    console.log(
      `  ${name.padEnd(40)} p50 ${f(r.p50Ms, 2)} ms  p99 ${f(r.p99Ms, 2)} ms  max ${f(r.maxMs, 1)} ms  ` +
        `(${r.deliveries}/${r.blocks * 3} delivered; mempool frames received ${r.mempoolReceived}, dropped ${r.mempoolDropped})`,
    );
  console.log(`  p99 ratio flood / no flood             ${f(flooded.p99Ms / quiet.p99Ms, 2)}`);
}

await main();
