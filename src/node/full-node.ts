/**
 * A full node: the sync engine over a store, optionally serving what it has synced (so that
 * others can sync from it), with metrics and an Admin status that shows peers and bans.
 */
import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { type ArchiveReaderOptions, ArchiveSource } from "../archive/index.js";
import { DagsyncError, parseGenesis } from "../core/index.js";
import {
  createVerifier,
  DEFAULT_VERIFY_POOL_OPTIONS,
  type Ed25519Signer,
  readKeyFile,
  type VerifierBackend,
  VerifyPool,
} from "../crypto/index.js";
import {
  Discovery,
  type DiscoveryLoopOptions,
  type DiscoveryOptions,
  PeerBook,
  type PeerSource,
} from "../discovery/index.js";
import { GossipMetrics, GossipNode } from "../gossip/index.js";
import { SyncServer } from "../server/index.js";
import { Store, type TrustedCheckpoint } from "../store/index.js";
import {
  ArchiveAwareNetwork,
  PeerClientNetwork,
  SyncEngine,
  SyncMetrics,
  type SyncNetwork,
  type SyncOptions,
} from "../sync/index.js";
import { nodeStatusOf } from "./admin-status.js";
import { readCheckpoint } from "./checkpoint.js";
import { advertisedAddress, exchangeNetwork, registerDiscoveryMetrics } from "./discovery-wiring.js";
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
  /** Bootstrap peers (`--peer`): optional when the committee has sync addresses or the store knows peers. */
  readonly peers: readonly string[];
  readonly listen?: string | undefined;
  /** With `listen` and a network key: the sync address others are told (default: the listen address). */
  readonly advertise?: string | undefined;
  /**
   * Sync from the `peers` given and nothing else (`--no-discovery`): no committee addresses, no
   * stored peers, no peer exchange. Default false.
   */
  readonly noDiscovery?: boolean | undefined;
  /**
   * Archives to read history from (DESIGN §10): directories or http(s):// base URLs. Each is one
   * more source in the balancer, with its manifest's range, verified like a peer.
   */
  readonly archives?: readonly string[] | undefined;
  /** Archive reader limits and timeouts (src/archive/reader-options.ts). */
  readonly archive?: Partial<ArchiveReaderOptions> | undefined;
  /** Discovery limits and intervals (DESIGN §9). */
  readonly discovery?: (Partial<DiscoveryOptions> & Partial<DiscoveryLoopOptions>) | undefined;
  /** GetKnownPeers, injected in tests (default: real peer clients). */
  readonly discoveryNetwork?: import("../discovery/index.js").DiscoveryNetwork | undefined;
  readonly metrics?: string | undefined;
  readonly log: Logger;
  readonly sync?: Partial<SyncOptions> | undefined;
  readonly verifier?: VerifierBackend | undefined;
  /**
   * Most worker threads that check signatures off the event loop (src/crypto/verify-pool.ts),
   * started as work needs them: every fetched certifier block and, with
   * `sync.verifyBlockSignatures`, every fetched block. Default: the machine's cores. 0 checks them
   * inline, on the event loop.
   */
  readonly verifyWorkers?: number | undefined;
  readonly network?: SyncNetwork | undefined;
  /** Limits of the near-tip block cache (defaults in near-tip-cache.ts). */
  readonly nearTipCache?: Partial<NearTipCacheOptions> | undefined;
  /** Source address of this node's outgoing sync connections (peers, exchange). Default: the OS's choice. */
  readonly localAddress?: string | undefined;
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
  readonly discovery: Discovery;
  /** Resolves when the engine stops (or, with untilSynced, when synced). */
  run(untilSynced: boolean): Promise<void>;
  stop(): Promise<void>;
}

/** No peer source at all: no committee sync address, no stored peer and no --peer. */
export class NoPeersError extends DagsyncError {
  override readonly name = "NoPeersError";
  constructor(noDiscovery = false) {
    super(
      "no_peers",
      noDiscovery
        ? "no peer to sync from: --no-discovery uses only --peer, and none was given; name at least one node's sync address with --peer HOST:PORT"
        : "no peer to sync from: the committee carries no sync addresses, the store remembers no peers, " +
            "and no --peer was given; name at least one node's sync address with --peer HOST:PORT",
    );
  }
}

