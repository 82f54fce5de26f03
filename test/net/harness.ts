/**
 * The network harness (issue 15): N real `dagsync` processes, each on its own loopback address
 * (127.S.T.11…, so per-address limits and discovery see distinct hosts), every directed link
 * between them through a user-space link proxy (latency, jitter, bandwidth, stalls, resets,
 * partitions: see links.ts), seeded so that a failing run can be replayed.
 *
 * Wiring. Each node listens on its real ports (public port + REAL_PORT_OFFSET) and a LinkProxy
 * holds its public address, the one genesis and discovery advertise. The proxy knows the sending
 * node by the connection's source address: sync clients bind theirs with `--local-address`, and
 * grpc-js (the live channel's dialer), which cannot, is sent through a per-node CONNECT relay
 * (`grpc_proxy`) that dials from the node's address. The harness itself talks to nodes on their
 * real ports, around the proxies, so that faults never blind the checks.
 *
 * Checks (`finish`): every node reaches the same digest at a common height, no honest node banned
 * another (sync bans and live-channel blocks, from /metrics), every store passes the integrity walk
 * (links, quorums, digests, watermarks), and no process crashed or logged an error. A failure
 * carries the seed and each node's last status.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type Availability, PeerClient } from "../../src/client/index.js";
import { sha256, toHex } from "../../src/core/index.js";
import { Ed25519Signer, writeKeyFile } from "../../src/crypto/index.js";
import type { DevnetOptions } from "../../src/devnet/chain.js";
import { metricSum, type Proc, ProcGroup, scrapeMetrics, sleep, waitUntil } from "../helpers/e2e-process.js";
import { type DevnetFixture, makeDevnet, removeDir, tempDir } from "../helpers/server.js";
import { ConnectRelay, type LinkProfile, LinkProxy, Network } from "./index.js";
import { walkStore } from "./integrity.js";

/** Real listeners sit this far above the public (proxied) port. */
export const REAL_PORT_OFFSET = 10_000;
/** Every node's Prometheus endpoint, on its own address. */
const METRICS_PORT = 19_300;
/** A full node's public sync port (on its own address). */
const FULL_NODE_PORT = 9_200;

export interface HarnessOptions {
  /** Seed of the link randomness (default: DAGSYNC_NET_SEED, else random; printed on failure). */
  readonly seed?: number;
  /** First three octets of every node's address, unique per test file (e.g. "127.0.15"). */
  readonly subnet: string;
  /** The pre-generated chain (validators default 4). */
  readonly devnet: Partial<DevnetOptions>;
  /** Live round interval of the validators, ms (default 400). */
  readonly roundMs?: number;
  /** Profile of every link not set otherwise (default: perfect). */
  readonly defaultLink?: Partial<LinkProfile>;
  /** Full nodes the validators admit on their live channel (keys made up front; default 4). */
  readonly maxFullNodes?: number;
  /** Extra arguments of every validator's `serve`. */
  readonly validatorArgs?: readonly string[];
}

export interface NetNode {
  readonly name: string;
  readonly kind: "validator" | "full";
  readonly ip: string;
  /** The address others know (through the proxy). */
  readonly publicSync: string;
  /** The real listener (the harness's way in, around the proxy). */
  readonly realSync: string;
  readonly metrics: string;
  readonly store: string;
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  proc: Proc;
  /** Set while the harness has deliberately stopped, killed or paused the node. */
  expectedDown: boolean;
  /** Exits the harness caused (a kill, a restart). */
  readonly restarts: number[];
}

export interface FullNodeOptions {
  /** Names of the nodes whose public sync address is passed as `--peer` (default: validator 0). */
  readonly bootstrap?: readonly string[];
  /** Join the live channel (network key; default true). */
  readonly live?: boolean;
  readonly extraArgs?: readonly string[];
  /** Runs once the node's address is on the network and before its process starts (its links). */
  readonly beforeStart?: (h: NetHarness) => void;
}

export class NetHarness {
  readonly nodes = new Map<string, NetNode>();
  private readonly group = new ProcGroup();
  private readonly proxies: LinkProxy[] = [];
  private readonly relays: ConnectRelay[] = [];
  private readonly fullNodeKeys: string[] = [];
  private genesis!: Uint8Array;
  private readonly lastStatus = new Map<string, string>();
  private fullNodes = 0;
  /** Problems of processes the harness killed and replaced (their output is gone with them). */
  private readonly earlierProblems: string[] = [];
  /** The validators' tip when the harness was up: the scenario must see the chain grow past it. */
  private startTip = 0;

