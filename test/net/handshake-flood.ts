/**
 * A handshake flood on the live channel, from many source addresses: plain HTTP/2 (node:http2)
 * over sockets bound to each source, since grpc-js cannot choose its source address. Each stream
 * is a `Gossip.Connect` call that either never sends a frame ("silent": it holds a handshake slot
 * until the listener gives up on it) or sends a well-formed Hello with a key nobody admitted
 * ("unknown-key"). The flood keeps every stream it may open open, and tallies how the listener
 * ended them, by grpc-status.
 */
import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import { connect } from "node:net";
import { Ed25519Signer } from "../../src/crypto/index.js";
import { encodeHello } from "../../src/gossip/frames.js";

export type FloodMode = "silent" | "unknown-key";

export interface FloodOptions {
  /** host:port of the gossip listener. */
  readonly target: string;
  readonly chainId: string;
  /** Source addresses to dial from (one HTTP/2 connection each). */
  readonly sources: readonly string[];
  /** Streams opened on each connection. */
  readonly streamsPerSource: number;
  readonly mode: FloodMode;
}

export interface FloodTally {
  opened: number;
  /** Ended streams by grpc-status code name (or "reset" / "http-error"). */
  readonly ended: Map<string, number>;
}

const STATUS_NAMES: Record<string, string> = {
  "0": "OK",
  "1": "CANCELLED",
  "4": "DEADLINE_EXCEEDED",
  "7": "PERMISSION_DENIED",
  "8": "RESOURCE_EXHAUSTED",
  "14": "UNAVAILABLE",
  "16": "UNAUTHENTICATED",
};

/** A running flood: `stop()` closes every connection. */
export class HandshakeFlood {
  readonly tally: FloodTally = { opened: 0, ended: new Map() };
  private readonly sessions: http2.ClientHttp2Session[] = [];

  constructor(private readonly o: FloodOptions) {}

  start(): void {
    const [host, port] = [
      this.o.target.slice(0, this.o.target.lastIndexOf(":")),
      Number(this.o.target.split(":").pop()),
    ];
    for (const source of this.o.sources) {
      const session = http2.connect(`http://${this.o.target}`, {
        createConnection: () => connect({ host, port, localAddress: source }),
      });
      session.on("error", () => this.count("session-error"));
      this.sessions.push(session);
      for (let i = 0; i < this.o.streamsPerSource; i++) this.openStream(session);
    }
  }

  private openStream(session: http2.ClientHttp2Session): void {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request({
        ":method": "POST",
        ":path": "/dagsync.v1.Gossip/Connect",
        "content-type": "application/grpc",
        te: "trailers",
      });
    } catch {
      this.count("request-error");
      return;
    }
    this.tally.opened++;
    // A listener's refusal is a trailers-only response (grpc-status in the headers) or trailers;
    // the stream's own "close" waits for our side to end too, so each end is counted once, here.
    let counted = false;
    const end = (what: string) => {
      if (counted) return;
      counted = true;
      this.count(what);
      stream.close();
    };
    const onHeaders = (headers: http2.IncomingHttpHeaders) => {
      const s = headers["grpc-status"];
      if (typeof s === "string") end(STATUS_NAMES[s] ?? s);
    };
    stream.on("response", onHeaders);
    stream.on("trailers", onHeaders);
    stream.on("error", () => {});
    stream.on("data", () => {});
    stream.on("close", () => end("reset"));
    if (this.o.mode === "unknown-key") {
      const hello = encodeHello({
        chainId: this.o.chainId,
        networkKey: Ed25519Signer.generate().publicKey,
        timestampMs: BigInt(Date.now()),
        nonce: new Uint8Array(randomBytes(32)),
      });
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(hello.length, 1);
      stream.write(Buffer.concat([prefix, hello]));
    }
  }

  private count(what: string): void {
    this.tally.ended.set(what, (this.tally.ended.get(what) ?? 0) + 1);
  }

  ended(what: string): number {
    return this.tally.ended.get(what) ?? 0;
  }

  stop(): void {
    for (const s of this.sessions) s.destroy();
  }
}
