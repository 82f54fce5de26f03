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
 */
import { randomBytes } from "node:crypto";
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { toHex } from "../core/bytes.js";
import type { CommitteeView } from "../core/committee.js";
import { sha256 } from "../core/digest.js";
import { Gcra } from "../core/gcra.js";
import type { SignatureVerifier } from "../core/types.js";
import { verifySignedBlock } from "../core/verify.js";
import { type BlockEntry, parseSignedBlock } from "../core/wire.js";
import type { Ed25519Signer } from "../crypto/keys.js";
import { Blocker } from "./blocker.js";
import { DedupCache } from "./dedup.js";
import {
  decodeAuth,
  decodeHello,
  encodeAuth,
  encodeFrame,
  encodeHello,
  type Lane,
  laneOf,
  parseFrame,
  type RawFrame,
} from "./frames.js";
import {
  checkHello,
  type HelloView,
  helloView,
  NonceCache,
  type Role,
  sameKey,
  transcript,
} from "./handshake.js";
import type { GossipMetrics } from "./metrics.js";
import {
  type GossipOptions,
  type GossipOptionsInput,
  resolveGossipOptions,
  transportReceiveLimit,
} from "./options.js";
import { isReceiveLimitError, TransportLimitWatch } from "./transport-limit.js";

export const GOSSIP_CONNECT_PATH = "/dagsync.v1.Gossip/Connect";

const identity = {
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
type Duplex =
  | grpc.ServerDuplexStream<Uint8Array, Uint8Array>
  | grpc.ClientDuplexStream<Uint8Array, Uint8Array>;

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
  readonly now?: (() => number) | undefined;
}

/** Why a peer is blocked; the label of dagsync_gossip_peer_blocks_total. */
const MISBEHAVIOUR = {
  oversized_frame: "oversized frame",
  junk_frame: "junk frame",
  unexpected_frame: "unexpected frame",
  invalid_block: "invalid signed block",
} as const;
type MisbehaviourKind = keyof typeof MISBEHAVIOUR;

interface InboundItem {
  readonly payload: Uint8Array;
  /** The whole frame's size (the payload is a view into it, so the frame is what is held). */
  readonly frameBytes: number;
  readonly at: number;
}

/** One authenticated peer connection. */
class Session {
  readonly keyHex: string;
  readonly inbound: Record<Lane, InboundItem[]> = { broadcast: [], mempool: [] };
  /** Frame bytes held in `inbound`, per lane (the `inboundBacklogBytes` limit). */
  readonly inboundBytes: Record<Lane, number> = { broadcast: 0, mempool: 0 };
  readonly outbound: Record<Lane, Uint8Array[]> = { broadcast: [], mempool: [] };
  /** Frame bytes held in `outbound`, per lane (the `outboundBacklogBytes` limit). */
  readonly outboundBytes: Record<Lane, number> = { broadcast: 0, mempool: 0 };
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

