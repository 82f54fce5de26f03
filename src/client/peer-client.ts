/**
 * A client for one peer's StateSync and Admin services over @connectrpc/connect-node's gRPC
 * transport (2.1.x: 2.2 needs Node 22).
 *
 * Raw views on the client side: FetchCommits, FetchBlocks and SubscribeCommits responses are
 * decoded with the wire twins (same field numbers, nested messages kept as bytes), so every commit
 * and block is hashed and stored exactly as received. The method descriptors keep the real
 * service path; only the output schema is swapped.
 *
 * Bulk transfer: the HTTP/2 stream window is set through session settings, and the connection
 * window, which Node cannot configure at connect time, is widened on the first stream of each
 * session.
 */
import type http2 from "node:http2";
import type { DescMessage, DescMethod, MessageInitShape } from "@bufbuild/protobuf";
import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { Admin, type GetStatusResponse } from "../gen/dagsync/v1/admin_pb.js";
import { StateSync } from "../gen/dagsync/v1/sync_pb.js";
import type { BlockRef, CommitRef } from "../gen/dagsync/v1/types_pb.js";
import {
  WireCommittedSubDagSchema,
  WireFetchBlocksResponseSchema,
  WireFetchCommitsResponseSchema,
} from "../gen/dagsync/wire/v1/wire_pb.js";
import { PeerError } from "./errors.js";
import { adaptiveTimeoutMs, DEFAULT_PEER_CLIENT_OPTIONS, type PeerClientOptions } from "./options.js";

export interface Availability {
  readonly highest: number;
  readonly lowest: number;
  readonly epoch: number;
  readonly genesisDigest: Uint8Array;
  readonly highestDigest: Uint8Array;
}

export interface CommitsResponse {
  readonly commits: Uint8Array[];
  readonly certifierBlocks: Uint8Array[];
  readonly bytes: number;
}

export interface BlocksResponse {
  readonly blocks: Uint8Array[];
  readonly bytes: number;
}

export interface CallOptions {
  readonly signal?: AbortSignal | undefined;
  readonly timeoutMs?: number | undefined;
}

function withOutput<O extends DescMessage>(method: DescMethod, output: O): DescMethod {
  return { ...method, output } as DescMethod;
}

const RAW = {
  fetchCommits: withOutput(StateSync.method.fetchCommits, WireFetchCommitsResponseSchema),
  fetchBlocks: withOutput(StateSync.method.fetchBlocks, WireFetchBlocksResponseSchema),
  subscribeCommits: withOutput(StateSync.method.subscribeCommits, WireCommittedSubDagSchema),
};

/** Widens the connection-level receive window of every session it opens. */
class WideWindowSessionManager extends Http2SessionManager {
  private readonly widened = new WeakSet<http2.Http2Session>();

  constructor(
    url: string,
    private readonly windowBytes: number,
    ping: { pingIntervalMs: number; idleConnectionTimeoutMs: number },
    options: http2.ClientSessionOptions | http2.SecureClientSessionOptions,
  ) {
    super(url, ping, options);
  }

  override async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(method, path, headers, options);
    const session = stream.session;
    if (session !== undefined && !this.widened.has(session)) {
      this.widened.add(session);
      try {
        session.setLocalWindowSize(this.windowBytes);
      } catch {
        // a session that closes meanwhile keeps its default window; the call fails on its own
      }
    }
    return stream;
  }
}

export class PeerClient {
  readonly options: PeerClientOptions;
  private readonly transport: Transport;
  private readonly sessions: WideWindowSessionManager;

