/** What every StateSync/Admin handler (one file each in this folder) is given, and their helpers. */
import type { Logger } from "pino";
import { rawFieldSize } from "../../core/index.js";
import type { PeerStatus } from "../../gen/dagsync/v1/admin_pb.js";
import type { PushCommitRequest } from "../../gen/dagsync/v1/sync_pb.js";
import type { Store, SubDagFeed } from "../../store/index.js";
import type { BulkGate } from "../bulk-gate.js";
import type { CallAdmission } from "../call-admission.js";
import { invalidArgument, outOfRange } from "../errors.js";
import type { ServerMetrics } from "../metrics.js";
import type { ServerOptions } from "../options.js";

/**
 * What the server's SubscribeCommits follows: the store's SubDagFeed, which whoever applies commits
 * publishes to (the sync engine's broadcast, serve's live producer). Without one, the server makes
 * its own, which replays the store and then waits.
 */
export type CommitFeed = SubDagFeed;

export interface StateSyncDeps {
  readonly store: Store;
  readonly options: ServerOptions;
  readonly metrics: ServerMetrics;
  readonly log: Logger;
  readonly feed?: CommitFeed | undefined;
  /** A peer's PushCommit hint, for the sync engine (never trusted). */
  readonly onPushCommit?: ((peer: string, request: PushCommitRequest) => void) | undefined;
  /** The node's status for Admin/GetStatus, beyond what the store knows. */
  readonly status?: (() => NodeStatus) | undefined;
  /**
   * Admits bulk calls before their request is read and holds the admission until the response
   * is written (bulk-gate.ts); without it the handlers admit them, after decoding.
   */
  readonly gate?: BulkGate | undefined;
  /** Peer exchange (GetKnownPeers); without it the RPC answers an empty list. */
  readonly discovery?: DiscoveryDeps | undefined;
}

/**
 * What GetKnownPeers serves, provided by whoever owns the known set (src/discovery, wired by
 * node): the server never imports discovery. Entries are encoded SignedNodeInfo, as received.
 */
export interface DiscoveryDeps {
  /** This node's current signed info, or undefined when it does not advertise. */
  readonly self?: (() => Uint8Array | undefined) | undefined;
  /** Up to `limit` signed infos of known peers. */
  readonly peers?: ((limit: number) => readonly Uint8Array[]) | undefined;
  /**
   * A caller introduced itself (GetKnownPeersRequest.caller): its encoded SignedNodeInfo, not
   * validated here; the receiver applies DESIGN §9's rules. `peer` is the remote address.
   */
  readonly onCaller?: ((peer: string, signedInfo: Uint8Array) => void) | undefined;
}

/** What the node adds to Admin/GetStatus beyond the store's watermarks. */
export interface NodeStatus {
  readonly syncState?: string;
  readonly role?: string;
  readonly targetCommit?: bigint;
  readonly peers?: PeerStatus[];
  /** While the sync state is "stalled": why, and since when (ms since the Unix epoch). */
  readonly stallReason?: string;
  readonly stalledSinceMs?: bigint;
}

/** A handler's dependencies and what all handlers of one server share. */
export interface RpcContext {
  readonly deps: StateSyncDeps;
  readonly admission: CallAdmission;
  /** deps.feed, or the server's own when none was given. */
  readonly feed: SubDagFeed;
}

/**
 * Commit indices (and heights) are JS numbers inside dagsync; a u64 above 2^53 − 1 would round to
 * another index. So such a value is refused, naming it exactly, before anything converts it.
 */
export function index(what: string, value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER))
    throw invalidArgument(
      `${what} ${value} is above 2^53 − 1 (${Number.MAX_SAFE_INTEGER}), the largest index dagsync accepts`,
    );
  return Number(value);
}

/** Bytes a repeated length-delimited field adds around a payload: the tag and the varint length. */
export function fieldOverhead(length: number): number {
  return rawFieldSize(length) - length;
}

/** Where this node can serve from, or OUT_OF_RANGE saying what it can serve. */
export function checkAvailable(store: Store, start: number): void {
  const { lowestAvailable, highestSynced } = store.watermarks;
  if (start < lowestAvailable || start > highestSynced)
    throw outOfRange(
      highestSynced < lowestAvailable
        ? `commit ${start} is not available: this node holds no commits yet`
        : `commit ${start} is not available: this node serves commits ${lowestAvailable}..${highestSynced}`,
    );
}
