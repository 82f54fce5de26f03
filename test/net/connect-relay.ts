/**
 * An HTTP CONNECT proxy that makes one node's outgoing connections leave from that node's own IP.
 *
 * A dagsync process run with `grpc_proxy=http://127.0.0.1:<port>` has grpc-js send
 * `CONNECT host:port HTTP/1.1` here (see @grpc/grpc-js http_proxy.js getProxiedConnection); the
 * relay dials the target with `localAddress` = the node's IP, so the LinkProxy at the target
 * identifies the source, answers `200 Connection established`, and then copies bytes both ways.
 * No shaping here: all shaping happens in the target's LinkProxy, which sees both directions.
 *
 * Bytes that follow the request header in the same read are forwarded to the target. A malformed
 * or oversized request gets 400, a failed dial 502; either way the client connection is closed.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

export interface ConnectRelayOptions {
  /** The node's own IP: the source address of every connection the relay dials. */
  localAddress: string;
  /** Address to listen on. Default 127.0.0.1. */
  host?: string;
  /** Port to listen on. Default 0 (any free port; see `url`). */
  port?: number;
  /** Largest accepted request header, in bytes. Default 8 KiB. */
  maxHeaderBytes?: number;
}

export const DEFAULT_MAX_HEADER_BYTES = 8 * 1024;

/** `host:port` or `[v6]:port` → parts; undefined if malformed. */
function parseAuthority(authority: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(authority);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  return host !== undefined && port > 0 && port < 65536 ? { host, port } : undefined;
}

/** One side closed: abort the other if it was an error, else finish it (pipe already sent FIN). */
function closeOther(other: Socket, hadError: boolean): void {
  if (hadError) other.destroy();
  else if (!other.writableEnded) other.end();
}

export class ConnectRelay {
  readonly localAddress: string;
  /** Tunnels established (200 sent). */
  connectionsRelayed = 0;
  /** Requests answered 400 or 502. */
  connectionsFailed = 0;
  private readonly host: string;
  private readonly port: number;
  private readonly maxHeaderBytes: number;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(options: ConnectRelayOptions) {
    this.localAddress = options.localAddress;
    this.host = options.host ?? "127.0.0.1";
    this.port = options.port ?? 0;
    this.maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
    this.server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    this.server.on("error", () => {}); // listen errors are reported by listen()
  }

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
    if (addr === null || typeof addr === "string") throw new Error("ConnectRelay is not listening");
    return { host: addr.address, port: addr.port };
  }

  /** The value for the `grpc_proxy` environment variable. */
  get url(): string {
    const { host, port } = this.address;
    return `http://${host}:${port}`;
  }

  /** Stops listening and destroys every connection. */
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
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

  private track(socket: Socket): void {
    socket.unref(); // see listen()
    this.sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => this.sockets.delete(socket));
  }

  private accept(client: Socket): void {
    this.track(client);
    let buffered = Buffer.alloc(0);
    let parsed = false;
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf("\r\n\r\n");
      if (end < 0 && buffered.length <= this.maxHeaderBytes) return;
      parsed = true;
      client.off("data", onData);
      client.pause();
      if (end < 0) return this.refuse(client, "400 Bad Request");
      const [method, authority, version] = buffered
        .subarray(0, end)
        .toString("latin1")
        .split("\r\n")[0]!
        .split(" ");
      const target =
        method === "CONNECT" && version?.startsWith("HTTP/1.") ? parseAuthority(authority ?? "") : undefined;
      if (!target) this.refuse(client, "400 Bad Request");
      else this.tunnel(client, target, buffered.subarray(end + 4));
    };
    client.on("data", onData);
    client.on("end", () => {
      if (!parsed) client.destroy(); // FIN before a full request
    });
  }

  private refuse(client: Socket, status: string): void {
    this.connectionsFailed++;
    // Discard whatever else it sends (bounded memory) and close once it has the answer.
    client.on("data", () => {});
    client.resume();
    client.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  }

  private tunnel(client: Socket, target: { host: string; port: number }, head: Buffer): void {
    const upstream = tcpConnect({
      ...target,
      localAddress: this.localAddress,
      allowHalfOpen: true,
      noDelay: true,
    });
    this.track(upstream);
    let connected = false;
    upstream.once("error", () => {
      if (!connected) this.refuse(client, "502 Bad Gateway");
    });
    // Gone before the tunnel opened: drop the dial.
    client.once("close", () => connected || upstream.destroy());
    upstream.once("connect", () => {
      connected = true;
      this.connectionsRelayed++;
      client.setNoDelay(true);
      client.write("HTTP/1.1 200 Connection established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      // pipe() forwards backpressure and FIN (half-close); an abortive close aborts the other side.
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("close", (hadError) => closeOther(upstream, hadError));
      upstream.on("close", (hadError) => closeOther(client, hadError));
    });
  }
}
