/**
 * One authenticated peer connection of the live channel, and the gRPC method it runs on
 * (DESIGN.md §5: `service Gossip { rpc Connect(stream GossipFrame) returns (stream GossipFrame); }`).
 *
 * Design: a Session exists only once the handshake (handshake-machine.ts) is established, so
 * every Session holds a proven network key. It owns the stream and the peer's lane queues
 * (lanes.ts); `pump` writes queued frames, BROADCAST first, until the stream pushes back, and
 * resumes on "drain"; `end` ends the stream the way its role can (a listener answers a status,
 * a dialer cancels).
 *
 * Threat handled: a slow reader holding our memory. Frames wait in the bounded outbound backlogs
 * (lanes.ts), not in grpc-js: once the stream pushes back, nothing more is written until it
 * drains, so grpc-js holds at most its high-water mark per peer.
 */
import * as grpc from "@grpc/grpc-js";
import { toHex } from "../core/bytes.js";
import type { Role } from "./handshake.js";
import { LaneQueues } from "./lanes.js";

export const GOSSIP_CONNECT_PATH = "/dagsync.v1.Gossip/Connect";

/** Frames travel as raw bytes: they are parsed as raw views (frames.ts), never re-encoded. */
export const identity = {
  serialize: (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  deserialize: (b: Buffer) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength),
};

export const GOSSIP_SERVICE: grpc.ServiceDefinition = {
  connect: {
    path: GOSSIP_CONNECT_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity.serialize,
    requestDeserialize: identity.deserialize,
    responseSerialize: identity.serialize,
    responseDeserialize: identity.deserialize,
  },
};

/** Either end of a Connect stream. */
export type Duplex =
  | grpc.ServerDuplexStream<Uint8Array, Uint8Array>
  | grpc.ClientDuplexStream<Uint8Array, Uint8Array>;

export interface GossipPeerInfo {
  readonly key: string;
  readonly role: Role;
  readonly label: string;
}

/** Why a peer is blocked; the label of dagsync_gossip_peer_blocks_total. */
export const MISBEHAVIOUR = {
  oversized_frame: "oversized frame",
  junk_frame: "junk frame",
  unexpected_frame: "unexpected frame",
  invalid_block: "invalid signed block",
} as const;
export type MisbehaviourKind = keyof typeof MISBEHAVIOUR;

/** One authenticated peer connection. */
export class Session {
  readonly keyHex: string;
  readonly queues = new LaneQueues();
  private waitingDrain = false;
  closed = false;

  constructor(
    readonly key: Uint8Array,
    readonly role: Role,
    readonly label: string,
    readonly stream: Duplex,
  ) {
    this.keyHex = toHex(key);
  }

  get info(): GossipPeerInfo {
    return { key: this.keyHex, role: this.role, label: this.label };
  }

  /** Writes queued frames, BROADCAST first, until the stream pushes back. */
  pump(): void {
    if (this.closed || this.waitingDrain) return;
    for (;;) {
      // Once written, the frame is grpc-js's (bounded by the stream's high-water mark), not the backlog's.
      const frame = this.queues.nextOutbound();
      if (frame === undefined) return;
      if (!this.stream.write(frame)) {
        this.waitingDrain = true;
        this.stream.once("drain", () => {
          this.waitingDrain = false;
          this.pump();
        });
        return;
      }
    }
  }

  /**
   * Ends the stream: a listener ends it (OK) or answers `status`; a dialer cancels it. The caller
   * marks the session closed.
   */
  end(status: { code: grpc.status; reason: string } | undefined): void {
    const s = this.stream;
    if (this.role === "listener") {
      if (status === undefined) (s as grpc.ServerDuplexStream<Uint8Array, Uint8Array>).end();
      else s.emit("error", { code: status.code, details: status.reason, metadata: new grpc.Metadata() });
    } else (s as grpc.ClientDuplexStream<Uint8Array, Uint8Array>).cancel();
  }
}
