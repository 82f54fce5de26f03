/**
 * A TCP proxy that stands at a destination node's public address and shapes every connection to
 * it with the Network's links: bytes client→server cross link src→dst, server→client cross dst→src,
 * where src is the node owning the client's source IP (`socket.remoteAddress`).
 *
 * Each direction of a connection is a `Pipe` with two stages:
 *   1. bandwidth: each chunk read is split into pieces (≤ pieceBytes) that wait, one at a time, for
 *      the link's token bucket, which all connections on that directed link share;
 *   2. latency: a piece that passed the bucket is due at max(now + latency + jitter, due time of the
 *      previous piece), so jitter delays but never reorders (TCP delivers in order anyway), then
 *      written once due and once the receiving socket is writable ('drain').
 * Bytes read but not yet written count as queued; above `highWaterBytes` the reading socket is
 * paused, so memory stays bounded whatever the link. Note that this caps a connection's throughput
 * at about highWaterBytes / latency, like a TCP window.
 *
 * Blocked links (stalled or partitioned) hold bytes: reading pauses and nothing is written until the
 * link is unblocked, as TCP retransmits through a blackhole. A connection accepted while its
 * nodes are partitioned is not dialed upstream until heal: the dialer sees a connected socket that
 * never answers, the closest a user-space proxy gets to a SYN blackhole. (Stalls do not hold dials.)
 *
 * Resets (random per `resetMeanMs`, or `Network.resetAll`) RST both sockets; an error on one side
 * RSTs the other; a clean half-close (FIN) is forwarded after the queued bytes. Every socket and the
 * server have 'error' listeners: a proxy must never crash the test process.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import type { Link, LinkListener, Network } from "./links.js";

export interface LinkProxyOptions {
  network: Network;
  /** Name of the destination node this proxy stands for. */
  node: string;
  /** Address to listen on. Default: the node's IP in the network. */
  host?: string;
  /** Port to listen on. Default 0 (any free port; see `address`). */
  port?: number;
  /** The destination's real listener. */
  targetHost: string;
  targetPort: number;
  /** Largest piece that waits for the token bucket at once, in bytes. Default 16 KiB. */
  pieceBytes?: number;
  /** Queued bytes per direction of a connection above which reading pauses. Default 256 KiB. */
  highWaterBytes?: number;
}

export const DEFAULT_PIECE_BYTES = 16 * 1024;
export const DEFAULT_HIGH_WATER_BYTES = 256 * 1024;

