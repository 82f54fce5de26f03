/** The method tables of StateSync and Admin (raw codecs, codec.ts), and which of them are bulk. */
import { GetStatusRequestSchema } from "../gen/dagsync/v1/admin_pb.js";
import {
  FetchBlocksRequestSchema,
  FetchCommitsRequestSchema,
  GetCommitAvailabilityRequestSchema,
  PushCommitRequestSchema,
  SubscribeCommitsRequestSchema,
} from "../gen/dagsync/v1/sync_pb.js";
import { WireGetKnownPeersRequestSchema } from "../gen/dagsync/wire/v1/wire_pb.js";
import { rawMethod } from "./codec.js";
import type { ServerOptions } from "./options.js";

/** A method's name in the per-peer quotas (`ServerOptions.rateLimits`). */
export type RpcName = keyof ServerOptions["rateLimits"];

export const STATE_SYNC_SERVICE = {
  getCommitAvailability: rawMethod(
    "/dagsync.v1.StateSync/GetCommitAvailability",
    GetCommitAvailabilityRequestSchema,
  ),
  fetchCommits: rawMethod("/dagsync.v1.StateSync/FetchCommits", FetchCommitsRequestSchema),
  fetchBlocks: rawMethod("/dagsync.v1.StateSync/FetchBlocks", FetchBlocksRequestSchema),
  pushCommit: rawMethod("/dagsync.v1.StateSync/PushCommit", PushCommitRequestSchema),
  subscribeCommits: rawMethod("/dagsync.v1.StateSync/SubscribeCommits", SubscribeCommitsRequestSchema, {
    responseStream: true,
  }),
  // The caller's SignedNodeInfo is kept as the bytes it was signed as (wire twin).
  getKnownPeers: rawMethod("/dagsync.v1.StateSync/GetKnownPeers", WireGetKnownPeersRequestSchema),
};

export const ADMIN_SERVICE = {
  getStatus: rawMethod("/dagsync.v1.Admin/GetStatus", GetStatusRequestSchema),
};

/** Bulk unary methods by path: their quota name and their name in metrics and messages. */
export const BULK_METHODS: ReadonlyMap<string, readonly [RpcName, string]> = new Map<
  string,
  readonly [RpcName, string]
>([
  [STATE_SYNC_SERVICE.fetchCommits.path, ["fetchCommits", "FetchCommits"]],
  [STATE_SYNC_SERVICE.fetchBlocks.path, ["fetchBlocks", "FetchBlocks"]],
]);