  private constructor(
    readonly seed: number,
    readonly options: HarnessOptions,
    readonly network: Network,
    readonly root: string,
    readonly devnet: DevnetFixture,
  ) {}

  /** Generates the devnet on per-validator addresses and starts its validators, live, behind proxies. */
  static async start(options: HarnessOptions): Promise<NetHarness> {
    const seed = options.seed ?? Number(process.env.DAGSYNC_NET_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const validators = options.devnet.validators ?? 4;
    const hosts = Array.from({ length: validators }, (_, i) => `${options.subnet}.${11 + i}`);
    const devnet = await makeDevnet({ ...options.devnet, validators, hosts, basePort: 9_100 });
    const network = new Network({
      seed: String(seed),
      ...(options.defaultLink ? { defaultProfile: options.defaultLink } : {}),
    });
    const h = new NetHarness(seed, options, network, await tempDir("dagsync-net-"), devnet);
    h.genesis = new Uint8Array(await readFile(devnet.summary.genesisFile));
    for (let i = 0; i < (options.maxFullNodes ?? 4); i++) {
      const signer = Ed25519Signer.generate();
      const file = join(h.root, `full-${i}.key`);
      await writeKeyFile(file, signer);
      h.fullNodeKeys.push(file);
      h.allowKeys.push(toHex(signer.publicKey));
    }
    try {
      await Promise.all(devnet.summary.validators.map((v) => h.startValidator(v.index)));
      h.startTip = await h.tip();
    } catch (e) {
      throw await h.fail(e);
    }
    return h;
  }

  private readonly allowKeys: string[] = [];

  private async wireNode(
    name: string,
    ip: string,
    publicAddresses: readonly string[],
  ): Promise<ConnectRelay> {
    this.network.addNode(name, ip);
    for (const address of publicAddresses) {
      const [host, port] = splitHostPort(address);
      const proxy = new LinkProxy({
        network: this.network,
        node: name,
        host,
        port,
        targetHost: host,
        targetPort: port + REAL_PORT_OFFSET,
      });
      await proxy.listen();
      this.proxies.push(proxy);
    }
    const relay = new ConnectRelay({ localAddress: ip });
    await relay.listen();
    this.relays.push(relay);
    return relay;
  }

  private childEnv(relay: ConnectRelay): NodeJS.ProcessEnv {
    // grpc-js dials through the relay, which dials from this node's address; nothing bypasses it.
    return { grpc_proxy: relay.url, no_grpc_proxy: "none.invalid", DAGSYNC_LOG_LEVEL: "info" };
  }

  private async startValidator(index: number): Promise<NetNode> {
    const v = this.devnet.summary.validators[index]!;
    const name = `v${index}`;
    const ip = splitHostPort(v.syncAddress)[0];
    const relay = await this.wireNode(name, ip, [v.syncAddress, v.gossipAddress]);
    const real = (a: string) => `${ip}:${splitHostPort(a)[1] + REAL_PORT_OFFSET}`;
    const args = [
      "serve",
      ...["--store", v.store, "--listen", real(v.syncAddress), "--gossip-listen", real(v.gossipAddress)],
      ...["--network-key", v.networkKeyFile, "--metrics", `${ip}:${METRICS_PORT}`, "--local-address", ip],
      ...this.allowKeys.flatMap((k) => ["--allow-key", k]),
      // Validators push new commits to the full nodes' addresses (those not up yet just fail).
      ...this.allowKeys.flatMap((_, n) => ["--follower", this.fullNodeAddress(n)]),
      ...[
        "--live",
        this.devnet.dir,
        "--index",
        String(index),
        "--round-ms",
        String(this.options.roundMs ?? 400),
      ],
      ...(this.options.validatorArgs ?? []),
    ];
    return this.launch({
      name,
      kind: "validator",
      ip,
      publicSync: v.syncAddress,
      realSync: real(v.syncAddress),
      metrics: `${ip}:${METRICS_PORT}`,
      store: v.store,
      args,
      env: this.childEnv(relay),
    });
  }

  /** Starts `dagsync sync` on the next full-node address, serving and advertising itself. */
  async addFullNode(name: string, o: FullNodeOptions = {}): Promise<NetNode> {
    const n = this.fullNodes++;
    const key = this.fullNodeKeys[n];
    if (key === undefined)
      throw new Error(`harness: more than ${this.fullNodeKeys.length} full nodes (maxFullNodes)`);
    const publicSync = this.fullNodeAddress(n);
    const ip = splitHostPort(publicSync)[0];
    const realSync = `${ip}:${FULL_NODE_PORT + REAL_PORT_OFFSET}`;
    const relay = await this.wireNode(name, ip, [publicSync]);
    o.beforeStart?.(this);
    const store = join(this.root, name);
    const bootstrap = (o.bootstrap ?? ["v0"]).map((b) => this.node(b).publicSync);
    const args = [
      "sync",
      ...["--store", store, "--genesis", this.devnet.summary.genesisFile],
      ...bootstrap.flatMap((p) => ["--peer", p]),
      ...["--listen", realSync, "--advertise", publicSync, "--local-address", ip],
      ...["--metrics", `${ip}:${METRICS_PORT}`],
      ...(o.live === false ? [] : ["--network-key", key]),
      ...(o.extraArgs ?? []),
    ];
    try {
      return await this.launch({
        name,
        kind: "full",
        ip,
        publicSync,
        realSync,
        metrics: `${ip}:${METRICS_PORT}`,
        store,
        args,
        env: this.childEnv(relay),
      });
    } catch (e) {
      throw await this.fail(e);
    }
  }

  private async launch(spec: Omit<NetNode, "proc" | "expectedDown" | "restarts">): Promise<NetNode> {
    const node: NetNode = { ...spec, proc: this.spawn(spec), expectedDown: false, restarts: [] };
    this.nodes.set(node.name, node);
    await this.waitServing(node);
    return node;
  }

  private spawn(spec: Pick<NetNode, "name" | "args" | "env">): Proc {
    return this.group.cli(spec.name, spec.args, spec.env);
  }

  private async waitServing(node: NetNode, timeoutMs = 30_000): Promise<Availability> {
    return waitUntil(
      async () => {
        if (node.proc.exit !== undefined)
          throw new Error(`${node.name} exited (${JSON.stringify(node.proc.exit)})\n${node.proc.output()}`);
        return this.availability(node.name).catch(() => undefined);
      },
      `${node.name} serving on ${node.realSync}`,
      timeoutMs,
      100,
    );
  }

  /** One-way latency of every directed link between known nodes, drawn per link (seeded) from [lo, hi] ms, with jitter. */
  longLinks(lo: number, hi: number, jitterMs: number): void {
    const names = this.network.nodes();
    for (const src of names)
      for (const dst of names)
        if (src !== dst) {
          const link = this.network.link(src, dst);
          this.network.setLink(src, dst, {
            latencyMs: lo + Math.floor(link.random() * (hi - lo + 1)),
            jitterMs,
          });
        }
  }

  /** The public sync address of the n-th full node. */
  private fullNodeAddress(n: number): string {
    return `${this.options.subnet}.${21 + n}:${FULL_NODE_PORT}`;
  }

  node(name: string): NetNode {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`harness: no node ${name}`);
    return n;
  }

