/**
 * The "network" section of `npm run bench` (issue 15): catch-up over shaped links.
 *
 * Four `dagsync serve` processes, one per devnet validator store (each a full copy of the chain),
 * listen on their own loopback addresses (127.0.16.11…14); a LinkProxy (test/net) stands in front
 * of each at a public port of the same address and shapes every connection to it by its source
 * address. The syncing `dagsync sync` process dials from 127.0.16.21 (`--local-address`), knows
 * the four public addresses only (`--peer`, `--no-discovery`) and exits once synced, into an
 * empty store. The servers stay up across the runs; each run gets a fresh Network and fresh
 * proxies, so its counters are its own.
 *
 * Caps are chosen so that links, not CPU, are the limit: R is the catch-up rate through the same
 * proxies with no cap (payload MB/s, as the node reports it: block and commit bytes applied per
 * second of its run), and each peer's cap is B = R / 8, so four peers together offer R / 2. Every
 * cap is symmetric (both directions of the link). Ratios, as issue 15 defines them:
 *   - 4 peers at B:                   catch-up MB/s ÷ 4B          (target ≥ 0.8)
 *   - 3 peers at B, one at B/10:      catch-up MB/s ÷ (3B + B/10) (target ≥ 0.8)
 *   - 4 peers at B, 200 ms RTT each:  catch-up MB/s ÷ 4B          (target ≥ 0.7)
 * The cap counts wire bytes (HTTP/2 and protobuf framing, commits, anything fetched twice), the
 * rate counts payload, so a ratio of 1 is out of reach by the framing overhead.
 *
 * The proxy pauses reading a connection above `highWaterBytes` queued in one direction, which
 * caps a connection at about highWaterBytes / one-way latency, like a TCP window. Linux sizes real
 * windows to the path (tcp_rmem allows up to 32 MiB here), so each run sizes the proxies' bound to
 * twice the bandwidth-delay product of its links (never below the proxy's default): the long-link
 * run then measures dagsync's windows and deadlines, not the emulator's.
 */
import { spawn } from "node:child_process";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DevnetSummary } from "../src/devnet/write.js";
import { DEFAULT_HIGH_WATER_BYTES, type LinkProfile, LinkProxy, Network } from "../test/net/index.js";
import { peakMemory, processesCpuSeconds } from "./process-stats.js";
import { type ServeProcess, startServeProcess, stopProcesses } from "./serve-process.js";

const SUBNET = "127.0.16";
const PEERS = 4;
const peerIp = (i: number) => `${SUBNET}.${11 + i}`;
const peerName = (i: number) => `peer${i}`;
const NODE = "node";
const NODE_IP = `${SUBNET}.21`;
/** Each peer's cap is this fraction of the uncapped rate R (4 peers: R / 2 together). */
export const CAP_FRACTION = 1 / 8;
/** The slow peer's cap, as a fraction of B. */
export const SLOW_FRACTION = 1 / 10;
/** Round-trip time of every link in the long-link run, ms (half each way). */
export const LONG_RTT_MS = 200;
export const TARGETS = { even: 0.8, slowPeer: 0.8, longLinks: 0.7 } as const;
/** A run that takes longer than this has hung: it is killed and the section fails. */
const RUN_TIMEOUT_MS = 10 * 60_000;

export interface NetworkBenchOptions {
  /** bin/dagsync of the checkout under test. */
  readonly cli: string;
  readonly summary: DevnetSummary;
  /** Directory for the syncing node's (temporary) store. */
  readonly workDir: string;
  /** V8 options for the syncing node (DAGSYNC_NODE_OPTIONS), in place of bin/dagsync's. */
  readonly nodeOptions?: string | undefined;
}

export interface ShapedRun {
  commits: number;
  blocks: number;
  seconds: number;
  /** Block and commit bytes applied per second of the node's run, MB/s (the node's own report). */
  mbPerSec: number;
  /** Bytes each peer sent the node over its link (from Network.stats; undefined without proxies), MB. */
  peerMb: number[] | undefined;
  maxRssMb: number;
  peakAnonMb: number;
  nodeCpuSeconds: number;
  serverCpuSeconds: number;
  /** CPU of this process over the run (the link proxies, all in it), core-seconds. */
  proxyCpuSeconds: number;
  /**
   * From the node's start to the first byte a peer sent it, s (undefined without proxies): the
   * node's `seconds` include the part of this after its own start-up (first height queries,
   * first FetchCommits round).
   */
  firstByteSeconds: number | undefined;
  /** Wire bytes from all peers per second, from the first byte to the node's exit, MB/s. */
  wireMbPerSec: number | undefined;
  /** The proxies' per-connection queue bound of the run, bytes. */
  highWaterBytes: number | undefined;
}

export interface NetworkReport {
  chainMb: number;
  blocks: number;
  /** Straight to the servers' listeners, no proxy: what the proxies cost. */
  direct: ShapedRun;
  /** Through the proxies, no cap: R. */
  loopback: ShapedRun;
  /** B, bytes per second. */
  capBytesPerSec: number;
  even: ShapedRun;
  slowPeer: ShapedRun;
  longLinks: ShapedRun;
}

