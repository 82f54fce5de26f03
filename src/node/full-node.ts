/**
 * A full node: the sync engine over a store, optionally serving what it has synced (so that
 * others can sync from it), with metrics and an Admin status that shows peers and bans.
 */
import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { DagsyncError, parseGenesis } from "../core/index.js";
import { createVerifier, readKeyFile, type VerifierBackend } from "../crypto/index.js";
import { GossipMetrics, GossipNode } from "../gossip/index.js";
import { SyncServer } from "../server/index.js";
import { Store, type TrustedCheckpoint } from "../store/index.js";
import {
  PeerClientNetwork,
  SyncEngine,
  SyncMetrics,
  type SyncNetwork,
  type SyncOptions,
} from "../sync/index.js";
import { nodeStatusOf } from "./admin-status.js";
import { readCheckpoint } from "./checkpoint.js";
import { startGossipServer, type TlsFiles } from "./gossip-server.js";
import { startMetricsServer } from "./metrics-http.js";
import { NearTipCache, type NearTipCacheOptions } from "./near-tip-cache.js";

export interface FullNodeConfig {
  readonly store: string;
  /** genesis.pb to read; or `genesis`, its bytes (one of them is required). */
  readonly genesisFile?: string | undefined;
  readonly genesis?: Uint8Array | undefined;
  /** A checkpoint file to start from; or `checkpoint`, already read and checked. */
  readonly checkpointFile?: string | undefined;
  readonly checkpoint?: TrustedCheckpoint | undefined;
  /** Metrics go here (default: a fresh registry with Node's default metrics). */
  readonly registry?: Registry | undefined;
  readonly peers: readonly string[];
  readonly listen?: string | undefined;
  readonly metrics?: string | undefined;
  readonly log: Logger;
  readonly sync?: Partial<SyncOptions> | undefined;
  readonly verifier?: VerifierBackend | undefined;
  readonly network?: SyncNetwork | undefined;
  /** Limits of the near-tip block cache (defaults in near-tip-cache.ts). */
  readonly nearTipCache?: Partial<NearTipCacheOptions> | undefined;
  /** Live channel: this node's network key file; with it the node dials every validator's gossip address. */
  readonly networkKeyFile?: string | undefined;
  /** Also accept gossip connections on this address. */
  readonly gossipListen?: string | undefined;
  /** TLS: `ca` to trust when dialing peers; `cert` and `key` to serve TLS on this node's ports. */
  readonly tls?:
    | {
        readonly cert?: Buffer | undefined;
        readonly key?: Buffer | undefined;
        readonly ca?: Buffer | undefined;
      }
    | undefined;
}

export class GenesisFileError extends DagsyncError {
  override readonly name = "GenesisFileError";
  constructor(message: string) {
    super("bad_genesis", message);
  }
}

export async function readGenesisFile(path: string): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new GenesisFileError(
      `--genesis ${path}: ${code === "ENOENT" ? "file not found" : `cannot be read (${code})`}`,
    );
  }
  try {
    parseGenesis(bytes);
  } catch (e) {
    throw new GenesisFileError(`--genesis ${path}: not a valid genesis.pb (${(e as Error).message})`);
  }
  return bytes;
}

export interface FullNode {
  readonly engine: SyncEngine;
  readonly store: Store;
  readonly registry: Registry;
  readonly port: number | undefined;
  readonly nearTip: NearTipCache;
  readonly gossip: GossipNode | undefined;
  /** Resolves when the engine stops (or, with untilSynced, when synced). */
  run(untilSynced: boolean): Promise<void>;
  stop(): Promise<void>;
}

