/**
 * The authenticated live channel (DESIGN.md §5): one bidi `Gossip.Connect` stream per peer pair,
 * separate from the sync port, carrying BROADCAST (signed blocks) and MEMPOOL (transactions).
 *
 * Threats and answers:
 * - Strangers putting load on a validator: nothing but a Hello is read before the handshake, and
 *   only keys of the current committee plus configured extra keys (full nodes) are admitted;
 *   each refusal closes the stream with UNAUTHENTICATED or PERMISSION_DENIED and a reason, and a
 *   handshake must finish within `handshakeTimeoutMs`.
 * - Replay and impersonation: both sides sign a transcript binding both keys, nonces and
 *   timestamps; replayed Hellos (seen nonces) and stale or future timestamps are refused.
 * - One lane starving another, or a peer filling memory: each lane has its own per-peer GCRA
 *   quota and backlogs bounded by frames and by bytes, inbound and outbound; over any of them,
 *   frames are dropped and counted under their own reason. BROADCAST is processed and sent first.
 * - Junk: an invalid signed block, an oversized or undecodable frame disconnects the peer and
 *   the Blocker refuses it for `blockDurationMs`. "Oversized" is any frame over `maxFrameBytes`,
 *   including one grpc-js cuts off at its receive limit before we read it (transport-limit.ts);
 *   before the handshake such a frame only ends the stream, as its sender's key is not proven.
 * - Blocks of other epochs: a block is judged only against a committee we hold, and GossipNode
 *   holds the current one only. A BROADCAST block of the current epoch that is malformed, by a
 *   non-member or badly signed is evidence: the sender is blocked. A block of a later epoch
 *   cannot be judged (an honest peer ahead of us, while we catch up, sends them): dropped and
 *   counted as "unknown_epoch", never blocked. A block of an earlier epoch is stale (honest peers
 *   still relay the previous epoch's last rounds around an epoch change, and it is of no use near
 *   the tip): dropped and counted as "stale_epoch", never blocked, whatever its signature.
 *   Neither is delivered or relayed. Bytes that do not parse as a block have no epoch: junk.
 * - Loops and amplification: items are deduplicated by digest (bounded in size and age) and
 *   relayed once to every peer except the sender.
 *
 * This file is the composition: admission (who may connect), the listener side of the handshake,
 * sessions coming and going, and the blocker. The parts are in their own files:
 * handshake-machine.ts (the handshake, both roles), session.ts (a connection and the Connect
 * method), lanes.ts (quotas, backlogs, priorities), relay.ts (dedup, judging blocks, relay),
 * dialer.ts (dialing and reconnecting) and tls.ts (dial credentials).
 */
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { toHex } from "../core/bytes.js";
import type { CommitteeView } from "../core/committee.js";
import type { SignatureVerifier } from "../core/types.js";
import type { BlockEntry } from "../core/wire.js";
import type { Ed25519Signer } from "../crypto/keys.js";
import { Blocker } from "./blocker.js";
import { DedupCache } from "./dedup.js";
import { Dialer } from "./dialer.js";
import { laneOf, parseFrame, type RawFrame } from "./frames.js";
import { type HelloPolicy, type HelloView, NonceCache, type Role, sameKey } from "./handshake.js";
import { Handshake, runHandshake } from "./handshake-machine.js";
import { InboundScheduler, Lanes } from "./lanes.js";
import type { GossipMetrics } from "./metrics.js";
import { type GossipOptions, type GossipOptionsInput, resolveGossipOptions } from "./options.js";
import { PendingHandshakes, peerHost } from "./pending-handshakes.js";
import { Relay } from "./relay.js";
import {
  GOSSIP_CONNECT_PATH,
  type GossipPeerInfo,
  MISBEHAVIOUR,
  type MisbehaviourKind,
  Session,
} from "./session.js";
import { isReceiveLimitError, TransportLimitWatch } from "./transport-limit.js";

export { GOSSIP_CONNECT_PATH, GOSSIP_SERVICE, type GossipPeerInfo } from "./session.js";
export { dialCredentials } from "./tls.js";