  constructor(
    readonly address: string,
    options: Partial<PeerClientOptions> = {},
  ) {
    this.options = { ...DEFAULT_PEER_CLIENT_OPTIONS, ...options };
    const o = this.options;
    const scheme = o.tlsCa === undefined ? "http" : "https";
    const baseUrl = `${scheme}://${address}`;
    const sessionOptions: http2.SecureClientSessionOptions = {
      settings: { initialWindowSize: Math.min(o.http2WindowBytes, 2 ** 31 - 1) },
      ...(o.tlsCa === undefined ? {} : { ca: o.tlsCa }),
    };
    this.sessions = new WideWindowSessionManager(
      baseUrl,
      o.http2WindowBytes,
      { pingIntervalMs: o.pingIntervalMs, idleConnectionTimeoutMs: o.idleConnectionTimeoutMs },
      sessionOptions,
    );
    this.transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.sessions,
      readMaxBytes: o.readMaxBytes,
      writeMaxBytes: o.readMaxBytes,
    });
  }

  private async unary<I extends DescMessage>(
    method: DescMethod,
    input: MessageInitShape<I>,
    call: CallOptions,
    defaultTimeoutMs: number,
  ): Promise<unknown> {
    try {
      const response = await this.transport.unary(
        method as never,
        call.signal,
        call.timeoutMs ?? defaultTimeoutMs,
        undefined,
        input as never,
      );
      return response.message;
    } catch (e) {
      throw PeerError.from(this.address, method.name, e);
    }
  }

  async getCommitAvailability(call: CallOptions = {}): Promise<Availability> {
    const m = (await this.unary(
      StateSync.method.getCommitAvailability,
      {},
      call,
      this.options.smallCallTimeoutMs,
    )) as {
      highestSyncedCommit: bigint;
      lowestAvailableCommit: bigint;
      epoch: bigint;
      genesisDigest: Uint8Array;
      highestCommitDigest: Uint8Array;
    };
    const max = BigInt(Number.MAX_SAFE_INTEGER);
    if (m.highestSyncedCommit > max || m.lowestAvailableCommit > max || m.epoch > max)
      throw new PeerError("invalid_data", this.address, "GetCommitAvailability: height beyond 2^53");
    return {
      highest: Number(m.highestSyncedCommit),
      lowest: Number(m.lowestAvailableCommit),
      epoch: Number(m.epoch),
      genesisDigest: m.genesisDigest,
      highestDigest: m.highestCommitDigest,
    };
  }

  /** Commits [start, end] as raw bytes. The deadline adapts to the expected size unless given. */
  async fetchCommits(
    start: number,
    end: number,
    call: CallOptions & { expectedBytes?: number } = {},
  ): Promise<CommitsResponse> {
    const timeoutMs = call.timeoutMs ?? adaptiveTimeoutMs(this.options, call.expectedBytes ?? 1024 * 1024);
    const m = (await this.unary(
      RAW.fetchCommits,
      { start: BigInt(start), end: BigInt(end) },
      { ...call, timeoutMs },
      timeoutMs,
    )) as {
      commits: Uint8Array[];
      certifierBlocks: Uint8Array[];
    };
    let bytes = 0;
    for (const c of m.commits) bytes += c.length;
    for (const b of m.certifierBlocks) bytes += b.length;
    return { commits: m.commits, certifierBlocks: m.certifierBlocks, bytes };
  }

  /** Blocks by ref as raw bytes (possibly a prefix of the refs). */
  async fetchBlocks(
    refs: readonly BlockRef[],
    call: CallOptions & { expectedBytes?: number } = {},
  ): Promise<BlocksResponse> {
    const timeoutMs =
      call.timeoutMs ?? adaptiveTimeoutMs(this.options, call.expectedBytes ?? 4 * 1024 * 1024);
    const m = (await this.unary(
      RAW.fetchBlocks,
      { refs: refs as BlockRef[] },
      { ...call, timeoutMs },
      timeoutMs,
    )) as {
      blocks: Uint8Array[];
    };
    let bytes = 0;
    for (const b of m.blocks) bytes += b.length;
    return { blocks: m.blocks, bytes };
  }

  async pushCommit(commit: CommitRef, highestSynced: number, call: CallOptions = {}): Promise<void> {
    await this.unary(
      StateSync.method.pushCommit,
      { commit, highestSyncedCommit: BigInt(highestSynced) },
      call,
      this.options.smallCallTimeoutMs,
    );
  }

  async getStatus(call: CallOptions = {}): Promise<GetStatusResponse> {
    return (await this.unary(
      Admin.method.getStatus,
      {},
      call,
      this.options.smallCallTimeoutMs,
    )) as GetStatusResponse;
  }

  /** Committed sub-DAGs from `start` as raw bytes: `{ commit, blocks }` per message. */
  async *subscribeCommits(
    start: number,
    signal?: AbortSignal,
  ): AsyncGenerator<{ commit: Uint8Array; blocks: Uint8Array[] }> {
    let response: AsyncIterable<unknown>;
    try {
      const input = (async function* () {
        yield { start: BigInt(start) };
      })();
      const res = await this.transport.stream(
        RAW.subscribeCommits as never,
        signal,
        undefined,
        undefined,
        input as never,
      );
      response = res.message as AsyncIterable<unknown>;
      for await (const m of response) yield m as { commit: Uint8Array; blocks: Uint8Array[] };
    } catch (e) {
      throw PeerError.from(this.address, "SubscribeCommits", e);
    }
  }

  close(): void {
    this.sessions.abort();
  }
}
