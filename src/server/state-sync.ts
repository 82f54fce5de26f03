/**
 * The StateSync and Admin handlers (DESIGN.md §3), wired: one file per RPC in rpc/, the admission
 * they share in call-admission.ts. Reads come straight from the store's canonical bytes;
 * responses are assembled through the wire twins, never by decoding and re-encoding.
 *
 * Threats: a peer may send malformed or huge requests, ask for ranges it cannot have, or flood
 * us. Every request is admitted by a per-peer GCRA quota and in-flight cap first (bulk calls by
 * the gate in bulk-gate.ts, before their request is even decoded), validated second, and only
 * then touches the store, read-only. Nothing a peer sends changes the store: PushCommit is a hint
 * passed to the sync engine, which verifies everything it fetches.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { WireFetchCommitsResponseSchema } from "../gen/dagsync/wire/v1/wire_pb.js";
import { SubDagFeed } from "../store/index.js";
import type { BulkAdmission } from "./admission.js";
import type { Admitted } from "./bulk-gate.js";
import { CallAdmission } from "./call-admission.js";
import type { RpcError } from "./errors.js";
import type { RpcContext, StateSyncDeps } from "./rpc/context.js";
import { fetchBlocks } from "./rpc/fetch-blocks.js";
import { fetchCommits } from "./rpc/fetch-commits.js";
import { getCommitAvailability } from "./rpc/get-commit-availability.js";
import { getKnownPeers } from "./rpc/get-known-peers.js";
import { getStatus } from "./rpc/get-status.js";
import { pushCommit } from "./rpc/push-commit.js";
import { subscribeCommits } from "./rpc/subscribe-commits.js";

export type { CommitFeed, DiscoveryDeps, NodeStatus, StateSyncDeps } from "./rpc/context.js";
export { ADMIN_SERVICE, STATE_SYNC_SERVICE } from "./services.js";

export class StateSyncHandlers {
  private readonly admission: CallAdmission;
  readonly getCommitAvailability;
  readonly fetchCommits;
  readonly fetchBlocks;
  readonly pushCommit;
  readonly subscribeCommits;
  readonly getKnownPeers;
  readonly getStatus;

  constructor(deps: StateSyncDeps) {
    this.admission = new CallAdmission(deps.options, deps.metrics, deps.log);
    const ctx: RpcContext = {
      deps,
      admission: this.admission,
      feed: deps.feed ?? new SubDagFeed(deps.store),
    };
    this.getCommitAvailability = getCommitAvailability(ctx);
    this.fetchCommits = fetchCommits(ctx);
    this.fetchBlocks = fetchBlocks(ctx);
    this.pushCommit = pushCommit(ctx);
    this.subscribeCommits = subscribeCommits(ctx);
    this.getKnownPeers = getKnownPeers(ctx);
    this.getStatus = getStatus(ctx);
  }

  /** Server-wide bulk admission (admission.ts), for the server's in-flight figures. */
  get bulk(): BulkAdmission {
    return this.admission.bulk;
  }

  /**
   * Everything a bulk call needs before its request is read: quota, the per-peer in-flight slot
   * and a server-wide ticket. For the gate (bulk-gate.ts), which holds it until the call ends.
   */
  admitBulkCall(path: string, peer: string): Admitted | RpcError {
    return this.admission.admitBulkCall(path, peer);
  }
}

/** Decodes a FetchCommits wire response into its parts (for tests and tools). */
export function decodeFetchCommitsResponse(bytes: Uint8Array) {
  return fromBinary(WireFetchCommitsResponseSchema, bytes);
}
