import type * as http2 from "node:http2";
import { Http2SessionManager } from "@connectrpc/connect-node";

/**
 * Widens the connection-level receive window of every session it opens to `windowBytes` (when
 * above HTTP/2's default of 65,535): with the default, a client whose event loop is busy takes
 * seconds to read a multi-megabyte response, and the server holds that call's capacity meanwhile.
 * Also keeps a session's late error from crashing the process (see `request`).
 */
export class WideWindowSessionManager extends Http2SessionManager {
  private readonly seen = new WeakSet<http2.Http2Session>();

  constructor(
    url: string,
    private readonly windowBytes: number,
    ping: { pingIntervalMs: number; idleConnectionTimeoutMs: number },
    options: http2.ClientSessionOptions | http2.SecureClientSessionOptions,
  ) {
    super(url, ping, options);
  }

  override async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(method, path, headers, options);
    const session = stream.session;
    if (session !== undefined && !this.seen.has(session)) {
      this.seen.add(session);
      // connect-node destroys a session that receives GOAWAY with no open streams, with an error
      // Node raises on the session only once its socket has closed; if the manager has moved on
      // by then (a new request reconnected), nobody listens and the process dies on an
      // "unhandled 'error' event" (connect-es #1768, seen in the network tests when a restarted
      // peer closed idle connections). Every failure still reaches the calls through the
      // manager's own listeners; this one only keeps a late error from being uncaught.
      session.on("error", () => {});
      if (this.windowBytes > 65_535)
        try {
          session.setLocalWindowSize(this.windowBytes);
        } catch {
          // a session that closes meanwhile keeps its default window; the call fails on its own
        }
    }
    return stream;
  }
}
