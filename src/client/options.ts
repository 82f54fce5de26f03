/** Peer client options, with defaults and units. */
export interface PeerClientOptions {
  /** HTTP/2 stream and connection receive window, bytes (DESIGN.md §8: 64 KiB caps loopback at ≈360 MB/s). Default 16 MiB. */
  readonly http2WindowBytes: number;
  /** Largest response accepted, bytes (server responses are ≤ 4 MiB plus one block). Default 16 MiB. */
  readonly readMaxBytes: number;
  /** Deadline of small calls (availability, push, status), ms. Default 5,000. */
  readonly smallCallTimeoutMs: number;
  /** Fixed part of a fetch deadline, ms. Default 2,000. */
  readonly fetchBaseTimeoutMs: number;
  /** Throughput a fetch deadline assumes for its expected bytes, bytes/s (slower peers time out). Default 2 MB/s. */
  readonly fetchMinBytesPerSecond: number;
  /** HTTP/2 keepalive ping interval, ms. Default 15,000. */
  readonly pingIntervalMs: number;
  /** Close an idle connection after this long, ms. Default 60,000. */
  readonly idleConnectionTimeoutMs: number;
  /** TLS: trust this CA (PEM) and use https; absent means plaintext HTTP/2. */
  readonly tlsCa?: Buffer | undefined;
  /**
   * Source address of the connection (a multi-homed host choosing its interface; the network
   * tests give each node a loopback address of its own). Absent: the OS chooses.
   */
  readonly localAddress?: string | undefined;
}

export const DEFAULT_PEER_CLIENT_OPTIONS: PeerClientOptions = {
  http2WindowBytes: 16 * 1024 * 1024,
  readMaxBytes: 16 * 1024 * 1024,
  smallCallTimeoutMs: 5_000,
  fetchBaseTimeoutMs: 2_000,
  fetchMinBytesPerSecond: 2_000_000,
  pingIntervalMs: 15_000,
  idleConnectionTimeoutMs: 60_000,
};

/** Deadline for a call expected to return `expectedBytes`: base + bytes / minimum throughput. */
export function adaptiveTimeoutMs(options: PeerClientOptions, expectedBytes: number): number {
  return Math.ceil(options.fetchBaseTimeoutMs + (expectedBytes / options.fetchMinBytesPerSecond) * 1000);
}
