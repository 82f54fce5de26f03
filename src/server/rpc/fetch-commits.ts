/**
 * StateSync/FetchCommits: one batch of the batch contract (DESIGN §3): commits start..k of one
 * epoch, with the certifier blocks of k, within `maxCommitsPerFetch` and `maxFetchResponseBytes`.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { WireFetchCommitsResponseSchema } from "../../gen/dagsync/wire/v1/wire_pb.js";
import { invalidArgument, notFound } from "../errors.js";
import { checkAvailable, fieldOverhead, index, type RpcContext } from "./context.js";
import { unary } from "./unary.js";

export function fetchCommits(ctx: RpcContext) {
  return unary(
    ctx,
    "fetchCommits",
    "FetchCommits",
    async (req: { start: bigint; end: bigint }) => {
      const { store, options } = ctx.deps;
      if (req.start === 0n) throw invalidArgument("start must be ≥ 1 (commit indices start at 1)");
      const start = index("start", req.start);
      const requestedEnd = index("end", req.end);
      if (start > requestedEnd) throw invalidArgument(`start ${start} is after end ${requestedEnd}`);
      checkAvailable(store, start);
      const marks = store.watermarks;
      const bounds = store.epochBoundsOf(start);
      let end = Math.min(requestedEnd, start + options.maxCommitsPerFetch - 1, marks.highestSynced);
      if (bounds.end !== undefined) end = Math.min(end, bounds.end);

      const commits = await store.getCommits(start, end);
      const budget = options.maxFetchResponseBytes;
      // Size bound on the commits alone first; the certifier blocks are added below.
      let size = 0;
      let count = 0;
      for (const c of commits) {
        const next = size + c.length + fieldOverhead(c.length);
        if (count > 0 && next > budget) break;
        size = next;
        count++;
      }
      // End at the highest commit in range whose certifier blocks we hold; shrink while too big.
      const certified = await store.highestCertifiedIn(start, start + count - 1);
      if (certified === undefined) {
        // Nothing certifiable within the bounds: run past them to the first commit of the epoch we
        // can certify (the batch contract, DESIGN §3). DESIGN caps this at maxCommitsPerFetch too,
        // but a node that synced from a server with a larger cap holds certifiers farther apart, and
        // refusing would leave such a node unable to serve at all; a batch of commits alone is small.
        const first = await store.lowestCertifiedIn(start, bounds.end ?? marks.highestSynced);
        if (first === undefined) throw notFound(`no certified commit at or after ${start} on this node`);
        return encodeCommits(await store.getCommits(start, first), (await store.getCertifiers(first)) ?? []);
      }
      let last: number = certified;
      for (;;) {
        const certifiers: Uint8Array[] = (await store.getCertifiers(last)) ?? [];
        const chosen = commits.slice(0, last - start + 1);
        let total = 0;
        for (const b of [...chosen, ...certifiers]) total += b.length + fieldOverhead(b.length);
        const lower: number | undefined =
          total > budget && last > start ? await store.highestCertifiedIn(start, last - 1) : undefined;
        if (lower === undefined) return encodeCommits(chosen, certifiers);
        last = lower;
      }
    },
    "bulk",
  );
}

function encodeCommits(commits: Uint8Array[], certifierBlocks: Uint8Array[]): Uint8Array {
  return toBinary(
    WireFetchCommitsResponseSchema,
    create(WireFetchCommitsResponseSchema, { commits, certifierBlocks }),
  );
}
