/**
 * `dagsync serve`: a validator serving its store over StateSync and Admin until SIGINT/SIGTERM;
 * optionally with the live channel (`--gossip-listen`) and a producer hook that appends to the
 * store while it is served (on a devnet, `--live` passes src/devnet/live.ts). The node layer
 * never imports the devnet: the CLI plugs it in.
 */
import type { Logger } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import type { ArchiveWriterOptions } from "../archive/options.js";
import { type CommitteeView, toHex } from "../core/index.js";
import { createVerifier, type Ed25519Signer, readKeyFile } from "../crypto/index.js";
import { Discovery, PeerBook } from "../discovery/index.js";
import { GossipMetrics, GossipNode } from "../gossip/index.js";
import { SyncServer } from "../server/index.js";
import type { ServerOptionsInput } from "../server/options.js";
import { type ApplyUnit, Store, SubDagFeed } from "../store/index.js";
import { startArchiveLoop } from "./archive-loop.js";
import { advertisedAddress, registerDiscoveryMetrics } from "./discovery-wiring.js";
import { startGossipServer, type TlsFiles } from "./gossip-server.js";
import { startMetricsServer } from "./metrics-http.js";

/** What a producer hook gets once the server (and the live channel, if any) is up. */
export interface ProducerContext {
  readonly store: Store;
  readonly log: Logger;
  /** The live channel, when `--gossip-listen` is set. */
  readonly gossip: GossipNode | undefined;
  /** Call after each apply with what was applied: SubscribeCommits followers get it from memory. */
  readonly onApplied: (units: readonly ApplyUnit[]) => void;
}

/**
 * Something that appends to the store while it is served (e.g. the devnet's live producer,
 * src/devnet/live.ts). Started after the ports are bound; stopped before the server.
 */
export type Producer = (context: ProducerContext) => Promise<RunningProducer>;

export interface RunningProducer {
  /** The committee of the epoch being produced (admits its keys on the live channel). */
  readonly committee: CommitteeView;
  stop(): Promise<void>;
}

export interface ServeConfig {
  readonly store: string;
  readonly listen: string;
  readonly metrics?: string | undefined;
  readonly log: Logger;
  readonly gossipListen?: string | undefined;
  /** This validator's network key: the live channel's identity, and the key its advertised info is signed with. */
  readonly networkKeyFile?: string | undefined;
  /**
   * The sync address advertised to peers (GetKnownPeers `self`); default: this validator's
   * committee sync address, else the listen address.
   */
  readonly advertise?: string | undefined;
  /** Network keys admitted on the gossip port beyond the committee (full nodes). */
  readonly allowKeys?: readonly Uint8Array[] | undefined;
  /** Appends to the store while serving (`serve --live` passes the devnet producer). */
  readonly producer?: Producer | undefined;
  readonly tls?: TlsFiles | undefined;
  /** Server limits (admission caps etc.); unset ones keep DEFAULT_SERVER_OPTIONS. */
  readonly serverOptions?: ServerOptionsInput | undefined;
  /**
   * Keep an archive (DESIGN §10) current while serving: export to `out` at start and every
   * `options.exportIntervalMs` (`serve --archive-out`, `--archive-interval`).
   */
  readonly archive?: { readonly out: string; readonly options?: Partial<ArchiveWriterOptions> } | undefined;
}

export interface RunningService {
  readonly port: number;
  readonly gossipPort: number | undefined;
  stop(): Promise<void>;
}