export async function startFullNode(config: FullNodeConfig): Promise<FullNode> {
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
  let bookRef: PeerBook | undefined;
  registerDiscoveryMetrics(registry, () => bookRef);
  const clientOptions = {
    ...(config.tls?.ca === undefined ? {} : { tlsCa: config.tls.ca }),
    ...(config.localAddress === undefined ? {} : { localAddress: config.localAddress }),
  };
  const peerNetwork = config.network ?? new PeerClientNetwork(clientOptions);
  // Archives (DESIGN §10) answer for their own addresses; every other address is a peer.
  const archives = (config.archives ?? []).map(
    (location) =>
      new ArchiveSource({
        location,
        chainId: store.genesis.genesis.chainId,
        genesisDigest: store.genesis.digest,
        options: config.archive,
        onProblem: (e, chunk) =>
          config.log.warn(
            { archive: location, code: e.code, chunk: chunk?.file },
            chunk === undefined
              ? `archive ${location}: ${e.message}`
              : `archive ${location}: chunk ${chunk.first}..${chunk.last} is bad (${e.code}): ${e.message}; nothing of it is used (other sources serve its commits; it is read again in 5 min)`,
          ),
      }),
  );
  const network = archives.length === 0 ? peerNetwork : new ArchiveAwareNetwork(peerNetwork, archives);
  const nearTip = new NearTipCache(config.nearTipCache);
  // Discovery (DESIGN §9): committee, bootstrap and the peers the store remembers.
  let networkKey: Ed25519Signer | undefined;
  const initialCommittee = await store.getCommittee(store.watermarks.epoch);
  const chainId = store.genesis.genesis.chainId;
  let book: PeerBook;
  let discovery: Discovery;
  let engine: SyncEngine | undefined;
  const initialPeers = new Map<PeerSource, string[]>();
  try {
    if (config.networkKeyFile !== undefined) networkKey = await readKeyFile(config.networkKeyFile);
    book = new PeerBook({
      chainId,
      verifier: createVerifier(config.verifier ?? "native"),
      ownKey: networkKey?.publicKey,
      options: config.discovery,
    });
    discovery = new Discovery({
      book,
      chainId,
      network: config.discoveryNetwork ?? exchangeNetwork(clientOptions),
      // --no-discovery neither reads nor writes the remembered peers (the store's peers table).
      store: config.noDiscovery === true ? undefined : store,
      log: config.log,
      options: config.discovery,
      onPeersChanged: (source, addresses) => {
        if (engine === undefined) initialPeers.set(source, addresses);
        else engine.setPeers(source, addresses);
      },
    });
    const refused = discovery.addBootstrap(config.peers);
    if (refused.length > 0) throw new Error(`--peer ${refused.join(", ")}: expected HOST:PORT`);
    if (config.noDiscovery !== true) {
      if (initialCommittee !== undefined)
        discovery.setCommittee(initialCommittee.epoch, initialCommittee.validators);
      await discovery.load();
    }
  } catch (e) {
    await store.close();
    throw e;
  }
  const peerEntries = [
    ...[...initialPeers].flatMap(([source, addresses]) => addresses.map((address) => ({ address, source }))),
    ...archives.map((a) => ({ address: a.name, source: "archive" as const })),
  ];
  if (peerEntries.length === 0) {
    await store.close();
    throw new NoPeersError(config.noDiscovery === true);
  }
  // At each epoch change the committee source follows the store's committee of the new epoch.
  let following = false;
  const followCommittee = async () => {
    if (following || config.noDiscovery === true || store.watermarks.epoch <= book.epoch) return;
    following = true;
    try {
      const epoch = store.watermarks.epoch;
      const c = await store.getCommittee(epoch);
      if (c !== undefined) {
        config.log.info(
          { epoch, validators: c.validators.length },
          "committee changed: peers follow the new committee",
        );
        discovery.setCommittee(epoch, c.validators);
      }
    } catch {
      // the store is closing; the next apply retries
    } finally {
      following = false;
    }
  };
  const workers = config.verifyWorkers ?? DEFAULT_VERIFY_POOL_OPTIONS.workers;
  const pool = workers === 0 ? undefined : new VerifyPool({ workers, backend: config.verifier ?? "native" });
  const running = new SyncEngine({
    nearTipBlocks: (digest) => nearTip.get(digest),
    onBlocksApplied: (refs, epoch) => {
      nearTip.applied(refs, epoch);
      if (store.watermarks.epoch > book.epoch) void followCommittee();
    },
    onNeedPeers: config.noDiscovery === true ? undefined : () => void discovery.exchangeNow(),
    store,
    network,
    peers: peerEntries,
    verifier: createVerifier(config.verifier ?? "native"),
    verifySignatures: pool === undefined ? undefined : (items) => pool.verify(items),
    log: config.log,
    options: config.sync,
    metrics,
  });
  engine = running;
  bookRef = book;
  let server: SyncServer | undefined;
  let port: number | undefined;
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  const t = config.tls;
  const serverTls: TlsFiles | undefined =
    t?.cert !== undefined && t.key !== undefined ? { cert: t.cert, key: t.key, ca: t.ca } : undefined;
  let gossip: GossipNode | undefined;
  let gossipServer: Awaited<ReturnType<typeof startGossipServer>> | undefined;
  try {
    if (networkKey !== undefined) {
      const initial = initialCommittee!;
      gossip = new GossipNode({
        chainId: store.genesis.genesis.chainId,
        networkKey,
        committee: () => running.currentCommittee() ?? initial,
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
        feed: running.broadcast,
        tls: serverTls,
        onPushCommit: (peer, req) => running.onPushCommit(peer, Number(req.highestSyncedCommit)),
        status: () => nodeStatusOf(running.status(), "full"),
        discovery: {
          self: () => discovery.self(),
          peers: (limit) => discovery.peers(limit),
          onCaller: (_peer, signedInfo) => discovery.offer(signedInfo),
        },
      });
      port = await server.start(config.listen);
      if (networkKey !== undefined)
        discovery.setAdvertise({
          signer: networkKey,
          syncAddress: advertisedAddress(config.listen, port, config.advertise),
          gossipAddress: config.gossipListen,
        });
    }
    if (config.metrics !== undefined) metricsServer = await startMetricsServer(registry, config.metrics);
    if (config.noDiscovery !== true) discovery.start();
  } catch (e) {
    await discovery.stop();
    await server?.stop();
    await pool?.close();
    await store.close();
    throw e;
  }
  let stopped = false;
  return {
    engine: running,
    store,
    registry,
    port,
    nearTip,
    gossip,
    discovery,
    run: (untilSynced) => running.run(untilSynced),
    async stop() {
      if (stopped) return;
      stopped = true;
      await running.stop();
      await discovery.stop();
      network.close();
      gossip?.stop();
      await gossipServer?.stop();
      await server?.stop();
      await metricsServer?.close();
      await pool?.close();
      await store.close();
    },
  };
}
