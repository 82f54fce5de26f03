/**
 * The library's composition (DESIGN §11): a full node and a sync server for a program that embeds
 * dagsync, e.g. an executor that consumes verified sub-DAGs in-process. Nothing here writes to
 * stdout, installs signal handlers or touches a global registry: the logger (pino-compatible) and
 * the prom-client Registry are the caller's, defaulting to a silent logger and a private registry.
 */
import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { Registry } from "prom-client";
import { DagsyncError, parseGenesis, parseSignedBlock } from "../core/index.js";
import type { VerifierBackend } from "../crypto/index.js";
import {
  type CommittedSubDag,
  CommittedSubDagSchema,
  SignedBlockSchema,
} from "../gen/dagsync/v1/types_pb.js";
import { type ServerOptionsInput, SyncServer } from "../server/index.js";
import { type CommittedSubDagView, Store, type SubDagFeed, type TrustedCheckpoint } from "../store/index.js";
import type { SyncOptions, SyncPhase, SyncStall } from "../sync/index.js";
import { type CheckpointFile, checkCheckpoint, checkTrustedCheckpoint } from "./checkpoint.js";
import { readGenesisFile, startFullNode } from "./full-node.js";
import { silentLogger } from "./logger.js";

/** A checkpoint as `dagsync checkpoint export` writes it, or already decoded. */
export type CheckpointInput = TrustedCheckpoint | CheckpointFile;

export interface FullNodeOptions {
  /** The store directory (created on first use). */
  readonly store: string;
  /** The encoded Genesis (genesis.pb's bytes), or the path of genesis.pb. */
  readonly genesis: Uint8Array | string;
  /**
   * Bootstrap sync addresses ("host:port"). Default none: the committee's sync addresses (from
   * genesis, then from each epoch change) and peer exchange find the rest (DESIGN §9), unless
   * `discovery` is false.
   */
  readonly peers?: readonly string[] | undefined;
  /** Find peers beyond `peers` (committee addresses, remembered peers, peer exchange). Default true. */
  readonly discovery?: boolean | undefined;
  /**
   * Archives of the chain's history (DESIGN §10): directories or http(s):// base URLs, from
   * `dagsync archive export`. Each is one more source, verified like a peer. Default none.
   */
  readonly archives?: readonly string[] | undefined;
  /** Start from this trusted checkpoint instead of genesis (history below it is never fetched). */
  readonly checkpoint?: CheckpointInput | undefined;
  /** A pino-compatible logger. Default: silent. */
  readonly logger?: Logger | undefined;
  /** Where metrics are registered. Default: a private Registry (no default process metrics). */
  readonly registry?: Registry | undefined;
  readonly options?:
    | {
        /** Sync engine options; unset ones keep DEFAULT_SYNC_OPTIONS. */
        readonly sync?: Partial<SyncOptions> | undefined;
        /** Also serve the synced chain (StateSync + Admin) on this address, e.g. "127.0.0.1:0". */
        readonly listen?: string | undefined;
        readonly verifier?: VerifierBackend | undefined;
        /** Threads checking signatures off the event loop. Default: the cores; 0: inline. */
        readonly verifyWorkers?: number | undefined;
      }
    | undefined;
}

export interface FullNodeStatus {
  readonly phase: SyncPhase;
  readonly highestSynced: number;
  readonly lowestAvailable: number;
  readonly epoch: number;
  /** Highest commit a peer advertised. */
  readonly target: number;
  readonly usablePeers: number;
  /** Why no source can serve the next commit, while that lasts. */
  readonly stall: SyncStall | undefined;
  /** The port the node serves on, with `options.listen`. */
  readonly port: number | undefined;
  /** Set when the engine stopped for good (a SyncError, with a code). */
  readonly error: DagsyncError | undefined;
}

export interface EmbeddedFullNode extends AsyncDisposable {
  /**
   * Verified, decoded sub-DAGs from commit `from` on: replayed from the store, then live. Ends when
   * `signal` aborts or the node stops; fails with a SubscriptionError (`out_of_range` below the
   * lowest available commit, `not_found`, `lagged` with `resumeFrom`), or, when the sync engine
   * stops for good, with its error (a SyncError such as `checkpoint_mismatch` or `store_write`,
   * also in `status().error`).
   */
  subDags(
    from: number,
    options?: { readonly signal?: AbortSignal | undefined },
  ): AsyncIterable<CommittedSubDag>;
  status(): FullNodeStatus;
  stop(): Promise<void>;
}

/** Decodes a stored sub-DAG (canonical bytes) into the generated message types. */
export function decodeSubDag(view: CommittedSubDagView): CommittedSubDag {
  return create(CommittedSubDagSchema, {
    commit: view.commit.commit,
    blocks: view.blocks.map((bytes) => {
      const b = parseSignedBlock(bytes);
      return create(SignedBlockSchema, { block: b.block, signature: b.signature });
    }),
  });
}

