/**
 * The dialing side of the live channel: keeps a session to one peer address, reconnecting with
 * exponential backoff and jitter (DESIGN.md §5).
 *
 * Design: a Dialer owns one grpc-js Client (one channel) per address and, on each attempt, opens
 * a Connect stream and runs the shared handshake (handshake-machine.ts) as the dialer. An
 * established handshake becomes a Session handed to the node; when that stream closes, or an
 * attempt fails, the next attempt is scheduled: at once the first time, then after
 * min(reconnectMaxMs, reconnectBaseMs · 2^attempt) scaled by a random factor in [0.5, 1). A
 * successful handshake resets the count. When a session with the expected key is already up
 * (perhaps the peer dialed us), the dialer only checks again every reconnectMaxMs.
 *
 * Threats handled: impersonation (when the peer's key is known, as for committee members, a
 * listener with another key is refused), a listener that never answers (the handshake timeout),
 * oversized frames from a listener (the same receive limit as the listener side; see
 * transport-limit.ts and GossipNode.establish), and reconnect storms (backoff with jitter, so
 * that nodes restarted together do not dial in step).
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Handshake } from "./handshake-machine.js";
import { runHandshake } from "./handshake-machine.js";
import type { GossipMetrics } from "./metrics.js";
import { type GossipOptions, transportReceiveLimit } from "./options.js";
import { GOSSIP_CONNECT_PATH, identity, Session } from "./session.js";
import { dialCredentials } from "./tls.js";

/**
 * The delay before the next attempt, ms, given the attempts made since the last success
 * (`attempt`): none before the first, then exponential with jitter (module comment).
 */
export function reconnectDelayMs(
  attempt: number,
  options: Pick<GossipOptions, "reconnectBaseMs" | "reconnectMaxMs">,
  random: () => number = Math.random,
): number {
  if (attempt === 0) return 0;
  const exp = Math.min(options.reconnectMaxMs, options.reconnectBaseMs * 2 ** Math.min(attempt, 16));
  return exp * (0.5 + random() * 0.5);
}

/** What a Dialer needs from its node. */
export interface DialerHost {
  readonly options: GossipOptions;
  /** TLS for dialing: trust this CA; undefined means plaintext. */
  readonly tlsCa: Buffer | undefined;
  readonly log: Logger;
  readonly metrics: GossipMetrics | undefined;
  /** False once the node stops. */
  running(): boolean;
  /** True when a session with this key is up. */
  hasSession(key: Uint8Array): boolean;
  /** A fresh dialer handshake (our new Hello), pinning `expectedKey` when given. */
  handshake(expectedKey: Uint8Array | undefined): Handshake;
  /** Takes over an established session. */
  establish(session: Session): void;
}

export class Dialer {
  private stopped = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private client: grpc.Client | undefined;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly channelOptions: grpc.ChannelOptions;

  constructor(
    private readonly host: DialerHost,
    readonly address: string,
    private readonly expectedKey: Uint8Array | undefined,
  ) {
    ({ credentials: this.credentials, channelOptions: this.channelOptions } = dialCredentials(
      address,
      host.tlsCa,
    ));
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.client?.close();
  }

  private schedule(): void {
    if (this.stopped || !this.host.running()) return;
    const delay = reconnectDelayMs(this.attempt, this.host.options);
    this.attempt++;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  private connect(): void {
    if (this.stopped || !this.host.running()) return;
    const o = this.host.options;
    if (this.expectedKey !== undefined && this.host.hasSession(this.expectedKey)) {
      // Already connected (perhaps they dialed us): check again later.
      this.attempt = 0;
      this.timer = setTimeout(() => this.connect(), o.reconnectMaxMs);
      return;
    }
    this.client ??= new grpc.Client(this.address, this.credentials, {
      ...this.channelOptions,
      // As on the listener: frames a little over maxFrameBytes reach receive(), bigger ones are
      // cut off by grpc-js and reported as an "error" (see GossipNode.establish); both block the listener.
      "grpc.max_receive_message_length": transportReceiveLimit(o),
      "grpc.max_send_message_length": o.maxFrameBytes,
      "grpc.keepalive_time_ms": 15_000,
    });
    const call = this.client.makeBidiStreamRequest(
      GOSSIP_CONNECT_PATH,
      identity.serialize,
      identity.deserialize,
    );
    this.handshake(call).then(
      (session) => {
        this.attempt = 0;
        call.once("close", () => this.schedule());
        if (session === undefined) this.schedule();
      },
      () => this.schedule(),
    );
  }

  /** Runs the dialer handshake on `call`; the established Session, or undefined when it failed. */
  private handshake(call: grpc.ClientDuplexStream<Uint8Array, Uint8Array>): Promise<Session | undefined> {
    const { host, address } = this;
    return new Promise((resolve) => {
      const run = runHandshake(
        host.handshake(this.expectedKey),
        call,
        host.options.handshakeTimeoutMs,
        (state) => {
          if (state.status === "failed") {
            host.metrics?.handshakes.inc({ role: "dialer", result: "failed" });
            host.log.debug({ peer: address, reason: state.error.message }, "gossip dial failed");
            call.cancel();
            return resolve(undefined);
          }
          call.removeAllListeners("error");
          call.removeAllListeners("end");
          host.metrics?.handshakes.inc({ role: "dialer", result: "OK" });
          const session = new Session(state.theirs.networkKey, "dialer", address, call);
          host.establish(session);
          resolve(session);
        },
      );
      call.on("error", (e: grpc.ServiceError) =>
        run.abort((h) => h.streamClosed(`${grpc.status[e.code] ?? e.code}: ${e.details}`)),
      );
      call.on("end", () => run.abort((h) => h.streamClosed("stream ended during the handshake")));
    });
  }
}
