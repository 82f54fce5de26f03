/**
 * A chain's block refs and fetching them, for the serving bench and the catch-up floor: every
 * committed block's ref of a store in commit order, and a pool of FetchBlocks calls over them.
 */
import type { BlocksResponse, PeerClient } from "../src/client/index.js";
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

/**
 * Fetches every ref in calls of `refsPerCall` refs, `workers` calls in flight, worker w calling
 * `clientFor(w, chunk)`. A partial answer's remainder is asked again at once, a rate-limited call
 * after 20 ms. `onResponse` gets each answer with the refs it answers (a prefix of those asked);
 * the worker waits for it before its next call. Returns the bytes fetched.
 */
export async function fetchEveryBlock(
  refs: readonly BlockRef[],
  options: {
    workers: number;
    refsPerCall: number;
    clientFor: (worker: number, chunk: number) => PeerClient;
    onResponse?: (answered: readonly BlockRef[], res: BlocksResponse) => void | Promise<void>;
  },
): Promise<number> {
  const chunks: BlockRef[][] = [];
  for (let i = 0; i < refs.length; i += options.refsPerCall)
    chunks.push(refs.slice(i, i + options.refsPerCall));
  let next = 0;
  let bytes = 0;
  await Promise.all(
    Array.from({ length: options.workers }, async (_, worker) => {
      for (;;) {
        const index = next++;
        const chunk = chunks[index];
        if (chunk === undefined) return;
        const client = options.clientFor(worker, index);
        let rest = chunk;
        while (rest.length > 0) {
          let res: BlocksResponse;
          try {
            res = await client.fetchBlocks(rest);
          } catch (e) {
            if ((e as { kind?: string }).kind !== "rate_limited") throw e;
            await new Promise((r) => setTimeout(r, 20));
            continue;
          }
          if (res.blocks.length === 0) throw new Error(`${client.address} returned no blocks`);
          bytes += res.bytes;
          await options.onResponse?.(rest.slice(0, res.blocks.length), res);
          rest = rest.slice(res.blocks.length);
        }
      }
    }),
  );
  return bytes;
}
