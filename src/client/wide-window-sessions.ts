import type * as http2 from "node:http2";
import { Http2SessionManager } from "@connectrpc/connect-node";

/**
 * Widens the connection-level receive window of every session it opens to `windowBytes` (when
 * above HTTP/2's default of 65,535): with the default, a client whose event loop is busy takes
 * seconds to read a multi-megabyte response, and the server holds that call's capacity meanwhile.
 */
export class WideWindowSessionManager extends Http2SessionManager {
  private readonly widened = new WeakSet<http2.Http2Session>();

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
    if (session !== undefined && this.windowBytes > 65_535 && !this.widened.has(session)) {
      this.widened.add(session);
      try {
        session.setLocalWindowSize(this.windowBytes);
      } catch {
        // a session that closes meanwhile keeps its default window; the call fails on its own
      }
    }
    return stream;
  }
}
