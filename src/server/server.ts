/**
 * The sync server: StateSync and Admin on grpc-js, with reflection, health, limits and graceful
 * shutdown. `SyncServer.start` binds and reports the actual port (0 picks a free one).
 */
import { Server, ServerCredentials, type UntypedServiceImplementation } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { Registry } from "prom-client";
import { DagsyncError } from "../core/errors.js";
import type { PushCommitRequest } from "../gen/dagsync/v1/sync_pb.js";
import type { Store } from "../store/index.js";
import { BulkGate } from "./bulk-gate.js";
import { ServerMetrics } from "./metrics.js";
import { resolveServerOptions, type ServerOptions, type ServerOptionsInput } from "./options.js";
import { addReflection, Health, SERVICE_NAMES } from "./reflection.js";
import { SessionLimit } from "./session-limit.js";
import {
  ADMIN_SERVICE,
  type CommitFeed,
  type DiscoveryDeps,
  type NodeStatus,
  STATE_SYNC_SERVICE,
  StateSyncHandlers,
} from "./state-sync.js";

export class ServerStartError extends DagsyncError {
  override readonly name = "ServerStartError";
  constructor(message: string) {
    super("server_start", message);
  }
}

export interface SyncServerConfig {
  readonly store: Store;
  readonly log: Logger;
  readonly registry?: Registry | undefined;
  readonly options?: ServerOptionsInput | undefined;
  readonly feed?: CommitFeed | undefined;
  readonly onPushCommit?: ((peer: string, request: PushCommitRequest) => void) | undefined;
  readonly status?: (() => NodeStatus) | undefined;
  /** Peer exchange: what GetKnownPeers serves and where callers' infos go (DiscoveryDeps). */
  readonly discovery?: DiscoveryDeps | undefined;
  /** TLS: PEM certificate chain and key; without them the server speaks plaintext HTTP/2. */
  readonly tls?:
    | { readonly cert: Buffer; readonly key: Buffer; readonly ca?: Buffer | undefined }
    | undefined;
}

export class SyncServer {
  readonly options: ServerOptions;
  readonly metrics: ServerMetrics;
  readonly registry: Registry;
  private readonly server: Server;
  private readonly health = new Health(SERVICE_NAMES);
  private boundPort: number | undefined;
  readonly sessions: SessionLimit;
  private readonly handlers: StateSyncHandlers;

  constructor(private readonly config: SyncServerConfig) {
    this.options = resolveServerOptions(config.options);
    this.registry = config.registry ?? new Registry();
    this.metrics = new ServerMetrics(this.registry);
    const o = this.options;
    this.sessions = new SessionLimit(o, (peer, why) => {
      this.metrics.rateLimited.inc({ method: "(connection)", reason: "sessions" });
      config.log.debug({ peer }, `connection refused: ${why}`);
    });
    // The gate admits through the handlers, which are made after it (they hold the quotas).
    let handlers: StateSyncHandlers | undefined;
    const gate = new BulkGate(
      new Set([STATE_SYNC_SERVICE.fetchCommits.path, STATE_SYNC_SERVICE.fetchBlocks.path]),
      (path, peer) => handlers!.admitBulkCall(path, peer),
      { requestTimeoutMs: o.bulkRequestTimeoutMs, responseTimeoutMs: o.bulkResponseTimeoutMs },
    );
    this.server = new Server({
      interceptors: [gate.interceptor],
      "grpc.max_receive_message_length": o.maxReceiveMessageBytes,
      "grpc.max_send_message_length": o.maxSendMessageBytes,
      "grpc.keepalive_time_ms": o.keepaliveTimeMs,
      "grpc.keepalive_timeout_ms": o.keepaliveTimeoutMs,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.http2.min_ping_interval_without_data_ms": 5_000,
      "grpc.max_concurrent_streams": o.maxConcurrentStreams,
      "grpc.max_connection_idle_ms": o.idleSessionTimeoutMs,
    });
    handlers = new StateSyncHandlers({
      store: config.store,
      options: o,
      metrics: this.metrics,
      log: config.log,
      feed: config.feed,
      onPushCommit: config.onPushCommit,
      status: config.status,
      discovery: config.discovery,
      gate,
    });
    this.handlers = handlers;
    this.server.addService(STATE_SYNC_SERVICE, handlers as unknown as UntypedServiceImplementation);
    this.server.addService(ADMIN_SERVICE, { getStatus: handlers.getStatus });
    this.health.addToServer(this.server);
    addReflection(this.server, SERVICE_NAMES);
  }

  /** Bulk calls and response bytes holding server-wide tickets now (admission.ts). */
  get bulkInflight(): { readonly calls: number; readonly bytes: number } {
    return { calls: this.handlers.bulk.inflightCalls, bytes: this.handlers.bulk.inflightBytes };
  }

  get port(): number {
    if (this.boundPort === undefined) throw new Error("server not started");
    return this.boundPort;
  }

  /** Binds `host:port` and starts serving; a taken port is a clear ServerStartError. */
  async start(listen: string): Promise<number> {
    const tls = this.config.tls;
    const credentials =
      tls === undefined
        ? ServerCredentials.createInsecure()
        : ServerCredentials.createSsl(
            tls.ca ?? null,
            [{ cert_chain: tls.cert, private_key: tls.key }],
            false,
          );
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(listen, credentials, (error, port) => {
        if (error !== null) {
          const taken = /EADDRINUSE|address already in use/i.test(error.message);
          reject(
            new ServerStartError(
              taken
                ? `cannot listen on ${listen}: the port is already in use`
                : `cannot listen on ${listen}: ${error.message}`,
            ),
          );
        } else resolve(port);
      });
    });
    if (!this.sessions.attach(this.server))
      this.config.log.warn("connection caps are not enforced: this grpc-js has no http2Servers map");
    this.health.setServing(true);
    return this.boundPort;
  }

  /** Graceful: health goes NOT_SERVING, new calls are refused, in-flight ones get `drainTimeoutMs`. */
  async stop(): Promise<void> {
    this.health.setServing(false);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, this.options.drainTimeoutMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