export async function startServe(config: ServeConfig): Promise<RunningService> {
  const { log } = config;
  const store = await Store.open(config.store, { mustExist: true });
  const cleanup: (() => Promise<void>)[] = [async () => store.close()];
  const stopAll = async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  };
  try {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    // The live producer publishes each applied batch: caught-up subscribers get it from memory.
    // (The server applies its own subscriber limits to each stream.)
    const feed = new SubDagFeed(store);
    const chainId = store.genesis.genesis.chainId;
    let committee: CommitteeView = (await store.getCommittee(store.watermarks.epoch))!;
    const networkKey: Ed25519Signer | undefined =
      config.networkKeyFile === undefined ? undefined : await readKeyFile(config.networkKeyFile);
    // Peer exchange (DESIGN §9): a validator answers with the committee's and its callers' infos,
    // and advertises itself when it has a network key. It dials nobody for peers.
    const book = new PeerBook({ chainId, verifier: createVerifier("native"), ownKey: networkKey?.publicKey });
    registerDiscoveryMetrics(registry, () => book);
    const discovery = new Discovery({
      book,
      chainId,
      network: { getKnownPeers: () => Promise.reject(new Error("a validator does not ask for peers")) },
    });
    discovery.setCommittee(committee.epoch, committee.validators);
    const server = new SyncServer({
      store,
      log,
      registry,
      feed,
      tls: config.tls,
      options: config.serverOptions,
      discovery: {
        self: () => discovery.self(),
        peers: (limit) => discovery.peers(limit),
        onCaller: (_peer, signedInfo) => discovery.offer(signedInfo),
      },
    });
    const port = await server.start(config.listen);
    if (networkKey !== undefined) {
      const mine = committee.validators.find((v) => toHex(v.networkKey) === toHex(networkKey.publicKey));
      discovery.setAdvertise({
        signer: networkKey,
        syncAddress: config.advertise ?? mine?.syncAddress ?? advertisedAddress(config.listen, port),
        gossipAddress:
          config.gossipListen === undefined ? undefined : (mine?.gossipAddress ?? config.gossipListen),
      });
    }
    cleanup.push(() => server.stop());
    if (config.metrics !== undefined) {
      const m = await startMetricsServer(registry, config.metrics);
      cleanup.push(m.close);
    }

    let gossip: GossipNode | undefined;
    let gossipPort: number | undefined;
    if (config.gossipListen !== undefined) {
      if (networkKey === undefined) throw new Error("--gossip-listen needs --network-key FILE");
      gossip = new GossipNode({
        chainId: store.genesis.genesis.chainId,
        networkKey,
        committee: () => committee,
        extraKeys: config.allowKeys,
        verifier: createVerifier("native"),
        log,
        metrics: new GossipMetrics(registry),
        tlsCa: config.tls?.ca,
      });
      const g = await startGossipServer(gossip, config.gossipListen, config.tls);
      gossipPort = g.port;
      cleanup.push(g.stop);
      // Validators dial the members whose key sorts after theirs; the others dial them.
      const mine = toHex(networkKey.publicKey);
      for (const v of committee.validators)
        if (toHex(v.networkKey) > mine && v.gossipAddress !== "") gossip.dial(v.gossipAddress, v.networkKey);
    }

    if (config.producer !== undefined) {
      const producer = await config.producer({
        store,
        log,
        gossip,
        onApplied: (units) => feed.publish(units),
      });
      committee = producer.committee;
      discovery.setCommittee(committee.epoch, committee.validators);
      cleanup.push(() => producer.stop());
    }

    if (config.archive !== undefined) {
      // Started last, stopped first (cleanup runs in reverse): it reads the store until it stops.
      const archive = startArchiveLoop({
        store,
        log,
        out: config.archive.out,
        options: config.archive.options,
      });
      cleanup.push(() => archive.stop());
    }

    const marks = store.watermarks;
    log.info(
      {
        listen: config.listen,
        port,
        gossipPort,
        metrics: config.metrics,
        chain: store.genesis.genesis.chainId,
        commits: `${marks.lowestAvailable}..${marks.highestSynced}`,
        live: config.producer !== undefined,
        archive: config.archive?.out,
      },
      "serving",
    );
    return {
      port,
      gossipPort,
      async stop() {
        log.info("draining");
        await stopAll();
        log.info("stopped");
      },
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/** Runs until SIGINT/SIGTERM, then stops gracefully. A second signal exits at once. */
export function untilSignal(stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const handler = () => {
      if (stopping) process.exit(130);
      stopping = true;
      stop().then(resolve, resolve);
    };
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
  });
}