/** Runs the section: R, then the three shaped runs with B = R × CAP_FRACTION. */
export async function networkBench(o: NetworkBenchOptions): Promise<NetworkReport> {
  const stores = o.summary.validators.slice(0, PEERS).map((v) => v.store);
  if (stores.length < PEERS) throw new Error(`bench network: the devnet has fewer than ${PEERS} validators`);
  const servers = await Promise.all(stores.map((store, i) => startServeProcess(o.cli, store, peerIp(i))));
  try {
    const run = (profile: (peer: number) => Partial<LinkProfile> | undefined) => syncRun(o, servers, profile);
    const direct = await run(() => undefined);
    const loopback = await run(() => ({}));
    const b = loopback.mbPerSec * 1e6 * CAP_FRACTION;
    const even = await run(() => ({ bandwidthBytesPerSec: b }));
    const slowPeer = await run((i) => ({ bandwidthBytesPerSec: i === PEERS - 1 ? b * SLOW_FRACTION : b }));
    const longLinks = await run(() => ({ bandwidthBytesPerSec: b, latencyMs: LONG_RTT_MS / 2 }));
    return {
      chainMb: o.summary.blockBytes / 1e6,
      blocks: o.summary.blocks,
      direct,
      loopback,
      capBytesPerSec: b,
      even,
      slowPeer,
      longLinks,
    };
  } finally {
    await stopProcesses(servers.map((s) => s.child));
  }
}

let logRuns = 0;
const portOf = (address: string) => Number(address.slice(address.lastIndexOf(":") + 1));

/**
 * One catch-up into an empty store: through a proxy per server shaped by `profile` (both
 * directions of the node↔peer link), or straight to the servers when `profile` gives undefined.
 */
async function syncRun(
  o: NetworkBenchOptions,
  servers: readonly ServeProcess[],
  profile: (peer: number) => Partial<LinkProfile> | undefined,
): Promise<ShapedRun> {
  const profiles = servers.map((_, i) => profile(i));
  const shaped = profiles.every((p) => p !== undefined);
  const network = new Network({ seed: "bench-network" });
  network.addNode(NODE, NODE_IP);
  for (let i = 0; i < servers.length; i++) network.addNode(peerName(i), peerIp(i));
  // Twice the bandwidth-delay product of the longest link (see the comment at the top).
  let highWaterBytes = DEFAULT_HIGH_WATER_BYTES;
  profiles.forEach((p, i) => {
    if (p === undefined) return;
    network.setPair(NODE, peerName(i), p);
    const bdp = ((p.bandwidthBytesPerSec ?? 0) * (p.latencyMs ?? 0)) / 1000;
    highWaterBytes = Math.max(highWaterBytes, Math.ceil(2 * bdp));
  });
  const proxies = shaped
    ? servers.map(
        (s, i) =>
          new LinkProxy({
            network,
            node: peerName(i),
            host: peerIp(i),
            port: 0,
            targetHost: peerIp(i),
            targetPort: portOf(s.address),
            highWaterBytes,
          }),
      )
    : [];
  const store = join(o.workDir, "network-node");
  await rm(store, { recursive: true, force: true });
  try {
    const peers = shaped
      ? await Promise.all(proxies.map(async (p) => `${(await p.listen()).host}:${p.address.port}`))
      : servers.map((s) => s.address);
    const args = [
      "sync",
      ...["--store", store, "--genesis", o.summary.genesisFile],
      ...["--exit-when-synced", "--no-discovery", "--local-address", NODE_IP],
      ...peers.flatMap((p) => ["--peer", p]),
    ];
    const serverCpuBefore = processesCpuSeconds(servers.map((s) => s.child.pid));
    const ownCpuBefore = process.cpuUsage();
    const child = spawn(o.cli, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: {
        ...process.env,
        ...(o.nodeOptions === undefined ? {} : { DAGSYNC_NODE_OPTIONS: o.nodeOptions }),
      },
    });
    const spawnedAt = performance.now();
    let firstByteAt: number | undefined;
    const delivered = () => network.stats().reduce((n, s) => n + (s.dst === NODE ? s.bytesDelivered : 0), 0);
    const firstByte = setInterval(() => {
      if (firstByteAt === undefined && delivered() > 0) firstByteAt = performance.now();
    }, 20);
    const memory = peakMemory(child.pid ?? 0);
    const guard = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS);
    let log = "";
    child.stderr.on("data", (d: Buffer) => {
      log += d;
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    // BENCH_NET_LOG=PREFIX keeps each run's node log (PREFIX-<n>.log), to see where time went.
    if (process.env.BENCH_NET_LOG !== undefined)
      await writeFile(`${process.env.BENCH_NET_LOG}-${++logRuns}.log`, log);
    clearTimeout(guard);
    clearInterval(firstByte);
    const exitedAt = performance.now();
    const peaks = memory.stop();
    const ownCpu = process.cpuUsage(ownCpuBefore);
    const serverCpuSeconds = processesCpuSeconds(servers.map((s) => s.child.pid)) - serverCpuBefore;
    const line = log.split("\n").find((l) => l.includes("synced: every commit"));
    if (code !== 0 || line === undefined)
      throw new Error(`bench network: sync failed (exit ${code}):\n${log.slice(-2000)}`);
    const r = JSON.parse(line) as {
      commits: number;
      blocks: number;
      seconds: number;
      mbPerSec: number;
      maxRssMb: number;
      cpuSeconds: number;
    };
    const stats = network.stats();
    const sent = (i: number) =>
      stats.find((s) => s.src === peerName(i) && s.dst === NODE)?.bytesDelivered ?? 0;
    return {
      commits: r.commits,
      blocks: r.blocks,
      seconds: r.seconds,
      mbPerSec: r.mbPerSec,
      peerMb: shaped ? servers.map((_, i) => sent(i) / 1e6) : undefined,
      maxRssMb: r.maxRssMb,
      peakAnonMb: peaks.anonMb,
      nodeCpuSeconds: r.cpuSeconds,
      serverCpuSeconds,
      proxyCpuSeconds: (ownCpu.user + ownCpu.system) / 1e6,
      firstByteSeconds: shaped && firstByteAt !== undefined ? (firstByteAt - spawnedAt) / 1000 : undefined,
      wireMbPerSec:
        shaped && firstByteAt !== undefined
          ? delivered() / 1e6 / ((exitedAt - firstByteAt) / 1000)
          : undefined,
      highWaterBytes: shaped ? highWaterBytes : undefined,
    };
  } finally {
    await Promise.all(proxies.map((p) => p.close()));
    await rm(store, { recursive: true, force: true });
  }
}

