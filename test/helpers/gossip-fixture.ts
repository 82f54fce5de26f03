/**
 * Helpers for the live-channel tests: a small devnet committee with its keys, a supply of valid
 * signed blocks of the committee's epoch, real GossipNodes on real grpc-js servers (loopback,
 * port 0), metric readers, waits and percentiles.
 */
import { Registry } from "prom-client";
import type { CommitteeView } from "../../src/core/committee.js";
import { type Ed25519Signer, NativeVerifier } from "../../src/crypto/index.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import { GossipMetrics, GossipNode, type GossipNodeConfig } from "../../src/gossip/index.js";
import type { GossipOptionsInput } from "../../src/gossip/options.js";
import { startGossipServer, type TlsFiles } from "../../src/node/gossip-server.js";
import { silentLogger } from "../../src/node/logger.js";

export interface CommitteeKeys {
  readonly protocol: Ed25519Signer;
  readonly network: Ed25519Signer;
}

/** The 4-validator devnet of the gossip tests, generated to its end; its committee and keys. */
export function smallChain(seed = 9): {
  chain: DevnetChain;
  committee: CommitteeView;
  keys: CommitteeKeys[];
} {
  const chain = new DevnetChain({
    validators: 4,
    epochs: 1,
    commitsPerEpoch: 5,
    txsPerBlock: 1,
    txBytes: 16,
    seed,
  });
  for (const _ of chain.commits());
  const committee = chain.currentCommittee;
  const keys = chain.keysByEpoch.get(committee.epoch);
  if (keys === undefined) throw new Error(`no keys for epoch ${committee.epoch}`);
  return { chain, committee, keys };
}

/** Valid signed blocks of the chain's current epoch, as many as asked (the epoch is frozen). */
export class BlockSupply {
  private buffered: Uint8Array[] = [];

  constructor(private readonly chain: DevnetChain) {
    chain.freezeEpoch();
  }

  next(): Uint8Array {
    while (this.buffered.length === 0) {
      this.chain.produceRound();
      this.buffered = this.chain.lastRoundBlocks.map((b) => b.bytes);
    }
    return this.buffered.shift()!;
  }

  take(n: number): Uint8Array[] {
    return Array.from({ length: n }, () => this.next());
  }
}

export interface RunningGossip {
  readonly node: GossipNode;
  readonly registry: Registry;
  readonly metrics: GossipMetrics;
  readonly port: number;
  readonly address: string;
  stop(): Promise<void>;
}

export interface StartGossipInput {
  readonly chainId: string;
  readonly key: Ed25519Signer;
  readonly committee: CommitteeView | (() => CommitteeView);
  readonly extraKeys?: readonly Uint8Array[];
  readonly options?: GossipOptionsInput;
  readonly tls?: TlsFiles;
  readonly tlsCa?: Buffer;
  /** Listen on this address (default 127.0.0.1:0); `false` for a dial-only node. */
  readonly listen?: string | false;
}

/** A GossipNode with its own registry, listening on a real grpc-js server unless `listen` is false. */
export async function startGossip(input: StartGossipInput): Promise<RunningGossip> {
  const registry = new Registry();
  const metrics = new GossipMetrics(registry);
  const committee = input.committee;
  const config: GossipNodeConfig = {
    chainId: input.chainId,
    networkKey: input.key,
    committee: typeof committee === "function" ? committee : () => committee,
    extraKeys: input.extraKeys,
    verifier: new NativeVerifier(),
    log: silentLogger(),
    metrics,
    options: input.options,
    tlsCa: input.tlsCa,
  };
  const node = new GossipNode(config);
  if (input.listen === false)
    return {
      node,
      registry,
      metrics,
      port: 0,
      address: "",
      stop: async () => node.stop(),
    };
  const server = await startGossipServer(node, input.listen ?? "127.0.0.1:0", input.tls);
  return {
    node,
    registry,
    metrics,
    port: server.port,
    address: `127.0.0.1:${server.port}`,
    stop: server.stop,
  };
}

/** Polls `check` every 10 ms until it is true; throws naming `what` after `timeoutMs`. */
export async function waitFor(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Like waitFor, for an async check (a metric read). */
export async function waitForAsync(
  check: () => Promise<boolean>,
  what: string,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The value of one counter or gauge series (0 when absent). */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  if (metric === undefined) throw new Error(`no metric ${name}`);
  let sum = 0;
  for (const v of metric.values as { value: number; labels: Record<string, string | number> }[])
    if (Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)) sum += v.value;
  return sum;
}

/** The p-th percentile (0..100) of `values`, nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