export interface GossipNodeConfig {
  readonly chainId: string;
  /** This node's network key. */
  readonly networkKey: Ed25519Signer;
  /** The current committee (its network keys are admitted; its protocol keys check blocks). */
  readonly committee: () => CommitteeView;
  /** Network keys admitted beyond the committee (full nodes). */
  readonly extraKeys?: readonly Uint8Array[] | undefined;
  readonly verifier: SignatureVerifier;
  readonly log: Logger;
  readonly metrics?: GossipMetrics | undefined;
  readonly options?: GossipOptionsInput | undefined;
  /** TLS for dialing: trust this CA; absent means plaintext. */
  readonly tlsCa?: Buffer | undefined;
  /**
   * The clock, ms: Hello timestamps, the blocker, dedup, and the lanes' quotas and queue ages.
   * Default: the wall clock (`Date.now()`), and for the lanes the monotonic `performance.now()`.
   */
  readonly now?: (() => number) | undefined;
}

export class GossipNode {
  readonly options: GossipOptions;
  private readonly sessions = new Map<string, Session>();
  private readonly blocker: Blocker;
  private readonly pending: PendingHandshakes;
  private readonly nonces: NonceCache;
  private readonly lanes: Lanes;
  private readonly relay: Relay;
  private readonly inbound: InboundScheduler<Session>;
  private readonly now: () => number;
  private readonly dialers = new Map<string, Dialer>();
  private stopped = false;
  private readonly admissionTimer: NodeJS.Timeout;
  private readonly transportWatch = new TransportLimitWatch(GOSSIP_CONNECT_PATH);
  /**
   * The gossip port's grpc-js server must be built with `interceptors: [this]` (first) and
   * `grpc.max_receive_message_length: transportReceiveLimit(options)`: it lets GossipNode block
   * the sender of a frame that grpc-js cuts off (transport-limit.ts).
   */
  readonly serverInterceptor = this.transportWatch.interceptor;

  constructor(private readonly config: GossipNodeConfig) {
    this.options = resolveGossipOptions(config.options);
    const o = this.options;
    this.now = config.now ?? (() => Date.now());
    this.blocker = new Blocker(o.blockDurationMs);
    this.pending = new PendingHandshakes(o.maxPendingHandshakes, o.maxPendingHandshakesPerAddress);
    this.nonces = new NonceCache(o.maxHelloAgeMs + o.maxHelloSkewMs);
    this.lanes = new Lanes(o, config.metrics, config.now);
    this.relay = new Relay({
      chainId: config.chainId,
      committee: config.committee,
      verifier: config.verifier,
      metrics: config.metrics,
      dedup: new DedupCache(o.dedupCapacity, o.dedupMaxAgeMs),
      lanes: this.lanes,
      now: this.now,
      sessions: () => this.sessions.values(),
      misbehaved: (session, kind, detail) => this.misbehaved(session, kind, detail),
    });
    this.inbound = new InboundScheduler(
      () => this.sessions.values(),
      o.processBatch,
      (session, lane, item) => {
        this.lanes.observeWait(lane, item);
        if (lane === "broadcast") this.relay.handleBlock(session, item.payload);
        else this.relay.handleTransaction(session, item.payload);
      },
    );
    // The allowed set follows the committee: when an epoch change drops a key, its open sessions
    // end too, not just its next handshakes.
    this.admissionTimer = setInterval(() => this.evictDisallowed(), o.admissionCheckIntervalMs);
    this.admissionTimer.unref();
  }

  private evictDisallowed(): void {
    for (const s of [...this.sessions.values()])
      if (!this.isAllowed(s.key))
        this.close(s, {
          code: grpc.status.PERMISSION_DENIED,
          reason: "network key no longer in the allowed set (committee changed)",
        });
  }

  get publicKey(): Uint8Array {
    return this.config.networkKey.publicKey;
  }

  peers(): GossipPeerInfo[] {
    return [...this.sessions.values()].map((s) => s.info);
  }

  blockedPeers() {
    return this.blocker.entries(this.now());
  }

  onBlock(listener: (block: BlockEntry, from: string) => void): () => void {
    return this.relay.onBlock(listener);
  }

  onTransaction(listener: (tx: Uint8Array, from: string) => void): () => void {
    return this.relay.onTransaction(listener);
  }

  /** Broadcasts our own signed block (encoded SignedBlock) to every peer. */
  publishBlock(bytes: Uint8Array): void {
    this.relay.publishBlock(bytes);
  }

  publishTransaction(tx: Uint8Array): void {
    this.relay.publishTransaction(tx);
  }

  // ---- admission -----------------------------------------------------------------------------

