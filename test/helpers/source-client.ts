/**
 * A gRPC client whose connection leaves from a chosen source address in 127.0.0.0/8 (every
 * 127.x address is this machine), so that one test process looks like many peers to a server
 * whose per-peer limits key on the remote IP.
 *
 * Calls go through connect-node's gRPC transport like PeerClient's, with raw outputs (blocks are
 * kept as the bytes received, to be hashed), but never throw: each returns its gRPC code, the
 * retry-after-ms trailer and its latency, which is what admission tests look at.
 */
import { connect } from "node:net";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, type Http2SessionManager } from "@connectrpc/connect-node";
import { decodeResponse, rawOutput } from "../../src/client/strict-response.js";
import { WideWindowSessionManager } from "../../src/client/wide-window-sessions.js";
import { StateSync } from "../../src/gen/dagsync/v1/sync_pb.js";
import type { BlockRef } from "../../src/gen/dagsync/v1/types_pb.js";
import {
  WireFetchBlocksResponseSchema,
  WireFetchCommitsResponseSchema,
} from "../../src/gen/dagsync/wire/v1/wire_pb.js";

/** How a call ended. */
export interface Outcome<T> {
  readonly code: Code | "OK";
  readonly message: string;
  /** The retry-after-ms trailer, when the call was refused with one. */
  readonly retryAfterMs: number | undefined;
  /** The raw trailer value (to check that it is numeric). */
  readonly retryAfterRaw: string | null;
  readonly latencyMs: number;
  readonly value: T | undefined;
}

export class SourceClient {
  private readonly sessions: Http2SessionManager;
  private readonly transport: Transport;
  readonly baseUrl: string;

  /**
   * A client of the server on 127.0.0.1:`port` whose connections leave from `localAddress`;
   * `windowBytes` is the HTTP/2 stream window (16 MiB by default), and the
   * connection window when above HTTP/2's default.
   */
  constructor(
    port: number,
    readonly localAddress: string,
    windowBytes = 16 * 1024 * 1024,
  ) {
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.sessions = new WideWindowSessionManager(
      this.baseUrl,
      windowBytes,
      { pingIntervalMs: 60_000, idleConnectionTimeoutMs: 60_000 },
      {
        createConnection: () => connect({ host: "127.0.0.1", port, localAddress }),
        settings: { initialWindowSize: windowBytes },
      },
    );
    this.transport = createGrpcTransport({
      baseUrl: this.baseUrl,
      sessionManager: this.sessions,
      readMaxBytes: 64 * 1024 * 1024,
    });
  }

  private async unary<T>(
    method: DescMethod,
    input: unknown,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    decode: (message: unknown) => T,
  ): Promise<Outcome<T>> {
    const started = performance.now();
    try {
      const res = await this.transport.unary(
        rawOutput(method) as never,
        signal,
        timeoutMs,
        undefined,
        input as never,
      );
      const value = decode(res.message);
      return {
        code: "OK",
        message: "",
        retryAfterMs: undefined,
        retryAfterRaw: null,
        latencyMs: performance.now() - started,
        value,
      };
    } catch (e) {
      const latencyMs = performance.now() - started;
      const err = ConnectError.from(e);
      const raw = err.metadata.get("retry-after-ms");
      const hint = raw === null ? Number.NaN : Number(raw);
      return {
        code: err.code,
        message: err.rawMessage,
        retryAfterMs: Number.isFinite(hint) ? hint : undefined,
        retryAfterRaw: raw,
        latencyMs,
        value: undefined,
      };
    }
  }

  getCommitAvailability(timeoutMs = 10_000): Promise<Outcome<true>> {
    return this.unary(StateSync.method.getCommitAvailability, {}, timeoutMs, undefined, () => true);
  }

  fetchCommits(start: number, end: number, timeoutMs = 30_000): Promise<Outcome<Uint8Array[]>> {
    return this.unary(
      StateSync.method.fetchCommits,
      { start: BigInt(start), end: BigInt(end) },
      timeoutMs,
      undefined,
      (m) => decodeResponse(WireFetchCommitsResponseSchema, m, this.baseUrl, "FetchCommits").commits,
    );
  }

  fetchBlocks(
    refs: readonly BlockRef[],
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<Outcome<Uint8Array[]>> {
    return this.unary(
      StateSync.method.fetchBlocks,
      { refs },
      opts.timeoutMs ?? 30_000,
      opts.signal,
      (m) => decodeResponse(WireFetchBlocksResponseSchema, m, this.baseUrl, "FetchBlocks").blocks,
    );
  }

  /**
   * Opens a SubscribeCommits stream from `start` and reads it (without decoding) until `signal`
   * aborts it or the server ends it. `received` counts messages; `ended` says how it ended.
   * With `read: false` the stream is opened but never read (a stalled subscriber): the server's
   * writes then meet HTTP/2 flow control.
   */
  subscribe(
    start: number,
    signal: AbortSignal,
    opts: { read?: boolean } = {},
  ): { readonly received: () => number; readonly ended: Promise<Outcome<number>> } {
    let received = 0;
    const started = performance.now();
    const ended = (async (): Promise<Outcome<number>> => {
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
        if (opts.read === false)
          await new Promise<void>((resolve) => {
            if (signal.aborted) resolve();
            else signal.addEventListener("abort", () => resolve(), { once: true });
          });
        else for await (const _ of res.message as AsyncIterable<unknown>) received++;
        return {
          code: "OK",
          message: "",
          retryAfterMs: undefined,
          retryAfterRaw: null,
          latencyMs: performance.now() - started,
          value: received,
        };
      } catch (e) {
        const err = ConnectError.from(e);
        const raw = err.metadata.get("retry-after-ms");
        return {
          code: err.code,
          message: err.rawMessage,
          retryAfterMs: raw === null ? undefined : Number(raw),
          retryAfterRaw: raw,
          latencyMs: performance.now() - started,
          value: received,
        };
      }
    })();
    return { received: () => received, ended };
  }

  close(): void {
    this.sessions.abort();
  }
}

/** The name of a code, for messages. */
export function codeName(code: Code | "OK"): string {
  return code === "OK" ? "OK" : Code[code];
}
