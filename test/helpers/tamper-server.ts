/**
 * A tampering StateSync peer for subscribeVerified's tests: a real grpc-js server on loopback that
 * serves a real store through the honest StateSyncHandlers, but lets a test alter what goes out —
 * a FetchCommits response (commits, certifier blocks), each streamed SubscribeCommits message
 * (changed or dropped), or the first calls refused as busy (RESOURCE_EXHAUSTED with retry-after-ms,
 * what bulk admission answers under load). It counts what it altered, so that a test can tell that
 * a tampering was really served.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  Metadata,
  Server,
  ServerCredentials,
  type ServerWritableStream,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { Registry } from "prom-client";
import { encodeRawFields } from "../../src/core/index.js";
import {
  WireCommittedSubDagSchema,
  type WireFetchCommitsResponse,
  WireFetchCommitsResponseSchema,
} from "../../src/gen/dagsync/wire/v1/wire_pb.js";
import { silentLogger } from "../../src/node/logger.js";
import {
  ADMIN_SERVICE,
  type Decoded,
  resolveServerOptions,
  ServerMetrics,
  STATE_SYNC_SERVICE,
  StateSyncHandlers,
} from "../../src/server/index.js";
import type { Store } from "../../src/store/index.js";

/** A streamed sub-DAG as raw bytes. */
export interface RawSubDag {
  commit: Uint8Array;
  blocks: Uint8Array[];
}

export interface Tampering {
  /** Alters an honest FetchCommits response in place (or replaces its fields). */
  readonly fetchCommits?: (res: WireFetchCommitsResponse) => void | Promise<void>;
  /** Alters a streamed sub-DAG; `undefined` drops it. `n` counts the messages of this stream. */
  readonly subDag?: (m: RawSubDag, n: number) => RawSubDag | undefined;
  /** Refuse this many FetchCommits calls as busy before answering. Default 0. */
  readonly busyFetches?: number | undefined;
  /** Refuse this many SubscribeCommits calls as busy before streaming. Default 0. */
  readonly busySubscribes?: number | undefined;
  /** The retry-after-ms hint of a busy answer. Default 30. */
  readonly retryAfterMs?: number | undefined;
}

export class TamperServer {
  readonly stats = { fetchCommits: 0, subscribes: 0, busy: 0, altered: 0 };
  private readonly server = new Server();
  private boundPort: number | undefined;

  constructor(
    readonly store: Store,
    private readonly tampering: Tampering,
  ) {
    const options = resolveServerOptions({
      rateLimits: {
        getCommitAvailability: { perSecond: 1000, burst: 1000 },
        fetchCommits: { perSecond: 1000, burst: 1000 },
        fetchBlocks: { perSecond: 1000, burst: 1000 },
        pushCommit: { perSecond: 1000, burst: 1000 },
      },
      maxInflightPerPeer: 64,
    });
    const h = new StateSyncHandlers({
      store,
      options,
      metrics: new ServerMetrics(new Registry()),
      log: silentLogger(),
    });
    const impl = {
      getCommitAvailability: h.getCommitAvailability,
      fetchBlocks: h.fetchBlocks,
      pushCommit: h.pushCommit,
      fetchCommits: this.fetchCommits(h.fetchCommits as handleUnaryCall<Decoded<unknown>, Uint8Array>),
      subscribeCommits: this.subscribeCommits(
        h.subscribeCommits as handleServerStreamingCall<Decoded<{ start: bigint }>, Uint8Array>,
      ),
    };
    this.server.addService(STATE_SYNC_SERVICE, impl as unknown as UntypedServiceImplementation);
    this.server.addService(ADMIN_SERVICE, {
      getStatus: h.getStatus,
    } as unknown as UntypedServiceImplementation);
  }

  /** "127.0.0.1:PORT" */
  get address(): string {
    if (this.boundPort === undefined) throw new Error("tamper server not started");
    return `127.0.0.1:${this.boundPort}`;
  }

  async start(): Promise<void> {
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) =>
        error === null ? resolve(port) : reject(error),
      );
    });
  }

  async stop(): Promise<void> {
    this.server.forceShutdown();
  }

  private busyError() {
    this.stats.busy++;
    const metadata = new Metadata();
    const ms = this.tampering.retryAfterMs ?? 30;
    metadata.set("retry-after-ms", String(ms));
    return {
      code: status.RESOURCE_EXHAUSTED,
      details: `server busy: bulk capacity in use; retry in ${ms} ms`,
      metadata,
    };
  }

  private fetchCommits(
    honest: handleUnaryCall<Decoded<unknown>, Uint8Array>,
  ): handleUnaryCall<Decoded<unknown>, Uint8Array> {
    return (call, callback) => {
      this.stats.fetchCommits++;
      if (this.stats.fetchCommits <= (this.tampering.busyFetches ?? 0)) {
        callback(this.busyError());
        return;
      }
      honest(call, (error, bytes) => {
        const alter = this.tampering.fetchCommits;
        if ((error !== null && error !== undefined) || alter === undefined) {
          callback(error, bytes);
          return;
        }
        const res = fromBinary(WireFetchCommitsResponseSchema, bytes!);
        Promise.resolve(alter(res)).then(
          () => {
            this.stats.altered++;
            callback(
              null,
              toBinary(WireFetchCommitsResponseSchema, create(WireFetchCommitsResponseSchema, res)),
            );
          },
          (e: unknown) => callback({ code: status.INTERNAL, details: `tampering failed: ${String(e)}` }),
        );
      });
    };
  }

  private subscribeCommits(
    honest: handleServerStreamingCall<Decoded<{ start: bigint }>, Uint8Array>,
  ): handleServerStreamingCall<Decoded<{ start: bigint }>, Uint8Array> {
    return (call: ServerWritableStream<Decoded<{ start: bigint }>, Uint8Array>) => {
      this.stats.subscribes++;
      if (this.stats.subscribes <= (this.tampering.busySubscribes ?? 0)) {
        call.emit("error", this.busyError());
        return;
      }
      const alter = this.tampering.subDag;
      if (alter !== undefined) {
        const write = call.write.bind(call) as (chunk: Uint8Array, ...rest: unknown[]) => boolean;
        let n = 0;
        call.write = ((chunk: Uint8Array, ...rest: unknown[]) => {
          const m = fromBinary(WireCommittedSubDagSchema, chunk);
          const altered = alter({ commit: m.commit, blocks: [...m.blocks] }, n++);
          if (altered === undefined) {
            this.stats.altered++;
            return true;
          }
          const bytes = encodeRawFields([
            [1, [altered.commit]],
            [2, altered.blocks],
          ]);
          if (Buffer.compare(Buffer.from(bytes), Buffer.from(chunk)) !== 0) this.stats.altered++;
          return write(bytes, ...rest);
        }) as typeof call.write;
      }
      honest(call);
    };
  }
}

export async function startTamperServer(store: Store, tampering: Tampering): Promise<TamperServer> {
  const server = new TamperServer(store, tampering);
  await server.start();
  return server;
}
