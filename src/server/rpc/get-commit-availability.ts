/** StateSync/GetCommitAvailability: the watermarks this node serves (DESIGN §3). */
import { create, toBinary } from "@bufbuild/protobuf";
import { GetCommitAvailabilityResponseSchema } from "../../gen/dagsync/v1/sync_pb.js";
import type { RpcContext } from "./context.js";
import { unary } from "./unary.js";

export function getCommitAvailability(ctx: RpcContext) {
  return unary(ctx, "getCommitAvailability", "GetCommitAvailability", async () => {
    const { store } = ctx.deps;
    const marks = store.watermarks;
    return toBinary(
      GetCommitAvailabilityResponseSchema,
      create(GetCommitAvailabilityResponseSchema, {
        highestSyncedCommit: BigInt(marks.highestSynced),
        lowestAvailableCommit: BigInt(marks.lowestAvailable),
        epoch: BigInt(marks.highestSynced === 0 ? 0 : store.epochBoundsOf(marks.highestSynced).epoch),
        genesisDigest: store.genesis.digest,
        highestCommitDigest: marks.highestSyncedDigest,
      }),
    );
  });
}