export async function startFullNode(config: FullNodeConfig): Promise<FullNode> {
  if (config.peers.length === 0)
    throw new Error("no --peer given: name at least one validator's sync address");
  let genesis: Uint8Array;
  if (config.genesis !== undefined) {
    parseGenesis(config.genesis);
    genesis = config.genesis;
  } else if (config.genesisFile !== undefined) genesis = await readGenesisFile(config.genesisFile);
  else throw new GenesisFileError("no genesis: give the genesis.pb file or its bytes");
  const checkpoint =
    config.checkpoint ??
    (config.checkpointFile === undefined
      ? undefined
      : await readCheckpoint(config.checkpointFile, parseGenesis(genesis).digest));
  const store = await Store.open(config.store, { genesis, checkpoint });
  if (checkpoint !== undefined && store.watermarks.lowestAvailable !== checkpoint.index + 1)
    config.log.info({ store: config.store }, "store already initialized: --checkpoint ignored");
  let registry = config.registry;
  if (registry === undefined) {
    registry = new Registry();
    collectDefaultMetrics({ register: registry });
  }
  const metrics = new SyncMetrics(registry);
  const network =
    config.network ?? new PeerClientNetwork(config.tls?.ca === undefined ? {} : { tlsCa: config.tls.ca });
  const nearTip = new NearTipCache(config.nearTipCache);
  const engine = new SyncEngine({
    nearTipBlocks: (digest) => nearTip.get(digest),
    onBlocksApplied: (refs, epoch) => nearTip.applied(refs, epoch),
    store,
    network,
    peers: config.peers,
    verifier: createVerifier(config.verifier ?? "native"),
    log: config.log,
    options: config.sync,
    metrics,
  });
  let server: SyncServer | undefined;
  let port: number | undefined;
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  const t = config.tls;
  const serverTls: TlsFiles | undefined =
    t?.cert !== undefined && t.key !== undefined ? { cert: t.cert, key: t.key, ca: t.ca } : undefined;
  let gossip: GossipNode | undefined;
  let gossipServer: Awaited<ReturnType<typeof startGossipServer>> | undefined;
  try {
    if (config.networkKeyFile !== undefined) {
      const networkKey = await readKeyFile(config.networkKeyFile);
      const initial = (await store.getCommittee(store.watermarks.epoch))!;
      gossip = new GossipNode({
        chainId: store.genesis.genesis.chainId,
        networkKey,
        committee: () => engine.currentCommittee() ?? initial,
        verifier: createVerifier(config.verifier ?? "native"),
        log: config.log,
        metrics: new GossipMetrics(registry),
        tlsCa: config.tls?.ca,
      });
      gossip.onBlock((block) => nearTip.add(block));
      if (config.gossipListen !== undefined)
        gossipServer = await startGossipServer(gossip, config.gossipListen, serverTls);
      // Dial every validator's gossip address. No expected key: keys rotate across epochs, and
      // the handshake admits only the current committee's keys anyway (a node still catching up
      // is refused by, and refuses, later committees until it reaches their epoch; it retries).
      for (const v of initial.validators) if (v.gossipAddress !== "") gossip.dial(v.gossipAddress);
    }
    if (config.listen !== undefined) {
      server = new SyncServer({
        store,
        log: config.log,
        registry,
        feed: engine.broadcast,
        tls: serverTls,
        onPushCommit: (peer, req) => engine.onPushCommit(peer, Number(req.highestSyncedCommit)),
        status: () => nodeStatusOf(engine.status(), "full"),
      });
      port = await server.start(config.listen);
    }
    if (config.metrics !== undefined) metricsServer = await startMetricsServer(registry, config.metrics);
  } catch (e) {
    await server?.stop();
    await store.close();
    throw e;
  }
  let stopped = false;
  return {
    engine,
    store,
    registry,
    port,
    nearTip,
    gossip,
    run: (untilSynced) => engine.run(untilSynced),
    async stop() {
      if (stopped) return;
      stopped = true;
      await engine.stop();
      network.close();
      gossip?.stop();
      await gossipServer?.stop();
      await server?.stop();
      await metricsServer?.close();
      await store.close();
    },
  };
}
