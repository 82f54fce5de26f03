/**
 * Typed peer errors. The sync engine decides by `kind`: network and deadline errors back off,
 * `rate_limited` waits the hint, `invalid_data` bans, `unavailable_range` re-plans.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { DagsyncError } from "../core/errors.js";

export type PeerErrorKind =
  /** Connection refused, reset, TLS failure, unavailable. */
  | "network"
  /** The deadline passed (or the peer stalled). */
  | "deadline"
  /** RESOURCE_EXHAUSTED: the peer asks us to slow down. */
  | "rate_limited"
  /** OUT_OF_RANGE or NOT_FOUND: the peer does not have what we asked for. */
  | "unavailable_range"
  /** The peer sent bytes that fail verification or decoding. */
  | "invalid_data"
  /** We aborted the call ourselves. */
  | "cancelled"
  /** Any other gRPC status. */
  | "rpc";

export class PeerError extends DagsyncError {
  override readonly name = "PeerError";
  /** The gRPC status the peer answered with, when it answered with one (e.g. Code.OutOfRange). */
  grpcCode: Code | undefined;
  constructor(
    readonly kind: PeerErrorKind,
    readonly peer: string,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(kind, `peer ${peer}: ${message}`);
  }

  static from(peer: string, method: string, e: unknown): PeerError {
    if (e instanceof PeerError) return e;
    const err = ConnectError.from(e);
    const error = PeerError.classify(peer, method, err);
    error.grpcCode = err.code;
    return error;
  }

  private static classify(peer: string, method: string, err: ConnectError): PeerError {
    const detail = `${method}: ${err.rawMessage}`;
    switch (err.code) {
      case Code.DeadlineExceeded:
        return new PeerError("deadline", peer, `${method}: deadline exceeded`);
      case Code.Canceled:
        return new PeerError("cancelled", peer, `${method}: cancelled`);
      case Code.ResourceExhausted: {
        // Our own read limit tripping means the peer sent an oversized response: that is its fault.
        if (/readMaxBytes|larger than configured/i.test(err.rawMessage))
          return new PeerError("invalid_data", peer, `${method}: oversized response (${err.rawMessage})`);
        const hint = Number(err.metadata.get("retry-after-ms") ?? Number.NaN);
        return new PeerError("rate_limited", peer, detail, Number.isFinite(hint) ? hint : undefined);
      }
      case Code.OutOfRange:
      case Code.NotFound:
        return new PeerError("unavailable_range", peer, detail);
      case Code.Unavailable:
      case Code.Unknown:
      case Code.Internal:
        return new PeerError("network", peer, detail);
      default:
        return new PeerError("rpc", peer, `${detail} (${Code[err.code]})`);
    }
  }
}
