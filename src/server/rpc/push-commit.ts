/** StateSync/PushCommit: a hint for the sync engine, checked for shape, never trusted (DESIGN §3). */
import { create, toBinary } from "@bufbuild/protobuf";
import { type PushCommitRequest, PushCommitResponseSchema } from "../../gen/dagsync/v1/sync_pb.js";
import { invalidArgument } from "../errors.js";
import { index, type RpcContext } from "./context.js";
import { unary } from "./unary.js";

export function pushCommit(ctx: RpcContext) {
  return unary(ctx, "pushCommit", "PushCommit", async (req: PushCommitRequest, peer) => {
    if (req.commit !== undefined && req.commit.digest.length !== 32)
      throw invalidArgument("commit.digest must be 32 bytes");
    if (req.commit !== undefined) index("commit.index", req.commit.index);
    index("highest_synced_commit", req.highestSyncedCommit);
    ctx.deps.onPushCommit?.(peer, req);
    return toBinary(PushCommitResponseSchema, create(PushCommitResponseSchema));
  });
}