  private isAllowed(key: Uint8Array): boolean {
    if (sameKey(key, this.publicKey)) return false; // ourselves
    if (this.config.committee().indexOfNetworkKey(key) >= 0) return true;
    return (this.config.extraKeys ?? []).some((k) => sameKey(k, key));
  }

  private myHello(): HelloView {
    return {
      chainId: this.config.chainId,
      networkKey: this.publicKey,
      timestampMs: this.now(),
      nonce: new Uint8Array(randomBytes(32)),
    };
  }

  private policy(): HelloPolicy {
    return {
      chainId: this.config.chainId,
      now: this.now(),
      maxAgeMs: this.options.maxHelloAgeMs,
      maxSkewMs: this.options.maxHelloSkewMs,
      isAllowed: (k: Uint8Array) => this.isAllowed(k),
      blockedUntil: (k: Uint8Array) => this.blocker.blockedUntil(k, this.now()),
    };
  }

  /** A fresh handshake of `role` with our new Hello (the dialer may pin the listener's key). */
  private handshake(role: Role, expectedKey?: Uint8Array): Handshake {
    return new Handshake(role, this.myHello(), {
      chainId: this.config.chainId,
      signer: this.config.networkKey,
      verifier: this.config.verifier,
      policy: () => this.policy(),
      admitNonce: (nonce) => this.nonces.admit(nonce, this.now()),
      expectedKey,
    });
  }

  // ---- listener side -------------------------------------------------------------------------

  /** The grpc-js handler for Gossip.Connect. */
  readonly connectHandler = (call: grpc.ServerDuplexStream<Uint8Array, Uint8Array>): void => {
    const peerLabel = call.getPeer();
    let session: Session | undefined;
    const refuse = (details: string) => {
      this.config.metrics?.handshakes.inc({ role: "listener", result: "RESOURCE_EXHAUSTED" });
      call.removeAllListeners("data");
      call.emit("error", { code: grpc.status.RESOURCE_EXHAUSTED, details, metadata: new grpc.Metadata() });
    };
    // Evicting a pending handshake ends its stream (and its handshake, once started).
    let run: ReturnType<typeof runHandshake> | undefined;
    const admission = this.pending.admit(peerHost(peerLabel), () => {
      run?.dispose();
      refuse("handshake evicted: too many handshakes in progress on this node");
    });
    if (!admission.admitted) {
      this.config.log.debug({ peer: peerLabel, reason: admission.reason }, "gossip handshake refused");
      refuse(admission.reason);
      return;
    }
    const ticket = admission.ticket;
    try {
      run = runHandshake(this.handshake("listener"), call, this.options.handshakeTimeoutMs, (state) => {
        ticket.release();
        if (state.status === "failed") {
          const { error } = state;
          const code =
            error.kind === "permission" ? grpc.status.PERMISSION_DENIED : grpc.status.UNAUTHENTICATED;
          this.config.metrics?.handshakes.inc({
            role: "listener",
            result: grpc.status[code] ?? String(code),
          });
          this.config.log.info({ peer: peerLabel, reason: error.message }, "gossip handshake refused");
          call.removeAllListeners("data");
          call.emit("error", { code, details: error.message, metadata: new grpc.Metadata() });
          return;
        }
        this.config.metrics?.handshakes.inc({ role: "listener", result: "OK" });
        session = new Session(state.theirs.networkKey, "listener", peerLabel, call);
        this.establish(session);
      });
    } catch (e) {
      ticket.release(); // a handshake that never started holds no slot
      throw e;
    }
    const settle = () => {
      ticket.release();
      run?.dispose();
    };
    call.on("error", settle);
    call.on("cancelled", settle);
    this.transportWatch.onRejected(call.metadata, (details) => {
      if (session !== undefined) {
        const status = this.block(session, "oversized_frame", `over the transport limit: ${details}`);
        this.close(session, { code: status.code, reason: status.details });
        return status; // sent instead of grpc-js's RESOURCE_EXHAUSTED: the peer learns it is blocked
      }
      // Before the handshake the sender's key is not proven: blocking it would let anyone get a
      // committee member blocked. grpc-js's RESOURCE_EXHAUSTED ends the stream; it is counted.
      settle();
      this.config.metrics?.handshakes.inc({ role: "listener", result: "RESOURCE_EXHAUSTED" });
      this.config.log.info(
        { peer: peerLabel, reason: details },
        "gossip handshake refused: frame over the transport limit",
      );
      return undefined;
    });
  };

  // ---- dialer side ---------------------------------------------------------------------------

