/** Every committed block's ref of a store, in commit order (for the serving bench and the floor). */
import { parseCommit } from "../src/core/index.js";
import type { BlockRef } from "../src/gen/dagsync/v1/types_pb.js";
import { Store } from "../src/store/index.js";

export async function allRefs(storePath: string): Promise<BlockRef[]> {
  const store = await Store.open(storePath, { mustExist: true });
  const refs: BlockRef[] = [];
  const highest = store.watermarks.highestSynced;
  try {
    for (let i = 1; i <= highest; i += 1000)
      for (const c of await store.getCommits(i, Math.min(i + 999, highest)))
        refs.push(...parseCommit(c).commit.blocks);
  } finally {
    await store.close();
  }
  return refs;
}