/** Sends an RST where possible (a connected TCP socket), else just destroys. Never throws. */
function rst(socket: Socket): void {
  try {
    if (socket.destroyed) return;
    if (socket.connecting) socket.destroy();
    else socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

/** One direction of one connection: reads `from`, shapes with `link`, writes `to`. */
class Pipe {
  to: Socket | undefined;
  queued = 0;
  /** The source sent FIN (and all its bytes are queued). */
  ended = false;
  private ingress: Buffer[] = [];
  private headReserved = false;
  private flight: { data: Buffer; at: number }[] = [];
  private lastAt = 0;
  private bucketTimer: NodeJS.Timeout | undefined;
  private flightTimer: NodeJS.Timeout | undefined;
  private waitingDrain = false;
  private done = false;

  constructor(
    private readonly from: Socket,
    readonly link: Link,
    private readonly proxy: LinkProxy,
  ) {
    from.on("data", (chunk: Buffer) => this.push(chunk));
    from.on("end", () => {
      this.ended = true;
      this.pump();
    });
  }

  /** All bytes the source sent have been written on (or there is nothing more to write). */
  get drained(): boolean {
    return this.done || (this.ended && this.queued === 0);
  }

  private push(chunk: Buffer): void {
    if (this.done) return;
    for (let i = 0; i < chunk.length; i += this.proxy.pieceBytes) {
      this.ingress.push(chunk.subarray(i, i + this.proxy.pieceBytes));
    }
    this.queued += chunk.length;
    this.proxy.notePeak(this.queued);
    this.pump();
  }

  /** Moves bytes as far as the link, the clock and the receiver allow; idempotent. */
  pump(): void {
    if (this.done) return;
    if (this.to && !this.link.blocked) {
      this.passBucket();
      this.deliver();
      if (this.ended && this.queued === 0 && !this.to.writableEnded && !this.to.destroyed) this.to.end();
    }
    // Pause above the high-water mark and while blocked (hold, don't read); resume otherwise.
    if (this.link.blocked || this.queued >= this.proxy.highWaterBytes) this.from.pause();
    else if (!this.ended) this.from.resume();
  }

  private passBucket(): void {
    while (!this.bucketTimer && this.ingress.length > 0) {
      const piece = this.ingress[0]!;
      const now = performance.now();
      if (!this.headReserved) {
        this.headReserved = true;
        const wait = this.link.bucket.reserve(piece.length, now);
        if (wait > 0) {
          this.bucketTimer = setTimeout(() => {
            this.bucketTimer = undefined;
            this.pump();
          }, wait);
          return;
        }
      }
      this.ingress.shift();
      this.headReserved = false;
      const { latencyMs } = this.link.profile;
      this.lastAt = Math.max(now + latencyMs + this.link.jitterSample(), this.lastAt);
      this.flight.push({ data: piece, at: this.lastAt });
    }
  }

  private deliver(): void {
    const to = this.to!;
    while (!this.flightTimer && !this.waitingDrain && this.flight.length > 0) {
      const head = this.flight[0]!;
      const delay = head.at - performance.now();
      // Timers fire on whole milliseconds; half a millisecond early is on time.
      if (delay > 0.5) {
        this.flightTimer = setTimeout(() => {
          this.flightTimer = undefined;
          this.pump();
        }, delay);
        return;
      }
      this.flight.shift();
      this.queued -= head.data.length;
      if (to.destroyed || to.writableEnded) continue; // receiver gone: drop
      this.link.bytesDelivered += head.data.length;
      if (!to.write(head.data)) {
        this.waitingDrain = true;
        to.once("drain", () => {
          this.waitingDrain = false;
          this.pump();
        });
      }
    }
  }

  /** Stops for good and frees the queues. */
  stop(): void {
    this.done = true;
    // Keep reading (and discarding) so the source can still see its peer's FIN and close.
    this.from.resume();
    clearTimeout(this.bucketTimer);
    clearTimeout(this.flightTimer);
    this.ingress = [];
    this.flight = [];
    this.queued = 0;
  }
}

/** One accepted connection and, once dialed, its upstream. */
class Conn implements LinkListener {
  readonly up: Pipe;
  down: Pipe | undefined;
  upstream: Socket | undefined;
  private closed = false;
  private resetTimer: NodeJS.Timeout | undefined;
  private resetMean: number | undefined;
  private readonly detach: (() => void)[];

  constructor(
    private readonly proxy: LinkProxy,
    readonly client: Socket,
    private readonly linkUp: Link,
    private readonly linkDown: Link,
  ) {
    linkUp.connectionsOpened++;
    this.detach = [linkUp.attach(this), linkDown.attach(this)];
    client.setNoDelay(true);
    client.on("error", () => this.abort(client));
    client.on("close", () => this.onClose(client));
    this.up = new Pipe(client, linkUp, proxy);
    this.wake();
  }

  get queued(): number {
    return this.up.queued + (this.down?.queued ?? 0);
  }

  wake(): void {
    if (this.closed) return;
    if (!this.upstream && !this.linkUp.partitioned && !this.linkDown.partitioned) this.dial();
    if (this.resetMean !== this.linkUp.profile.resetMeanMs) this.scheduleReset();
    this.up.pump();
    this.down?.pump();
  }

  reset(): void {
    if (this.closed) return;
    this.linkUp.connectionsReset++;
    rst(this.client);
    if (this.upstream) rst(this.upstream);
    this.finish();
  }

  /** Closes both sides without RST (the proxy is shutting down). */
  destroy(): void {
    this.client.destroy();
    this.upstream?.destroy();
    this.finish();
  }

  private dial(): void {
    // The destination sees the sender's own address, not the proxy's: its per-address limits
    // (handshakes in progress, sync admission) must count each node apart, as across a real
    // network. Any 127/8 address is this machine's, so the proxy can bind the client's.
    const source = this.client.remoteAddress?.replace(/^::ffff:/, "");
    const upstream = tcpConnect({
      host: this.proxy.targetHost,
      port: this.proxy.targetPort,
      allowHalfOpen: true,
      noDelay: true,
      ...(source?.startsWith("127.") ? { localAddress: source } : {}),
    });
    this.upstream = upstream;
    upstream.unref(); // see LinkProxy.listen()
    upstream.on("error", () => this.abort(upstream));
    upstream.on("close", () => this.onClose(upstream));
    upstream.on("connect", () => {
      this.up.to = upstream;
      this.up.pump();
    });
    this.down = new Pipe(upstream, this.linkDown, this.proxy);
    this.down.to = this.client;
  }

  private scheduleReset(): void {
    clearTimeout(this.resetTimer);
    this.resetMean = this.linkUp.profile.resetMeanMs;
    const delay = this.linkUp.resetDelaySample();
    // Memoryless, so drawing afresh when the mean changes is statistically sound.
    if (delay !== undefined) this.resetTimer = setTimeout(() => this.reset(), delay);
  }

  /** An error on one side: abort the other with an RST, as a real peer would see it. */
  private abort(side: Socket): void {
    if (this.closed) return;
    const other = side === this.client ? this.upstream : this.client;
    if (other) rst(other);
    this.finish();
  }

  /** A side closed: the pipe into it is dead; the pipe out of it drains if it ended cleanly. */
  private onClose(side: Socket): void {
    if (this.closed) return;
    const into = side === this.client ? this.down : this.up;
    const out = side === this.client ? this.up : this.down;
    const other = side === this.client ? this.upstream : this.client;
    into?.stop();
    if (!other || !out?.ended) {
      // Closed without FIN (destroyed) or before the upstream existed: nothing left to forward.
      other?.destroy();
      this.finish();
    } else if (other.destroyed) {
      this.finish();
    }
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.resetTimer);
    this.up.stop();
    this.down?.stop();
    for (const d of this.detach) d();
    this.proxy.forget(this);
  }
}

/** Listens at a node's public address and forwards shaped connections to its real listener. */
export class LinkProxy {
  readonly network: Network;
  readonly node: string;
  readonly targetHost: string;
  readonly targetPort: number;
  readonly pieceBytes: number;
  readonly highWaterBytes: number;
  /** The most bytes ever queued in one direction of one connection (for tests of the bound). */
  peakQueuedBytes = 0;
  private readonly server: Server;
  private readonly conns = new Set<Conn>();
  private readonly host: string;
  private readonly port: number;

  constructor(options: LinkProxyOptions) {
    this.network = options.network;
    this.node = options.node;
    this.host = options.host ?? options.network.ipOf(options.node);
    this.port = options.port ?? 0;
    this.targetHost = options.targetHost;
    this.targetPort = options.targetPort;
    this.pieceBytes = options.pieceBytes ?? DEFAULT_PIECE_BYTES;
    this.highWaterBytes = options.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
    this.server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    this.server.on("error", () => {}); // listen errors are reported by listen()
  }

  /** Starts listening; resolves with the bound address. */
  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once("error", onError);
      this.server.listen(this.port, this.host, () => {
        this.server.off("error", onError);
        // An emulator never keeps a test process alive on its own: the test's own waits do.
        this.server.unref();
        resolve(this.address);
      });
    });
  }

  get address(): { host: string; port: number } {
    const addr = this.server.address();
    if (addr === null || typeof addr === "string") throw new Error("LinkProxy is not listening");
    return { host: addr.address, port: addr.port };
  }

  /** Open connections (including those held by a partition). */
  get connections(): number {
    return this.conns.size;
  }

  /** Bytes read from either side and not yet written to the other, over all connections. */
  get queuedBytes(): number {
    let total = 0;
    for (const c of this.conns) total += c.queued;
    return total;
  }

  /** Stops listening and destroys every connection. */
  close(): Promise<void> {
    for (const c of [...this.conns]) c.destroy();
    // server.close waits for every accepted socket to end: bounded, so a straggler cannot hang it.
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, 2_000);
      timer.unref();
      this.server.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** @internal */
  notePeak(queued: number): void {
    if (queued > this.peakQueuedBytes) this.peakQueuedBytes = queued;
  }

  /** @internal */
  forget(conn: Conn): void {
    this.conns.delete(conn);
  }

  private accept(socket: Socket): void {
    socket.unref(); // see listen()
    const src = this.network.nodeOf(socket.remoteAddress);
    const conn = new Conn(this, socket, this.network.link(src, this.node), this.network.link(this.node, src));
    this.conns.add(conn);
  }
}