  /**
   * Keeps a session to `address` (a peer's gossip address), reconnecting with exponential
   * backoff and jitter (dialer.ts). `expectedKey`, when known (committee members), must be the listener's.
   */
  dial(address: string, expectedKey?: Uint8Array): void {
    if (this.dialers.has(address)) return;
    const dialer = new Dialer(
      {
        options: this.options,
        tlsCa: this.config.tlsCa,
        log: this.config.log,
        metrics: this.config.metrics,
        running: () => !this.stopped,
        hasSession: (key) => this.sessions.has(toHex(key)),
        handshake: (key) => this.handshake("dialer", key),
        establish: (session) => this.establish(session),
      },
      address,
      expectedKey,
    );
    this.dialers.set(address, dialer);
    dialer.start();
  }

  // ---- sessions ------------------------------------------------------------------------------

  private establish(session: Session): void {
    const previous = this.sessions.get(session.keyHex);
    if (previous !== undefined) this.close(previous, undefined);
    this.sessions.set(session.keyHex, session);
    this.config.metrics?.peers.set(this.sessions.size);
    this.config.log.info(
      { peer: session.label, key: session.keyHex.slice(0, 16), role: session.role },
      "gossip session up",
    );
    const stream = session.stream;
    stream.on("data", (bytes: Uint8Array) => this.receive(session, bytes));
    const closed = () => {
      if (this.sessions.get(session.keyHex) === session) this.sessions.delete(session.keyHex);
      session.closed = true;
      this.config.metrics?.peers.set(this.sessions.size);
    };
    stream.on("end", () => {
      closed();
      stream.end();
    });
    stream.on("error", (e: grpc.ServiceError) => {
      // Dialer side: grpc-js cut off a frame from the listener over our receive limit. (A listener
      // reports what it cut off as PERMISSION_DENIED "blocked", so this is not its verdict on us.)
      if (session.role === "dialer" && isReceiveLimitError(e.code, e.details))
        this.misbehaved(session, "oversized_frame", `over the transport limit: ${e.details}`);
      closed();
    });
    stream.on("close", closed);
    stream.on("cancelled", closed); // server side: the dialer went away
  }

  private close(session: Session, status: { code: grpc.status; reason: string } | undefined): void {
    if (session.closed) return;
    session.closed = true;
    if (this.sessions.get(session.keyHex) === session) this.sessions.delete(session.keyHex);
    this.config.metrics?.peers.set(this.sessions.size);
    session.end(status);
  }

  /** Blocks the peer: `kind` is a fixed metric label, `detail` goes to the log and the peer. */
  private misbehaved(session: Session, kind: MisbehaviourKind, detail: string): void {
    const status = this.block(session, kind, detail);
    this.close(session, { code: status.code, reason: status.details });
  }

  /** Records the block (blocker, metric, log); returns the status to end the stream with. */
  private block(
    session: Session,
    kind: MisbehaviourKind,
    detail: string,
  ): { code: grpc.status; details: string } {
    const reason = `${MISBEHAVIOUR[kind]}: ${detail}`;
    const until = this.blocker.block(session.key, reason, this.now());
    this.config.metrics?.blocks.inc({ reason: kind });
    this.config.log.warn(
      { peer: session.label, key: session.keyHex.slice(0, 16), until: new Date(until).toISOString() },
      `gossip peer blocked: ${reason}`,
    );
    return { code: grpc.status.PERMISSION_DENIED, details: `blocked: ${reason}` };
  }

  private receive(session: Session, bytes: Uint8Array): void {
    if (session.closed) return;
    if (bytes.length > this.options.maxFrameBytes)
      return this.misbehaved(session, "oversized_frame", `${bytes.length} bytes`);
    let frame: RawFrame;
    try {
      frame = parseFrame(bytes);
    } catch (e) {
      return this.misbehaved(session, "junk_frame", (e as Error).message);
    }
    const lane = laneOf(frame.kind);
    if (lane === undefined)
      return this.misbehaved(session, "unexpected_frame", `${frame.kind} frame after the handshake`);
    if (this.lanes.admitInbound(session.keyHex, session.queues, lane, frame, bytes.byteLength))
      this.inbound.schedule();
  }

  /** Closes every session and stops dialing. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.admissionTimer);
    for (const d of this.dialers.values()) d.stop();
    this.dialers.clear();
    for (const s of [...this.sessions.values()]) this.close(s, undefined);
  }
}
