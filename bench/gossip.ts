/**
 * BROADCAST delivery latency in a 4-node mesh, with and without a MEMPOOL flood (DESIGN.md §5).
 *
 * Four validator GossipNodes (real grpc-js servers on loopback, full mesh) run in this process and
 * each publishes its own valid signed blocks at `BLOCKS_PER_SECOND_PER_NODE`. Latency is the time
 * from `publishBlock` on the author's node to `onBlock` on each of the three others (one clock).
 * The flood comes from a separate process (bench/gossip-flooder.ts), an allowed full node that
 * pushes transactions at `FLOOD_FACTOR` × the MEMPOOL quota into node 0, which relays what its
 * quota admits to the rest of the mesh: the flooder's CPU does not share our event loop.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Registry } from "prom-client";
import type { CommitteeView } from "../src/core/committee.js";
import { parseSignedBlock, toHex } from "../src/core/index.js";
import { Ed25519Signer, NativeVerifier } from "../src/crypto/index.js";
import { DevnetChain } from "../src/devnet/chain.js";
import { DEFAULT_GOSSIP_OPTIONS, GossipMetrics, GossipNode } from "../src/gossip/index.js";
import { startGossipServer } from "../src/node/gossip-server.js";
import { silentLogger } from "../src/node/logger.js";

export const BLOCKS_PER_SECOND_PER_NODE = 25;
export const FLOOD_FACTOR = 10;
/** The flooder's network key (a fixed seed, so the mesh can allow it without a handshake of files). */
export const FLOODER_SEED = new Uint8Array(32).fill(7);

/** The mesh's committee and keys: a deterministic 4-validator devnet, frozen in its first epoch. */
export function benchCommittee(): { chain: DevnetChain; committee: CommitteeView } {
  const chain = new DevnetChain({ validators: 4, epochs: 1, commitsPerEpoch: 1_000_000, seed: 77 });
  chain.freezeEpoch();
  return { chain, committee: chain.currentCommittee };
}

export interface LatencyResult {
  readonly blocks: number;
  readonly deliveries: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly mempoolReceived: number;
  readonly mempoolDropped: number;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

async function metric(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  let sum = 0;
  for (const v of (m?.values ?? []) as { value: number; labels: Record<string, string | number> }[])
    if (Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)) sum += v.value;
  return sum;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One measurement: `seconds` of steady BROADCAST load, with the flooder running if `flood`. */
export async function gossipLatency(seconds: number, flood: boolean): Promise<LatencyResult> {
  const { chain, committee } = benchCommittee();
  const keys = chain.keysByEpoch.get(committee.epoch)!;
  const flooderKey = new Ed25519Signer(FLOODER_SEED);
  const perNode = Math.round(BLOCKS_PER_SECOND_PER_NODE * seconds);
  // Pre-generate and sign every block so that production costs nothing during the measurement.
  const byAuthor: { bytes: Uint8Array; digest: string }[][] = keys.map(() => []);
  while (byAuthor.some((b) => b.length < perNode)) {
    chain.produceRound();
    for (const b of chain.lastRoundBlocks)
      byAuthor[b.author]!.push({ bytes: b.bytes, digest: toHex(parseSignedBlock(b.bytes).digest) });
  }

  const nodes = await Promise.all(
    keys.map(async (k) => {
      const registry = new Registry();
      const node = new GossipNode({
        chainId: chain.chainId,
        networkKey: k.network,
        committee: () => committee,
        extraKeys: [flooderKey.publicKey],
        verifier: new NativeVerifier(),
        log: silentLogger(),
        metrics: new GossipMetrics(registry),
      });
      const server = await startGossipServer(node, "127.0.0.1:0", undefined);
      return { node, registry, server, address: `127.0.0.1:${server.port}` };
    }),
  );
  for (let i = 0; i < nodes.length; i++)
    for (let j = 0; j < i; j++) nodes[i]!.node.dial(nodes[j]!.address, nodes[j]!.node.publicKey);
  const meshPeers = () => Math.min(...nodes.map((n) => n.node.peers().length));
  for (let t = 0; meshPeers() < nodes.length - 1; t++) {
    if (t > 500) throw new Error("the gossip mesh did not form within 10 s");
    await sleep(20);
  }

  let flooder: ChildProcess | undefined;
  if (flood) {
    flooder = spawn(
      process.execPath,
      ["--import", "tsx", fileURLToPath(new URL("gossip-flooder.ts", import.meta.url)), nodes[0]!.address],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    const want = nodes.length; // 3 validators + the flooder
    for (let t = 0; nodes[0]!.node.peers().length < want; t++) {
      if (t > 500) throw new Error("the flooder did not connect within 10 s");
      await sleep(20);
    }
    await sleep(1000); // let the flood reach steady state (quota burst spent, backlogs full)
  }

  const publishedAt = new Map<string, number>();
  const latencies: number[] = [];
  const unsubscribe = nodes.map((n) =>
    n.node.onBlock((block) => {
      const sent = publishedAt.get(toHex(block.digest));
      if (sent !== undefined) latencies.push(performance.now() - sent);
    }),
  );
  const mempoolBefore = await Promise.all(
    nodes.map(async (n) => ({
      received: await metric(n.registry, "dagsync_gossip_frames_received_total", { lane: "mempool" }),
      dropped: await metric(n.registry, "dagsync_gossip_frames_dropped_total", { lane: "mempool" }),
    })),
  );

  const intervalMs = 1000 / BLOCKS_PER_SECOND_PER_NODE;
  const started = performance.now();
  for (let k = 0; k < perNode; k++) {
    const due = started + k * intervalMs;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    for (const [i, n] of nodes.entries()) {
      const block = byAuthor[i]![k]!;
      publishedAt.set(block.digest, performance.now());
      n.node.publishBlock(block.bytes);
    }
  }
  const expected = perNode * nodes.length * (nodes.length - 1);
  for (let t = 0; latencies.length < expected && t < 250; t++) await sleep(20);
  for (const u of unsubscribe) u();

  let mempoolReceived = 0;
  let mempoolDropped = 0;
  for (const [i, n] of nodes.entries()) {
    mempoolReceived +=
      (await metric(n.registry, "dagsync_gossip_frames_received_total", { lane: "mempool" })) -
      mempoolBefore[i]!.received;
    mempoolDropped +=
      (await metric(n.registry, "dagsync_gossip_frames_dropped_total", { lane: "mempool" })) -
      mempoolBefore[i]!.dropped;
  }
  if (flooder !== undefined) {
    const f = flooder;
    await new Promise<void>((resolve) => {
      if (f.exitCode !== null) return resolve();
      f.once("exit", () => resolve());
      f.kill("SIGTERM");
    });
  }
  await Promise.all(nodes.map((n) => n.server.stop()));
  latencies.sort((a, b) => a - b);
  return {
    blocks: perNode * nodes.length,
    deliveries: latencies.length,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies[latencies.length - 1] ?? Number.NaN,
    mempoolReceived,
    mempoolDropped,
  };
}

/** The MEMPOOL quota the flood is a multiple of, transactions per second. */
export const MEMPOOL_QUOTA_PER_SECOND = DEFAULT_GOSSIP_OPTIONS.mempool.quota.perSecond;
