/**
 * StateSync/FetchBlocks: blocks by ref, in request order, a prefix within the response budget
 * (the client asks again for the rest); an unknown ref is NOT_FOUND naming it (DESIGN §3).
 */
import { formatBlockRef } from "../../core/index.js";
import { RawFieldsResponse } from "../codec.js";
import { invalidArgument, notFound } from "../errors.js";
import { fieldOverhead, type RpcContext } from "./context.js";
import { unary } from "./unary.js";

export function fetchBlocks(ctx: RpcContext) {
  return unary(
    ctx,
    "fetchBlocks",
    "FetchBlocks",
    async (req: { refs: { round: number; author: number; digest: Uint8Array }[] }) => {
      const { store, options } = ctx.deps;
      const { refs } = req;
      if (refs.length === 0) throw invalidArgument("refs is empty: ask for at least one block");
      if (refs.length > options.maxBlocksPerFetch)
        throw invalidArgument(
          `${refs.length} refs requested; at most ${options.maxBlocksPerFetch} per FetchBlocks`,
        );
      refs.forEach((ref, i) => {
        if (ref.digest.length !== 32)
          throw invalidArgument(
            `refs[${i}] (round ${ref.round}, author ${ref.author}) has a ${ref.digest.length}-byte digest; digests are 32 bytes`,
          );
      });
      const found = await store.getBlocks(refs);
      const blocks: Uint8Array[] = [];
      let size = 0;
      for (let i = 0; i < found.length; i++) {
        const bytes = found[i];
        if (bytes === undefined)
          throw notFound(`refs[${i}] ${formatBlockRef(refs[i]!)} is not stored on this node`);
        const next = size + bytes.length + fieldOverhead(bytes.length);
        if (blocks.length > 0 && next > options.maxFetchResponseBytes) break; // a prefix: the client asks again
        size = next;
        blocks.push(bytes);
      }
      return new RawFieldsResponse([[1, blocks]]);
    },
    "bulk",
  );
}
