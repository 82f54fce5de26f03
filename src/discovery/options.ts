/** Every limit of discovery (DESIGN.md §9), with its default and unit, in one place. */
import {
  NODE_INFO_MAX_ADDRESS_BYTES,
  NODE_INFO_MAX_AGE_MS,
  NODE_INFO_MAX_FUTURE_MS,
} from "../core/node-info.js";

export interface DiscoveryOptions {
  /** Peers in the known set, all sources together; only exchange entries are evicted. Default 1,000. */
  readonly maxKnownPeers: number;
  /** Entries of one GetKnownPeers answer considered; the rest are ignored and counted. Default 200. */
  readonly maxEntriesPerAnswer: number;
  /** How far ahead of now a NodeInfo timestamp may be, ms. Default 30,000 (30 s). */
  readonly maxFutureMs: number;
  /** How old a NodeInfo timestamp may be, ms. Default 86,400,000 (24 h). */
  readonly maxAgeMs: number;
  /** Longest sync or gossip address, UTF-8 bytes. Default 256. */
  readonly maxAddressBytes: number;
  /** Backoff after the first dial failure, ms; doubled on each further one. Default 1,000. */
  readonly dialBackoffBaseMs: number;
  /** Longest dial backoff, ms. Default 300,000 (5 min). */
  readonly dialBackoffMaxMs: number;
  /** Consecutive dial failures after which a peer leaves the working set (kept, with backoff). Default 3. */
  readonly maxDialFailures: number;
}

export const DEFAULT_DISCOVERY_OPTIONS: DiscoveryOptions = {
  maxKnownPeers: 1_000,
  maxEntriesPerAnswer: 200,
  maxFutureMs: NODE_INFO_MAX_FUTURE_MS,
  maxAgeMs: NODE_INFO_MAX_AGE_MS,
  maxAddressBytes: NODE_INFO_MAX_ADDRESS_BYTES,
  dialBackoffBaseMs: 1_000,
  dialBackoffMaxMs: 300_000,
  maxDialFailures: 3,
};

export function resolveDiscoveryOptions(input: Partial<DiscoveryOptions> = {}): DiscoveryOptions {
  return { ...DEFAULT_DISCOVERY_OPTIONS, ...input };
}
