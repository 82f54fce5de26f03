/**
 * Caps on HTTP/2 sessions (connections): server-wide and per address. A crowd, or one address
 * opening connection after connection, would otherwise cost a session's buffers each without
 * any call being made. A session over a cap is closed as it opens; the client sees UNAVAILABLE
 * and backs off. (Idle sessions are closed by grpc-js's `grpc.max_connection_idle_ms`.)
 *
 * grpc-js offers no hook for sessions, so this listens to the `session` event of the HTTP/2
 * servers it created (its `http2Servers` map, grpc-js 1.10 to 1.14). Should a release rename
 * that map, `attach` reports false, the server logs that the caps are not enforced, and
 * test/integration/server-admission.test.ts fails.
 */
import type { Http2Server, Http2Session } from "node:http2";

export interface SessionLimitOptions {
  readonly maxSessions: number;
  readonly maxSessionsPerPeer: number;
}

export class SessionLimit {
  private total = 0;
  private readonly perPeer = new Map<string, number>();
  private readonly attached = new WeakSet<object>();
  refused = 0;

  constructor(
    private readonly options: SessionLimitOptions,
    private readonly onRefused: (peer: string, why: string) => void = () => {},
  ) {}

  get sessions(): number {
    return this.total;
  }

  /** Listens to the sessions of every HTTP/2 server of a grpc-js Server; false if none is found. */
  attach(grpcServer: object): boolean {
    const servers = (grpcServer as { http2Servers?: Map<Http2Server, unknown> }).http2Servers;
    if (!(servers instanceof Map) || servers.size === 0) return false;
    for (const server of servers.keys()) {
      if (this.attached.has(server)) continue;
      this.attached.add(server);
      server.on("session", (session: Http2Session) => this.onSession(session));
    }
    return true;
  }

  private onSession(session: Http2Session): void {
    const peer = session.socket?.remoteAddress ?? "unknown";
    const mine = this.perPeer.get(peer) ?? 0;
    const why =
      this.total >= this.options.maxSessions
        ? `the server has ${this.options.maxSessions} connections (its cap)`
        : mine >= this.options.maxSessionsPerPeer
          ? `${peer} has ${this.options.maxSessionsPerPeer} connections (the per-address cap)`
          : undefined;
    if (why !== undefined) {
      this.refused++;
      this.onRefused(peer, why);
      session.destroy();
      return;
    }
    this.total++;
    this.perPeer.set(peer, mine + 1);
    session.once("close", () => {
      this.total--;
      const left = (this.perPeer.get(peer) ?? 1) - 1;
      if (left <= 0) this.perPeer.delete(peer);
      else this.perPeer.set(peer, left);
    });
  }
}
