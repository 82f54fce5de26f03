/**
 * A raw dialer of the live channel for handshake tests: one grpc-js bidi stream on
 * `/dagsync.v1.Gossip/Connect` carrying hand-built frames, so a test can send anything (a wrong
 * chain, an old timestamp, a bad signature, a block before the handshake, junk) and observe the
 * frames the listener answers with and the grpc status it ends the stream with.
 */
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Ed25519Signer } from "../../src/crypto/index.js";
import {
  decodeAuth,
  decodeHello,
  encodeAuth,
  encodeHello,
  parseFrame,
  type RawFrame,
} from "../../src/gossip/frames.js";
import { dialCredentials } from "../../src/gossip/gossip-node.js";
import { type HelloView, helloView, transcript } from "../../src/gossip/handshake.js";

export const CONNECT_PATH = "/dagsync.v1.Gossip/Connect";

/** How the listener ended the stream, and how long after the stream was opened. */
export interface EndStatus {
  readonly code: grpc.status;
  readonly codeName: string;
  readonly details: string;
  readonly afterMs: number;
}

/** A Hello as the raw dialer will send it (every field can be overridden). */
export interface HelloFields {
  readonly chainId: string;
  readonly networkKey: Uint8Array;
  readonly timestampMs: number;
  readonly nonce: Uint8Array;
}

export function freshHello(
  chainId: string,
  key: Ed25519Signer,
  fields: Partial<HelloFields> = {},
): HelloFields {
  return {
    chainId,
    networkKey: key.publicKey,
    timestampMs: Date.now(),
    nonce: new Uint8Array(randomBytes(32)),
    ...fields,
  };
}

export function helloBytes(hello: HelloFields): Uint8Array {
  return encodeHello({ ...hello, timestampMs: BigInt(hello.timestampMs) });
}

/** One Connect stream. */
export class RawGossipStream {
  readonly call: grpc.ClientDuplexStream<Uint8Array, Uint8Array>;
  /** Frames received so far (parsed). */
  readonly received: RawFrame[] = [];
  /** Resolves with the final status, whatever it is (OK included). */
  readonly ended: Promise<EndStatus>;
  private readonly opened = performance.now();
  private readonly waiters = new Set<() => void>();
  private endStatus: EndStatus | undefined;

  constructor(client: grpc.Client) {
    this.call = client.makeBidiStreamRequest(
      CONNECT_PATH,
      (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength),
      (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength),
    );
    this.call.on("data", (bytes: Uint8Array) => {
      this.received.push(parseFrame(bytes));
      this.notify();
    });
    this.call.on("error", () => {}); // the status is read from "status"
    this.ended = new Promise((resolve) => {
      this.call.on("status", (s: grpc.StatusObject) => {
        this.endStatus = {
          code: s.code,
          codeName: grpc.status[s.code] ?? String(s.code),
          details: s.details,
          afterMs: performance.now() - this.opened,
        };
        this.notify();
        resolve(this.endStatus);
      });
    });
  }

  get status(): EndStatus | undefined {
    return this.endStatus;
  }

  send(bytes: Uint8Array): boolean {
    return this.call.write(bytes);
  }

  /** Resolves once `count` frames have arrived; rejects if the stream ends first or on timeout. */
  waitFrames(count: number, timeoutMs = 5_000): Promise<RawFrame[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.received.length >= count) return finish(() => resolve(this.received.slice(0, count)));
        if (this.endStatus !== undefined)
          return finish(() =>
            reject(
              new Error(
                `stream ended with ${this.endStatus?.codeName} "${this.endStatus?.details}" after ${this.received.length} frames`,
              ),
            ),
          );
      };
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(new Error(`only ${this.received.length} of ${count} frames in ${timeoutMs} ms`)),
          ),
        timeoutMs,
      );
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        settle();
      };
      this.waiters.add(check);
      check();
    });
  }

  /** The end status, or a rejection after `timeoutMs`. */
  waitEnd(timeoutMs = 5_000): Promise<EndStatus> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      this.ended,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`stream not ended within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  cancel(): void {
    this.call.cancel();
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** The listener's half of a completed handshake, as the raw dialer saw it. */
export interface HandshakeResult {
  readonly dialer: HelloView;
  readonly listener: HelloView;
  /** The listener's signature over T("listener"). */
  readonly listenerSignature: Uint8Array;
}

/**
 * Runs the dialer's side: sends `hello`, reads the listener's Hello and auth, and answers with
 * the dialer's transcript signature (or `signature` when given, to send a bad one or one built
 * from other bytes; it gets T("dialer") as src/gossip computes it and the listener's Hello).
 */
export async function dialerHandshake(
  stream: RawGossipStream,
  key: Ed25519Signer,
  hello: HelloFields,
  signature?: (t: Uint8Array, listener: HelloView) => Uint8Array,
): Promise<HandshakeResult> {
  stream.send(helloBytes(hello));
  const [h, a] = await stream.waitFrames(2);
  if (h?.kind !== "hello" || a?.kind !== "auth")
    throw new Error(`expected hello then auth, got ${h?.kind}, ${a?.kind}`);
  const listener = helloView(decodeHello(h.payload));
  const dialer: HelloView = hello;
  const listenerSignature = decodeAuth(a.payload).signature;
  const mine = transcript("dialer", hello.chainId, dialer, listener);
  stream.send(encodeAuth(signature === undefined ? key.sign(mine) : signature(mine, listener)));
  return { dialer, listener, listenerSignature };
}

/** A grpc-js client to a gossip address (plaintext unless `tlsCa` is given), dialing as GossipNode does. */
export function rawClient(address: string, tlsCa?: Buffer): grpc.Client {
  const { credentials, channelOptions } = dialCredentials(address, tlsCa);
  return new grpc.Client(address, credentials, {
    ...channelOptions,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
  });
}

/**
 * Waits for the stream's end and checks it is a refusal with `code` whose details match
 * `reason`; returns the status. The message names what actually happened.
 */
export async function expectRefused(
  stream: RawGossipStream,
  code: grpc.status,
  reason: RegExp,
  timeoutMs = 5_000,
): Promise<EndStatus> {
  const end = await stream.waitEnd(timeoutMs);
  if (end.code !== code || !reason.test(end.details))
    throw new Error(
      `expected ${grpc.status[code]} matching ${reason}, got ${end.codeName} "${end.details}" ` +
        `(after ${end.afterMs.toFixed(0)} ms, ${stream.received.length} frames received)`,
    );
  return end;
}