  names(kind?: NetNode["kind"]): string[] {
    return [...this.nodes.values()].filter((n) => kind === undefined || n.kind === kind).map((n) => n.name);
  }

  /** GetCommitAvailability on the node's real address (around its proxy). */
  async availability(name: string): Promise<Availability> {
    const client = new PeerClient(this.node(name).realSync, { smallCallTimeoutMs: 2_000 });
    try {
      return await client.getCommitAvailability();
    } finally {
      client.close();
    }
  }

  /** Heads of every node that is up. */
  async heads(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    await Promise.all(
      [...this.nodes.values()]
        .filter((n) => !n.expectedDown)
        .map(async (n) => {
          const a = await this.availability(n.name).catch(() => undefined);
          if (a !== undefined) out.set(n.name, a.highest);
        }),
    );
    return out;
  }

  /** The highest commit any live validator holds. */
  async tip(): Promise<number> {
    const heads = await this.heads();
    return Math.max(0, ...this.names("validator").map((v) => heads.get(v) ?? 0));
  }

  /** Waits until every node in `names` is within `slack` commits of the validators' tip. */
  async waitNearTip(names: readonly string[], withinMs: number, slack = 2): Promise<number> {
    const started = Date.now();
    await waitUntil(
      async () => {
        const heads = await this.heads();
        const tip = Math.max(0, ...this.names("validator").map((v) => heads.get(v) ?? 0));
        return names.every((n) => (heads.get(n) ?? -1) >= tip - slack);
      },
      `${names.join(", ")} within ${slack} commits of the tip`,
      withinMs,
      200,
    );
    return Date.now() - started;
  }