const f = (n: number, d = 1) => n.toFixed(d);

/** The section's lines, in the format of the other sections of bench/run.ts. */
export function formatNetworkReport(r: NetworkReport): string {
  const b = r.capBytesPerSec / 1e6;
  const detail = (x: ShapedRun) =>
    `peak RSS ${f(x.maxRssMb, 0)} MB (anonymous ${f(x.peakAnonMb, 0)} MB); ` +
    `CPU node ${f(x.nodeCpuSeconds, 2)} + servers ${f(x.serverCpuSeconds, 2)} + proxies ${f(x.proxyCpuSeconds, 2)} core-s`;
  const perPeer = (x: ShapedRun, slow?: number) =>
    (x.peerMb ?? []).map((mb, i) => `${peerName(i)}${i === slow ? " (slow)" : ""} ${f(mb)} MB`).join(", ");
  const wire = (x: ShapedRun) => (x.peerMb ?? []).reduce((s, mb) => s + mb, 0);
  const lines = [
    `catch-up over shaped links: a full node process syncing ${r.blocks} blocks (${f(r.chainMb)} MB) ` +
      `from ${PEERS} serving processes, each behind a link proxy (test/net) on its own loopback address`,
    `  direct, no proxies            ${f(r.direct.seconds, 2)} s — ${f(r.direct.mbPerSec)} MB/s; ${detail(r.direct)}`,
    `  through the proxies, no cap   ${f(r.loopback.seconds, 2)} s — ${f(r.loopback.mbPerSec)} MB/s = R; ${detail(r.loopback)}`,
    `  cap per peer B = R/8 = ${f(b, 2)} MB/s each way (4B = ${f(4 * b, 2)} MB/s)`,
  ];
  const cases = [
    ["4 peers at B", r.even, 4 * b, "4B", TARGETS.even, undefined],
    [
      "3 peers at B, 1 at B/10",
      r.slowPeer,
      (3 + SLOW_FRACTION) * b,
      "(3B + B/10)",
      TARGETS.slowPeer,
      PEERS - 1,
    ],
    [`4 peers at B, ${LONG_RTT_MS} ms RTT`, r.longLinks, 4 * b, "4B", TARGETS.longLinks, undefined],
  ] as const;
  for (const [name, x, capMb, capName, target, slow] of cases) {
    lines.push(
      `  ${name.padEnd(28)}  ${f(x.seconds, 2)} s — ${f(x.mbPerSec)} MB/s, ratio to ${capName} ${f(x.mbPerSec / capMb, 2)}` +
        `  (target ≥ ${target}); ${detail(x)}`,
      `    from each peer (wire, MB): ${perPeer(x, slow)}; total ${f(wire(x))} MB; ` +
        `first byte ${f(x.firstByteSeconds ?? Number.NaN, 2)} s after spawn, then ${f(x.wireMbPerSec ?? Number.NaN, 2)} MB/s on the wire ` +
        `(${f((x.wireMbPerSec ?? Number.NaN) / capMb, 2)} of the cap)` +
        `${x.highWaterBytes !== undefined && x.highWaterBytes > DEFAULT_HIGH_WATER_BYTES ? `; proxy queue bound ${f(x.highWaterBytes / 1024 / 1024, 2)} MiB` : ""}`,
    );
  }
  return lines.join("\n");
}
