/** Admin/GetStatus: the store's watermarks and what the node adds (sync state, peers). */
import { create, toBinary } from "@bufbuild/protobuf";
import { GetStatusResponseSchema } from "../../gen/dagsync/v1/admin_pb.js";
import type { RpcContext } from "./context.js";
import { unary } from "./unary.js";

export function getStatus(ctx: RpcContext) {
  return unary(ctx, "admin", "GetStatus", async () => {
    const { store } = ctx.deps;
    const marks = store.watermarks;
    const base = create(GetStatusResponseSchema, {
      chainId: store.genesis.genesis.chainId,
      genesisDigest: store.genesis.digest,
      highestVerifiedCommit: BigInt(marks.highestVerified),
      highestSyncedCommit: BigInt(marks.highestSynced),
      lowestAvailableCommit: BigInt(marks.lowestAvailable),
      epoch: BigInt(marks.epoch),
      syncState: "serving",
      role: "validator",
      ...ctx.deps.status?.(),
    });
    return toBinary(GetStatusResponseSchema, base);
  });
}