  /** Writes queued frames, BROADCAST first, until the stream pushes back. */
  pump(): void {
    if (this.closed || this.waitingDrain) return;
    for (;;) {
      const lane: Lane = this.outbound.broadcast.length > 0 ? "broadcast" : "mempool";
      const frame = this.outbound[lane].shift();
      if (frame === undefined) return;
      // Once written, the frame is grpc-js's (bounded by the stream's high-water mark), not the backlog's.
      this.outboundBytes[lane] -= frame.byteLength;
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
}

export interface GossipPeerInfo {
  readonly key: string;
  readonly role: Role;
  readonly label: string;
}

export class GossipNode {
  readonly options: GossipOptions;
  private readonly sessions = new Map<string, Session>();
  private readonly blocker: Blocker;
  private readonly nonces: NonceCache;
  private readonly dedup: DedupCache;
  private readonly quotas: Record<Lane, Gcra>;
  private readonly now: () => number;
  private readonly blockListeners = new Set<(block: BlockEntry, from: string) => void>();
  private readonly txListeners = new Set<(tx: Uint8Array, from: string) => void>();
  private readonly dialers = new Map<string, { stop: () => void }>();
  private processing = false;
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
    this.nonces = new NonceCache(o.maxHelloAgeMs + o.maxHelloSkewMs);
    this.dedup = new DedupCache(o.dedupCapacity, o.dedupMaxAgeMs);
    this.quotas = {
      broadcast: new Gcra(o.broadcast.quota, 10_000),
      mempool: new Gcra(o.mempool.quota, 10_000),
    };
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
    return [...this.sessions.values()].map((s) => ({ key: s.keyHex, role: s.role, label: s.label }));
  }

  blockedPeers() {
    return this.blocker.entries(this.now());
  }

  onBlock(listener: (block: BlockEntry, from: string) => void): () => void {
    this.blockListeners.add(listener);
    return () => this.blockListeners.delete(listener);
  }

  onTransaction(listener: (tx: Uint8Array, from: string) => void): () => void {
    this.txListeners.add(listener);
    return () => this.txListeners.delete(listener);
  }

  /** Broadcasts our own signed block (encoded SignedBlock) to every peer. */
  publishBlock(bytes: Uint8Array): void {
    if (!this.dedup.firstSight(`b${toHex(sha256(bytes))}`, this.now())) return;
    this.sendToAll("broadcast", encodeFrame("block", bytes), undefined);
  }

  publishTransaction(tx: Uint8Array): void {
    if (!this.dedup.firstSight(`t${toHex(sha256(tx))}`, this.now())) return;
    this.sendToAll("mempool", encodeFrame("transaction", tx), undefined);
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

  private policy() {
    return {
      chainId: this.config.chainId,
      now: this.now(),
      maxAgeMs: this.options.maxHelloAgeMs,
      maxSkewMs: this.options.maxHelloSkewMs,
      isAllowed: (k: Uint8Array) => this.isAllowed(k),
      blockedUntil: (k: Uint8Array) => this.blocker.blockedUntil(k, this.now()),
    };
  }

  // ---- listener side -------------------------------------------------------------------------

  /** The grpc-js handler for Gossip.Connect. */
  readonly connectHandler = (call: grpc.ServerDuplexStream<Uint8Array, Uint8Array>): void => {
    const mine = this.myHello();
    let theirs: HelloView | undefined;
    let done = false;
    const peerLabel = call.getPeer();
    const refuse = (code: grpc.status, reason: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.config.metrics?.handshakes.inc({ role: "listener", result: grpc.status[code] ?? String(code) });
      this.config.log.info({ peer: peerLabel, reason }, "gossip handshake refused");
      call.removeAllListeners("data");
      call.emit("error", { code, details: reason, metadata: new grpc.Metadata() });
    };
    const timer = setTimeout(
      () =>
        refuse(
          grpc.status.UNAUTHENTICATED,
          `handshake not finished within ${this.options.handshakeTimeoutMs} ms`,
        ),
      this.options.handshakeTimeoutMs,
    );
    call.on("error", () => clearTimeout(timer));
    call.on("cancelled", () => clearTimeout(timer));
    let session: Session | undefined;
    this.transportWatch.onRejected(call.metadata, (details) => {
      if (session !== undefined) {
        const status = this.block(session, "oversized_frame", `over the transport limit: ${details}`);
        this.close(session, { code: status.code, reason: status.details });
        return status; // sent instead of grpc-js's RESOURCE_EXHAUSTED: the peer learns it is blocked
      }
      // Before the handshake the sender's key is not proven: blocking it would let anyone get a
      // committee member blocked. grpc-js's RESOURCE_EXHAUSTED ends the stream; it is counted.
      done = true;
      clearTimeout(timer);
      this.config.metrics?.handshakes.inc({ role: "listener", result: "RESOURCE_EXHAUSTED" });
      this.config.log.info(
        { peer: peerLabel, reason: details },
        "gossip handshake refused: frame over the transport limit",
      );
      return undefined;
    });
    const onData = (bytes: Uint8Array) => {
      if (done) return;
      let frame: RawFrame;
      try {
        frame = parseFrame(bytes);
      } catch (e) {
        return refuse(grpc.status.UNAUTHENTICATED, `junk before the handshake: ${(e as Error).message}`);
      }
      if (theirs === undefined) {
        if (frame.kind !== "hello")
          return refuse(grpc.status.UNAUTHENTICATED, `${frame.kind} frame before the handshake`);
        let hello: HelloView;
        try {
          hello = helloView(decodeHello(frame.payload));
        } catch {
          return refuse(grpc.status.UNAUTHENTICATED, "hello does not decode");
        }
        const refusal = checkHello(hello, this.policy());
        if (refusal !== undefined)
          return refuse(
            refusal.kind === "permission" ? grpc.status.PERMISSION_DENIED : grpc.status.UNAUTHENTICATED,
            refusal.reason,
          );
        if (!this.nonces.admit(hello.nonce, this.now()))
          return refuse(grpc.status.UNAUTHENTICATED, "replayed hello (nonce already seen)");
        theirs = hello;
        call.write(encodeHello({ ...mine, timestampMs: BigInt(mine.timestampMs) }));
        call.write(
          encodeAuth(this.config.networkKey.sign(transcript("listener", this.config.chainId, hello, mine))),
        );
        return;
      }
      if (frame.kind !== "auth")
        return refuse(grpc.status.UNAUTHENTICATED, `${frame.kind} frame before the handshake finished`);
      let signature: Uint8Array;
      try {
        signature = decodeAuth(frame.payload).signature;
      } catch {
        return refuse(grpc.status.UNAUTHENTICATED, "auth does not decode");
      }
      if (
        !this.config.verifier.verify(
          theirs.networkKey,
          transcript("dialer", this.config.chainId, theirs, mine),
          signature,
        )
      )
        return refuse(grpc.status.UNAUTHENTICATED, "bad transcript signature");
      done = true;
      clearTimeout(timer);
      call.off("data", onData);
      this.config.metrics?.handshakes.inc({ role: "listener", result: "OK" });
      session = new Session(theirs.networkKey, "listener", peerLabel, call);
      this.establish(session);
    };
    call.on("data", onData);
  };

  // ---- dialer side ---------------------------------------------------------------------------

  /**
   * Keeps a session to `address` (a peer's gossip address), reconnecting with exponential
   * backoff and jitter. `expectedKey`, when known (committee members), must be the listener's.
   */
  dial(address: string, expectedKey?: Uint8Array): void {
    if (this.dialers.has(address)) return;
    let stopped = false;
    let attempt = 0;
    let timer: NodeJS.Timeout | undefined;
    let client: grpc.Client | undefined;
    const { credentials, channelOptions } = dialCredentials(address, this.config.tlsCa);
    const schedule = () => {
      if (stopped || this.stopped) return;
      const exp = Math.min(
        this.options.reconnectMaxMs,
        this.options.reconnectBaseMs * 2 ** Math.min(attempt, 16),
      );
      attempt++;
      timer = setTimeout(connect, attempt === 1 ? 0 : exp * (0.5 + Math.random() * 0.5));
    };
    const connect = () => {
      if (stopped || this.stopped) return;
      if (expectedKey !== undefined && this.sessions.has(toHex(expectedKey))) {
        // Already connected (perhaps they dialed us): check again later.
        attempt = 0;
        timer = setTimeout(connect, this.options.reconnectMaxMs);
        return;
      }
      client ??= new grpc.Client(address, credentials, {
        ...channelOptions,
        // As on the listener: frames a little over maxFrameBytes reach receive(), bigger ones are
        // cut off by grpc-js and reported as an "error" (see establish); both block the listener.
        "grpc.max_receive_message_length": transportReceiveLimit(this.options),
        "grpc.max_send_message_length": this.options.maxFrameBytes,
        "grpc.keepalive_time_ms": 15_000,
      });
      const call = client.makeBidiStreamRequest(
        GOSSIP_CONNECT_PATH,
        identity.serialize,
        identity.deserialize,
      );
      this.runDialerHandshake(call, address, expectedKey).then(
        (session) => {
          attempt = 0;
          call.once("close", () => schedule());
          if (session === undefined) schedule();
        },
        () => schedule(),
      );
    };
    this.dialers.set(address, {
      stop: () => {
        stopped = true;
        clearTimeout(timer);
        client?.close();
      },
    });
    schedule();
  }

  private runDialerHandshake(
    call: grpc.ClientDuplexStream<Uint8Array, Uint8Array>,
    address: string,
    expectedKey: Uint8Array | undefined,
  ): Promise<Session | undefined> {
    return new Promise((resolve) => {
      const mine = this.myHello();
      let theirs: HelloView | undefined;
      let finished = false;
      const fail = (reason: string) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        this.config.metrics?.handshakes.inc({ role: "dialer", result: "failed" });
        this.config.log.debug({ peer: address, reason }, "gossip dial failed");
        call.cancel();
        resolve(undefined);
      };
      const timer = setTimeout(() => fail("handshake timeout"), this.options.handshakeTimeoutMs);
      call.on("error", (e: grpc.ServiceError) => fail(`${grpc.status[e.code] ?? e.code}: ${e.details}`));
      call.on("end", () => fail("stream ended during the handshake"));
      const onData = (bytes: Uint8Array) => {
        let frame: RawFrame;
        try {
          frame = parseFrame(bytes);
        } catch {
          return fail("junk from listener");
        }
        if (theirs === undefined) {
          if (frame.kind !== "hello") return fail(`listener sent ${frame.kind} before hello`);
          try {
            theirs = helloView(decodeHello(frame.payload));
          } catch {
            return fail("listener hello does not decode");
          }
          const refusal = checkHello(theirs, this.policy());
          if (refusal !== undefined) return fail(`listener refused: ${refusal.reason}`);
          if (expectedKey !== undefined && !sameKey(expectedKey, theirs.networkKey))
            return fail("listener has another network key");
          return;
        }
        if (frame.kind !== "auth") return fail(`listener sent ${frame.kind} before auth`);
        let signature: Uint8Array;
        try {
          signature = decodeAuth(frame.payload).signature;
        } catch {
          return fail("listener auth does not decode");
        }
        if (
          !this.config.verifier.verify(
            theirs.networkKey,
            transcript("listener", this.config.chainId, mine, theirs),
            signature,
          )
        )
          return fail("bad listener transcript signature");
        call.write(
          encodeAuth(this.config.networkKey.sign(transcript("dialer", this.config.chainId, mine, theirs))),
        );
        finished = true;
        clearTimeout(timer);
        call.off("data", onData);
        call.removeAllListeners("error");
        call.removeAllListeners("end");
        this.config.metrics?.handshakes.inc({ role: "dialer", result: "OK" });
        const session = new Session(theirs.networkKey, "dialer", address, call);
        this.establish(session);
        resolve(session);
      };
      call.on("data", onData);
      call.write(encodeHello({ ...mine, timestampMs: BigInt(mine.timestampMs) }));
    });
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
    const s = session.stream;
    if (session.role === "listener") {
      if (status === undefined) (s as grpc.ServerDuplexStream<Uint8Array, Uint8Array>).end();
      else s.emit("error", { code: status.code, details: status.reason, metadata: new grpc.Metadata() });
    } else (s as grpc.ClientDuplexStream<Uint8Array, Uint8Array>).cancel();
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
    const m = this.config.metrics;
    m?.received.inc({ lane });
    const now = this.now();
    if (!this.quotas[lane].take(`${session.keyHex}`, performance.now()).ok) {
      m?.dropped.inc({ lane, reason: "quota" });
      return;
    }
    const queue = session.inbound[lane];
    const limits = this.options[lane];
    if (queue.length >= limits.inboundBacklog) {
      m?.dropped.inc({ lane, reason: "backlog" });
      return;
    }
    if (session.inboundBytes[lane] + bytes.byteLength > limits.inboundBacklogBytes) {
      m?.dropped.inc({ lane, reason: "backlog_bytes" });
      return;
    }
    queue.push({ payload: frame.payload, frameBytes: bytes.byteLength, at: now });
    session.inboundBytes[lane] += bytes.byteLength;
    this.scheduleProcessing();
  }

  private scheduleProcessing(): void {
    if (this.processing) return;
    this.processing = true;
    setImmediate(() => this.process());
  }

  /** Drains inbound backlogs, BROADCAST of every peer before any MEMPOOL, a batch per turn. */
  private process(): void {
    let budget = this.options.processBatch;
    for (const lane of ["broadcast", "mempool"] as const)
      for (const session of this.sessions.values()) {
        const queue = session.inbound[lane];
        while (budget > 0 && queue.length > 0 && !session.closed) {
          const item = queue.shift()!;
          session.inboundBytes[lane] -= item.frameBytes;
          budget--;
          this.config.metrics?.processingSeconds.observe({ lane }, (this.now() - item.at) / 1000);
          if (lane === "broadcast") this.handleBlock(session, item.payload);
          else this.handleTransaction(session, item.payload);
        }
        if (budget === 0) break;
      }
    this.processing = false;
    const more = [...this.sessions.values()].some(
      (s) => s.inbound.broadcast.length > 0 || s.inbound.mempool.length > 0,
    );
    if (more) this.scheduleProcessing();
  }

  private handleBlock(session: Session, bytes: Uint8Array): void {
    const digestKey = `b${toHex(sha256(bytes))}`;
    if (!this.dedup.firstSight(digestKey, this.now())) {
      this.config.metrics?.duplicates.inc({ lane: "broadcast" });
      return;
    }
    let entry: BlockEntry;
    try {
      entry = parseSignedBlock(bytes);
    } catch (e) {
      return this.misbehaved(session, "invalid_block", (e as Error).message);
    }
    // Only a block of the epoch whose committee we hold can be judged (module comment).
    const committee = this.config.committee();
    if (entry.epoch !== committee.epoch) {
      const reason = entry.epoch > committee.epoch ? "unknown_epoch" : "stale_epoch";
      this.config.metrics?.dropped.inc({ lane: "broadcast", reason });
      return;
    }
    try {
      verifySignedBlock(entry, committee, this.config.chainId, this.config.verifier);
    } catch (e) {
      return this.misbehaved(session, "invalid_block", (e as Error).message);
    }
    this.config.metrics?.delivered.inc({ lane: "broadcast" });
    for (const l of this.blockListeners) l(entry, session.keyHex);
    this.sendToAll("broadcast", encodeFrame("block", bytes), session);
  }

  private handleTransaction(session: Session, tx: Uint8Array): void {
    if (!this.dedup.firstSight(`t${toHex(sha256(tx))}`, this.now())) {
      this.config.metrics?.duplicates.inc({ lane: "mempool" });
      return;
    }
    this.config.metrics?.delivered.inc({ lane: "mempool" });
    for (const l of this.txListeners) l(tx, session.keyHex);
    this.sendToAll("mempool", encodeFrame("transaction", tx), session);
  }

  private sendToAll(lane: Lane, frame: Uint8Array, except: Session | undefined): void {
    for (const s of this.sessions.values()) {
      if (s === except || s.closed) continue;
      const queue = s.outbound[lane];
      const limits = this.options[lane];
      if (queue.length >= limits.outboundBacklog) {
        this.config.metrics?.dropped.inc({ lane, reason: "outbound_backlog" });
        continue;
      }
      if (s.outboundBytes[lane] + frame.byteLength > limits.outboundBacklogBytes) {
        this.config.metrics?.dropped.inc({ lane, reason: "outbound_backlog_bytes" });
        continue;
      }
      queue.push(frame);
      s.outboundBytes[lane] += frame.byteLength;
      if (except !== undefined) this.config.metrics?.relayed.inc({ lane });
      s.pump();
    }
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

/** TLS name sent (SNI) when dialing an IP address: any DNS name; the certificate is checked against the IP. */
const IP_DIAL_SERVERNAME = "dagsync-peer";

/**
 * Client credentials for dialing `address`. grpc-js sends the host as the TLS server name even
 * when it is an IP address, which RFC 6066 forbids and Node reports with a DEP0123 warning on
 * every dialing node. For an IP host, the server name becomes a fixed DNS name and the server's
 * certificate is still checked against the IP dialed (its subjectAltName must hold it).
 */
export function dialCredentials(
  address: string,
  tlsCa: Buffer | undefined,
): { credentials: grpc.ChannelCredentials; channelOptions: grpc.ChannelOptions } {
  if (tlsCa === undefined) return { credentials: grpc.credentials.createInsecure(), channelOptions: {} };
  const host = address.startsWith("[")
    ? address.slice(1, address.indexOf("]"))
    : address.replace(/:\d+$/, "");
  if (isIP(host) === 0) return { credentials: grpc.credentials.createSsl(tlsCa), channelOptions: {} };
  return {
    credentials: grpc.credentials.createSsl(tlsCa, null, null, {
      checkServerIdentity: (_servername, cert) => checkServerIdentity(host, cert),
    }),
    channelOptions: { "grpc.ssl_target_name_override": IP_DIAL_SERVERNAME },
  };
}