  /** SIGKILL (crash) and, after `downMs`, the same command again on the same store. */
  async crashAndRestart(name: string, downMs: number): Promise<void> {
    const node = this.node(name);
    if (node.proc.exit !== undefined)
      throw new Error(`${name} had already exited (${JSON.stringify(node.proc.exit)}) before the kill`);
    // What the killed process logged, and its bans, are checked at the end like everyone's.
    this.earlierProblems.push(...logProblems(node));
    const bans = metricSum(await scrapeMetrics(node.metrics).catch(() => ""), "dagsync_peer_bans_total");
    if (bans > 0) this.earlierProblems.push(`${name} banned ${bans} peer(s) before it was killed`);
    node.expectedDown = true;
    node.proc.signal("SIGKILL");
    await node.proc.exited;
    node.restarts.push(Date.now());
    await sleep(downMs);
    node.proc = this.spawn(node);
    await this.waitServing(node);
    node.expectedDown = false;
  }

  /** SIGSTOP for `ms`, then SIGCONT. */
  async pause(name: string, ms: number): Promise<void> {
    const node = this.node(name);
    node.expectedDown = true;
    node.proc.signal("SIGSTOP");
    try {
      await sleep(ms);
    } finally {
      node.proc.signal("SIGCONT");
      node.expectedDown = false;
    }
  }

  /** Admin/GetStatus of every node, one line each, kept as the "last status" of a failure report. */
  async snapshot(): Promise<string> {
    const lines: string[] = [];
    for (const n of this.nodes.values()) {
      const client = new PeerClient(n.realSync, { smallCallTimeoutMs: 2_000 });
      try {
        const s = await client.getStatus();
        const peers = s.peers
          .map(
            (p) =>
              `${p.address}[${p.source}${p.working ? ",working" : ""}${p.banned ? ",BANNED" : ""} h=${p.highest}${p.lastError ? ` err=${p.lastError.slice(0, 60)}` : ""}]`,
          )
          .join(" ");
        const line = `${n.name} ${n.ip}: ${s.syncState} synced=${s.highestSyncedCommit} target=${s.targetCommit}${s.stallReason ? ` stall=${s.stallReason}` : ""} peers: ${peers}`;
        this.lastStatus.set(n.name, line);
      } catch (e) {
        if (!this.lastStatus.has(n.name)) this.lastStatus.set(n.name, `${n.name}: no status (${String(e)})`);
      } finally {
        client.close();
      }
      lines.push(this.lastStatus.get(n.name)!);
    }
    return lines.join("\n");
  }

  /** Wraps an error with the seed, each node's last status and the link statistics. */
  async fail(e: unknown): Promise<Error> {
    const status = await this.snapshot().catch(() => [...this.lastStatus.values()].join("\n"));
    const message = e instanceof Error ? e.message : String(e);
    const err = new Error(
      `${message}\n--- network seed ${this.seed} (replay: DAGSYNC_NET_SEED=${this.seed}) ---\n${status}\n--- links ---\n${describeLinks(this.network)}`,
    );
    if (e instanceof Error && e.stack !== undefined) err.stack = `${err.message}\n${e.stack}`;
    return err;
  }

  /** Runs a scenario body, turning any failure into one that carries the seed and the statuses. */
  async run(body: (h: NetHarness) => Promise<void>): Promise<void> {
    try {
      await body(this);
    } catch (e) {
      throw await this.fail(e);
    }
  }