/**
 * The checkpoint as the store takes it, after the same checks as `--checkpoint` (checkpoint.ts):
 * a file's genesis digest must be this node's; a decoded one is checked for shape.
 */
function toTrustedCheckpoint(input: CheckpointInput, genesis: Uint8Array): TrustedCheckpoint {
  if ("committee" in input && typeof input.committee !== "string")
    return checkTrustedCheckpoint(input as TrustedCheckpoint);
  const g = parseGenesis(genesis);
  return checkCheckpoint(input, { digest: g.digest, chainId: g.genesis.chainId });
}

/** Starts a full node that syncs and follows the chain; `stop()` (or `await using`) ends it. */
export async function createFullNode(options: FullNodeOptions): Promise<EmbeddedFullNode> {
  const genesis =
    typeof options.genesis === "string" ? await readGenesisFile(options.genesis) : options.genesis;
  const log = options.logger ?? silentLogger();
  const node = await startFullNode({
    store: options.store,
    genesis,
    checkpoint:
      options.checkpoint === undefined ? undefined : toTrustedCheckpoint(options.checkpoint, genesis),
    peers: options.peers ?? [],
    noDiscovery: options.discovery === false,
    archives: options.archives,
    log,
    registry: options.registry ?? new Registry(),
    sync: options.options?.sync,
    listen: options.options?.listen,
    verifier: options.options?.verifier,
    verifyWorkers: options.options?.verifyWorkers,
  });
  const stopping = new AbortController();
  /** Aborted with the engine's fatal error: subscribers stop waiting and throw it. */
  const failed = new AbortController();
  let error: DagsyncError | undefined;
  const running = node.run(false).catch((e: unknown) => {
    error = e instanceof DagsyncError ? e : new DagsyncError("internal", String(e), { cause: e });
    log.error({ err: e }, "the sync engine stopped");
    failed.abort(error);
  });
  const feed: SubDagFeed = node.engine.broadcast;
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      stopping.abort();
      await node.stop();
      await running;
    })();
    return stopped;
  };
  return {
    subDags(from, { signal } = {}) {
      const all = AbortSignal.any(
        signal === undefined ? [stopping.signal, failed.signal] : [signal, stopping.signal, failed.signal],
      );
      return (async function* () {
        for await (const view of feed.iterate(from, { signal: all })) yield decodeSubDag(view);
        // The feed ends quietly on abort: an abort by the caller or by stop() is the end, but one
        // because the engine failed is that failure (nothing more will ever come).
        if (error !== undefined && signal?.aborted !== true) throw error;
      })();
    },
    status() {
      const p = node.engine.progress;
      const marks = node.store.watermarks;
      return {
        phase: p.phase,
        highestSynced: marks.highestSynced,
        lowestAvailable: marks.lowestAvailable,
        epoch: marks.epoch,
        target: p.target,
        usablePeers: p.usablePeers,
        stall: p.stall,
        port: node.port,
        error,
      };
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

export interface SyncServerOptions {
  /** An open Store, or a store directory (opened here, closed by `stop`). */
  readonly store: Store | string;
  /** Address to listen on. Default "127.0.0.1:0" (a free port; see `port`). */
  readonly listen?: string | undefined;
  readonly logger?: Logger | undefined;
  readonly registry?: Registry | undefined;
  /** Server limits; unset ones keep DEFAULT_SERVER_OPTIONS. */
  readonly options?: ServerOptionsInput | undefined;
  /**
   * The feed SubscribeCommits follows: publish each applied batch to it (e.g. a full node's
   * broadcast). Without it, subscribers replay the store and then wait.
   */
  readonly feed?: SubDagFeed | undefined;
  readonly tls?:
    | { readonly cert: Buffer; readonly key: Buffer; readonly ca?: Buffer | undefined }
    | undefined;
}

export interface RunningSyncServer extends AsyncDisposable {
  readonly server: SyncServer;
  readonly port: number;
  stop(): Promise<void>;
}

/** Serves a store over StateSync and Admin (with health and reflection). */
export async function createSyncServer(options: SyncServerOptions): Promise<RunningSyncServer> {
  const owned = typeof options.store === "string";
  const store = typeof options.store === "string" ? await Store.open(options.store) : options.store;
  const server = new SyncServer({
    store,
    log: options.logger ?? silentLogger(),
    registry: options.registry ?? new Registry(),
    options: options.options,
    feed: options.feed,
    tls: options.tls,
  });
  let port: number;
  try {
    port = await server.start(options.listen ?? "127.0.0.1:0");
  } catch (e) {
    if (owned) await store.close();
    throw e;
  }
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      await server.stop();
      if (owned) await store.close();
    })();
    return stopped;
  };
  return { server, port, stop, [Symbol.asyncDispose]: stop };
}
