/**
 * A client for one peer's StateSync and Admin services over @connectrpc/connect-node's gRPC
 * transport (2.1.x: 2.2 needs Node 22).
 *
 * Raw views on the client side: FetchCommits, FetchBlocks and SubscribeCommits responses are
 * decoded with the wire twins (same field numbers, nested messages kept as bytes), so every commit
 * and block is hashed and stored exactly as received. The method descriptors keep the real
 * service path; only the output schema is swapped. Every response is decoded strictly
 * (strict-response.ts): a field of the wrong wire type is malformed data, as is a height or index
 * above 2^53 − 1.
 *
 * Bulk transfer: the HTTP/2 stream window is set through session settings, and the connection
 * window, which Node cannot configure at connect time, is widened on the first stream of each
 * session.
 */
import type http2 from "node:http2";
import type { DescMessage, DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Admin, type GetStatusResponse, GetStatusResponseSchema } from "../gen/dagsync/v1/admin_pb.js";
import {
  GetCommitAvailabilityResponseSchema,
  PushCommitResponseSchema,
  StateSync,
} from "../gen/dagsync/v1/sync_pb.js";
import type { BlockRef, CommitRef } from "../gen/dagsync/v1/types_pb.js";
import {
  WireCommittedSubDagSchema,
  WireFetchBlocksResponseSchema,
  WireFetchCommitsResponseSchema,
  WireGetKnownPeersRequestSchema,
  WireGetKnownPeersResponseSchema,
} from "../gen/dagsync/wire/v1/wire_pb.js";
import { PeerError } from "./errors.js";
import { adaptiveTimeoutMs, DEFAULT_PEER_CLIENT_OPTIONS, type PeerClientOptions } from "./options.js";
import { decodeResponse, isParseError, rawOutput } from "./strict-response.js";
import { WideWindowSessionManager } from "./wide-window-sessions.js";

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

/**
 * A GetKnownPeers answer as raw encoded SignedNodeInfo entries, exactly as received: nothing in it
 * is validated yet (the peer book applies DESIGN §9's rules to each entry).
 */
export interface KnownPeersAnswer {
  /** The peer's own signed info; undefined when it does not advertise. */
  readonly self: Uint8Array | undefined;
  readonly peers: Uint8Array[];
}

/** GetKnownPeers sending the caller's SignedNodeInfo as the bytes it was signed as (wire twin). */
const GET_KNOWN_PEERS_RAW_INPUT = {
  ...StateSync.method.getKnownPeers,
  input: WireGetKnownPeersRequestSchema,
} as DescMethod;

export interface CallOptions {
  readonly signal?: AbortSignal | undefined;
  readonly timeoutMs?: number | undefined;
}

/** A u64 index or height from a peer as a number; above 2^53 − 1 it is malformed data. */
function peerIndex(peer: string, where: string, value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER))
    throw new PeerError(
      "invalid_data",
      peer,
      `${where} ${value} is above 2^53 − 1 (${Number.MAX_SAFE_INTEGER}), the largest index dagsync accepts`,
    );
  return Number(value);
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
      // http2.connect hands its options to net.connect / tls.connect, which bind to it.
      ...(o.localAddress === undefined ? {} : ({ localAddress: o.localAddress } as object)),
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

  /** Calls `method` and decodes its response strictly as `output` (a wire twin or the real schema). */
  private async unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethod,
    output: O,
    input: MessageInitShape<I>,
    call: CallOptions,
    defaultTimeoutMs: number,
  ): Promise<MessageShape<O>> {
    let message: unknown;
    try {
      const response = await this.transport.unary(
        rawOutput(method) as never,
        call.signal,
        call.timeoutMs ?? defaultTimeoutMs,
        undefined,
        input as never,
      );
      message = response.message;
    } catch (e) {
      if (isParseError(e))
        throw new PeerError(
          "invalid_data",
          this.address,
          `${method.name}: malformed response (${e.rawMessage})`,
        );
      throw PeerError.from(this.address, method.name, e);
    }
    return decodeResponse(output, message, this.address, method.name);
  }

  async getCommitAvailability(call: CallOptions = {}): Promise<Availability> {
    const m = await this.unary(
      StateSync.method.getCommitAvailability,
      GetCommitAvailabilityResponseSchema,
      {},
      call,
      this.options.smallCallTimeoutMs,
    );
    const where = "GetCommitAvailability:";
    return {
      highest: peerIndex(this.address, `${where} highest_synced_commit`, m.highestSyncedCommit),
      lowest: peerIndex(this.address, `${where} lowest_available_commit`, m.lowestAvailableCommit),
      epoch: peerIndex(this.address, `${where} epoch`, m.epoch),
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
    const m = await this.unary(
      StateSync.method.fetchCommits,
      WireFetchCommitsResponseSchema,
      { start: BigInt(start), end: BigInt(end) },
      { ...call, timeoutMs },
      timeoutMs,
    );
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
    const m = await this.unary(
      StateSync.method.fetchBlocks,
      WireFetchBlocksResponseSchema,
      { refs: refs as BlockRef[] },
      { ...call, timeoutMs },
      timeoutMs,
    );
    let bytes = 0;
    for (const b of m.blocks) bytes += b.length;
    return { blocks: m.blocks, bytes };
  }

  async pushCommit(commit: CommitRef, highestSynced: number, call: CallOptions = {}): Promise<void> {
    await this.unary(
      StateSync.method.pushCommit,
      PushCommitResponseSchema,
      { commit, highestSyncedCommit: BigInt(highestSynced) },
      call,
      this.options.smallCallTimeoutMs,
    );
  }

  /**
   * Peer exchange (DESIGN §9): the peer's own signed info and the signed infos it knows, raw.
   * `caller`, this node's encoded SignedNodeInfo, introduces it to the peer (optional).
   */
  async getKnownPeers(caller?: Uint8Array, call: CallOptions = {}): Promise<KnownPeersAnswer> {
    const m = await this.unary(
      GET_KNOWN_PEERS_RAW_INPUT,
      WireGetKnownPeersResponseSchema,
      { caller: caller ?? new Uint8Array(0) },
      call,
      this.options.smallCallTimeoutMs,
    );
    return { self: m.self.length === 0 ? undefined : m.self, peers: m.peers };
  }

  async getStatus(call: CallOptions = {}): Promise<GetStatusResponse> {
    return this.unary(
      Admin.method.getStatus,
      GetStatusResponseSchema,
      {},
      call,
      this.options.smallCallTimeoutMs,
    );
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
        rawOutput(StateSync.method.subscribeCommits) as never,
        signal,
        undefined,
        undefined,
        input as never,
      );
      response = res.message as AsyncIterable<unknown>;
      for await (const m of response)
        yield decodeResponse(WireCommittedSubDagSchema, m, this.address, "SubscribeCommits");
    } catch (e) {
      if (isParseError(e))
        throw new PeerError(
          "invalid_data",
          this.address,
          `SubscribeCommits: malformed response (${e.rawMessage})`,
        );
      throw PeerError.from(this.address, "SubscribeCommits", e);
    }
  }

  close(): void {
    this.sessions.abort();
  }
}
