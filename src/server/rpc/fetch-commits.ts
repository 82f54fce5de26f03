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
      if (certified === undefined) return extendedBatch(ctx, start, count);
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

/**
 * Nothing certifiable within the bounds: run past them to the first commit of the epoch this node
 * can certify (the batch contract, DESIGN §3). DESIGN caps this at maxCommitsPerFetch too, but a
 * node that synced from a server with a larger cap holds certifiers farther apart, and refusing
 * would leave such a node unable to serve at all (README, Deviations). The batch still obeys the
 * response budget and never leaves start's epoch: one seek for the first certified commit in
 * the epoch, then one read of the commits up to it, stopped at the budget. When no certified
 * commit is within those bounds, NOT_FOUND names the range searched.
 */
async function extendedBatch(ctx: RpcContext, start: number, scanned: number): Promise<Uint8Array> {
  const { store, options } = ctx.deps;
  const budget = options.maxFetchResponseBytes;
  const bounds = store.epochBoundsOf(start);
  const last = bounds.end ?? store.watermarks.highestSynced;
  const where =
    bounds.end === undefined
      ? `${last} is this node's highest synced commit`
      : `${last} ends epoch ${bounds.epoch}`;
  const first = await store.lowestCertifiedIn(start + scanned, last);
  if (first === undefined)
    throw notFound(`no certified commit in ${start}..${last} on this node (searched to ${where})`);
  const certifiers = (await store.getCertifiers(first)) ?? [];
  let certifierBytes = 0;
  for (const b of certifiers) certifierBytes += b.length + fieldOverhead(b.length);
  const commits = await store.getCommits(start, first, undefined, budget - certifierBytes);
  let total = certifierBytes;
  for (const c of commits) total += c.length + fieldOverhead(c.length);
  if (commits.length < first - start + 1 || total > budget) {
    const reach = start + Math.max(commits.length, 1) - 1;
    throw notFound(
      `no certified commit in ${start}..${reach} on this node within the ${budget}-byte response budget ` +
        `(searched ${start}..${last}, ${where}; the first commit it can certify is ${first})`,
    );
  }
  return encodeCommits(commits, certifiers);
}

function encodeCommits(commits: Uint8Array[], certifierBlocks: Uint8Array[]): Uint8Array {
  return toBinary(
    WireFetchCommitsResponseSchema,
    create(WireFetchCommitsResponseSchema, { commits, certifierBlocks }),
  );
}