  /**
   * The end-of-scenario checks. Heals the network, waits until every node reaches the validators'
   * lowest head (`convergeMs`), compares the digest of that commit on every node, reads every
   * node's bans, stops every process and checks its exit and log, then walks every store.
   * `dishonest` lists sync addresses whose bans are expected (an attacker's).
   */
  async finish(o: { convergeMs: number; allowedBlocks?: (reason: string) => boolean }): Promise<void> {
    try {
      this.network.heal();
      const target = await waitUntil(
        async () => {
          const heads = await this.heads();
          return heads.size === this.nodes.size
            ? Math.min(...this.names("validator").map((v) => heads.get(v)!))
            : false;
        },
        "every node answering",
        15_000,
        200,
      );
      // Live production went on through the scenario: recovery checks against a frozen tip
      // would pass on their own.
      assert.ok(
        target >= this.startTip + 10,
        `the validators' lowest head ${target} is at least 10 commits past the start's tip ${this.startTip}`,
      );
      await waitUntil(
        async () => {
          const heads = await this.heads();
          return [...this.nodes.keys()].every((n) => (heads.get(n) ?? -1) >= target);
        },
        `every node at commit ${target} or above`,
        o.convergeMs,
        200,
      );
      const digests = new Map<string, string>();
      for (const n of this.nodes.values()) {
        const client = new PeerClient(n.realSync, { smallCallTimeoutMs: 5_000 });
        try {
          const r = await client.fetchCommits(target, target);
          // A server may answer past `end` (to a commit it can certify): the first is `target`.
          assert.ok(r.commits.length >= 1, `${n.name} serves commit ${target}`);
          digests.set(n.name, toHex(sha256(r.commits[0]!)));
        } finally {
          client.close();
        }
      }
      assert.equal(
        new Set(digests.values()).size,
        1,
        `one digest at commit ${target}: ${JSON.stringify([...digests])}`,
      );

      for (const n of this.nodes.values()) {
        const text = await scrapeMetrics(n.metrics);
        assert.equal(metricSum(text, "dagsync_peer_bans_total"), 0, `${n.name} banned no peer`);
        const blocks = text
          .split("\n")
          .filter((l) => l.startsWith("dagsync_gossip_peer_blocks_total{") && !l.endsWith(" 0"))
          .filter((l) => !(o.allowedBlocks?.(/reason="([^"]*)"/.exec(l)?.[1] ?? "") ?? false));
        assert.deepEqual(blocks, [], `${n.name} blocked no honest live-channel peer`);
      }
      await this.snapshot();
    } catch (e) {
      const failure = await this.fail(e); // while the nodes still answer
      await this.stopAll();
      throw failure;
    }
    await this.stopAll();
    const problems: string[] = [...this.earlierProblems];
    for (const n of this.nodes.values()) {
      const exit = n.proc.exit;
      if (exit === undefined || exit.code !== 0) problems.push(`${n.name} exited ${JSON.stringify(exit)}`);
      problems.push(...logProblems(n));
    }
    if (problems.length > 0) throw await this.fail(new Error(`processes:\n${problems.join("\n")}`));
    for (const n of this.nodes.values()) {
      try {
        await walkStore(n.store, this.genesis);
      } catch (e) {
        throw await this.fail(e);
      }
    }
  }

  private async stopAll(): Promise<void> {
    for (const n of this.nodes.values()) n.proc.signal("SIGCONT");
    await this.group.stopAll(10_000);
  }

  /** Stops everything and removes the temporary folders. */
  async close(): Promise<void> {
    await this.stopAll();
    await Promise.all([...this.proxies.map((p) => p.close()), ...this.relays.map((r) => r.close())]);
    if (process.env.DAGSYNC_NET_KEEP === undefined) {
      await removeDir(this.root);
      await this.devnet.remove();
    }
  }
}

/** stderr lines that are not JSON log records, and records at level error (50) or above. */
export function logProblems(node: NetNode): string[] {
  const out: string[] = [];
  for (const line of node.proc.stderr().split("\n")) {
    if (line.trim() === "") continue;
    let record: { level?: number; msg?: string } | undefined;
    try {
      record = JSON.parse(line) as { level?: number; msg?: string };
    } catch {
      // Node's own warnings (DEP0123 from grpc-js's TLS servername) are not ours to fail on.
      if (!/^\(node:\d+\) \[DEP/.test(line) && !line.includes("--trace-deprecation"))
        out.push(`${node.name} stderr: ${line.slice(0, 300)}`);
      continue;
    }
    if ((record.level ?? 0) >= 50) out.push(`${node.name} logged an error: ${line.slice(0, 300)}`);
  }
  return out;
}

/** Links that carried traffic or were shaped, one line each. */
function describeLinks(network: Network): string {
  return network
    .stats()
    .map((l) => JSON.stringify(l))
    .join("\n");
}

function splitHostPort(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  return [address.slice(0, i), Number(address.slice(i + 1))];
}
