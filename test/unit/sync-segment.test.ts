/**
 * The segment state machine (src/sync/segment.ts) and the plan of segments
 * (src/sync/segment-plan.ts), on their own, with synthetic commits (they never look inside a
 * commit's bytes):
 *
 * - each edge moves only from the state it names and otherwise throws SegmentError("wrong_state")
 *   and leaves the state as it was;
 * - chunking covers every ref not at hand exactly once, in order, within the per-chunk limit;
 * - blocks are matched to commits by ref, whatever the chunking, arrival order or partial answers;
 * - splitting a chunk at a commit boundary keeps the cover; `commitOfRef` names the owner;
 * - the plan stays contiguous through extend, split, absorb and drop, and applies in order.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { blockRefKey, type CommitEntry, type CommitteeView } from "../../src/core/index.js";
import {
  type BlockRef,
  BlockRefSchema,
  CommitSchema,
  CommitteeSchema,
  EndOfEpochSchema,
} from "../../src/gen/dagsync/v1/types_pb.js";
import { ByteBudget } from "../../src/sync/byte-budget.js";
import { DEFAULT_SYNC_OPTIONS } from "../../src/sync/options.js";
import {
  type Chunk,
  commitOfRef,
  planChunks,
  Segment,
  SegmentError,
  type SegmentState,
  type VerifiedBatch,
  verifiedBatch,
} from "../../src/sync/segment.js";
import { SegmentPlan } from "../../src/sync/segment-plan.js";

/** The segment never reads committees: a stand-in object is enough. */
const COMMITTEE = { epoch: 0 } as unknown as CommitteeView;
const NEXT_COMMITTEE = {
  epoch: 1,
  committee: create(CommitteeSchema, { epoch: 1n }),
} as unknown as CommitteeView;

function digestOf(n: number): Uint8Array {
  const d = new Uint8Array(32);
  new DataView(d.buffer).setUint32(0, n);
  d[31] = 0xaa;
  return d;
}

/** Commits `start..` with `refCounts[k]` refs each, all refs distinct; the last may end the epoch. */
function commitsOf(start: number, refCounts: readonly number[], endsEpoch = false): CommitEntry[] {
  let next = 0;
  return refCounts.map((count, k) => {
    const blocks = Array.from({ length: count }, () => {
      const n = next++;
      return create(BlockRefSchema, { round: n, author: n % 7, digest: digestOf(start * 100_000 + n) });
    });
    const last = k === refCounts.length - 1;
    const commit = create(CommitSchema, {
      index: BigInt(start + k),
      blocks,
      ...(last && endsEpoch ? { endOfEpoch: create(EndOfEpochSchema, {}) } : {}),
    });
    return { commit, bytes: new Uint8Array([k]), digest: digestOf(start + k), index: start + k, epoch: 0 };
  });
}

/** The block a peer serves for a ref: bytes that name the ref. */
function blockFor(ref: BlockRef): Uint8Array {
  return new TextEncoder().encode(blockRefKey(ref));
}

function fetchedSegment(start: number, end: number): Segment {
  const seg = new Segment(start, end);
  seg.startFetchingCommits("peer:1");
  seg.commitsFetched([new Uint8Array([1])], [new Uint8Array([2])]);
  return seg;
}

function fetchingBlocks(batch: VerifiedBatch, maxRefs: number): Segment {
  const seg = fetchedSegment(batch.commits[0]!.index, batch.commits.at(-1)!.index);
  seg.batchVerified(batch, maxRefs, undefined);
  return seg;
}

function chunksOf(seg: Segment): Chunk[] {
  const s = seg.state;
  assert.equal(s.kind, "fetching_blocks");
  return s.kind === "fetching_blocks" ? s.chunks : [];
}

const refCountsArb = fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 1, maxLength: 12 });

describe("segment state machine: edges", () => {
  type Edge = (seg: Segment) => void;
  const batch = verifiedBatch(commitsOf(1, [2, 1]), [], COMMITTEE, undefined);
  const anyChunk: Chunk = { offset: 0, count: 1, fetching: false };
  const edges: Record<string, Edge> = {
    startFetchingCommits: (s) => s.startFetchingCommits("p"),
    commitsFetched: (s) => s.commitsFetched([], []),
    commitFetchFailed: (s) => s.commitFetchFailed(),
    batchDiscarded: (s) => s.batchDiscarded(),
    batchVerified: (s) => s.batchVerified(batch, 10, undefined),
    chunkRequested: (s) => s.chunkRequested(anyChunk),
    blocksAccepted: (s) => s.blocksAccepted(anyChunk, []),
    startApplying: (s) => s.startApplying(),
  };
  const allowedFrom: Record<string, SegmentState["kind"]> = {
    startFetchingCommits: "idle",
    commitsFetched: "fetching_commits",
    commitFetchFailed: "fetching_commits",
    batchDiscarded: "fetched",
    batchVerified: "fetched",
    chunkRequested: "fetching_blocks",
    blocksAccepted: "fetching_blocks",
    startApplying: "ready",
  };
  /** A segment in each state, reached through the edges themselves. */
  const inState: Record<SegmentState["kind"], () => Segment> = {
    idle: () => new Segment(1, 2),
    fetching_commits: () => {
      const s = new Segment(1, 2);
      s.startFetchingCommits("p");
      return s;
    },
    fetched: () => fetchedSegment(1, 2),
    fetching_blocks: () => fetchingBlocks(batch, 10),
    ready: () => {
      const s = fetchingBlocks(batch, 10);
      const [chunk] = chunksOf(s);
      s.blocksAccepted(chunk!, batch.refs.map(blockFor));
      return s;
    },
    applying: () => {
      const s = inState.ready();
      s.startApplying();
      return s;
    },
  };

  test("the happy path goes idle → fetching_commits → fetched → fetching_blocks → ready → applying", () => {
    const seg = new Segment(1, 2);
    const seen: string[] = [seg.state.kind];
    seg.startFetchingCommits("p");
    seen.push(seg.state.kind);
    seg.commitsFetched([new Uint8Array([1])], []);
    seen.push(seg.state.kind);
    seg.batchVerified(batch, 2, undefined);
    seen.push(seg.state.kind);
    for (const chunk of [...chunksOf(seg)]) {
      seg.chunkRequested(chunk);
      seg.blocksAccepted(chunk, batch.refs.slice(chunk.offset, chunk.offset + chunk.count).map(blockFor));
    }
    seen.push(seg.state.kind);
    seg.startApplying();
    seen.push(seg.state.kind);
    assert.deepEqual(seen, ["idle", "fetching_commits", "fetched", "fetching_blocks", "ready", "applying"]);
  });

  test("failed and rejected fetches go back to idle", () => {
    const a = inState.fetching_commits();
    a.commitFetchFailed();
    assert.equal(a.state.kind, "idle");
    const b = inState.fetched();
    b.batchDiscarded();
    assert.equal(b.state.kind, "idle");
  });

  for (const [name, edge] of Object.entries(edges))
    for (const kind of Object.keys(inState) as SegmentState["kind"][]) {
      if (allowedFrom[name] === kind) continue;
      test(`${name} from ${kind} throws SegmentError(wrong_state) and changes nothing`, () => {
        const seg = inState[kind]();
        const before = seg.state;
        assert.throws(
          () => edge(seg),
          (e: unknown) => e instanceof SegmentError && e.code === "wrong_state" && e.message.includes(name),
        );
        assert.equal(seg.state, before);
      });
    }

  test("a batch whose blocks are all at hand is ready at once, holding their bytes", () => {
    const seg = fetchedSegment(1, 2);
    const held = seg.batchVerified(batch, 10, (digest) =>
      blockFor(batch.refs.find((r) => r.digest === digest)!),
    );
    assert.equal(seg.state.kind, "ready");
    assert.equal(
      held,
      batch.refs.reduce((n, r) => n + blockFor(r).length, 0),
    );
  });

  test("a batch fetched before a batch in front covered part of the segment loses that prefix", () => {
    const seg = new Segment(10, 20);
    seg.startFetchingCommits("p");
    seg.commitsFetched(
      [1, 2, 3, 4].map((n) => new Uint8Array([n])),
      [],
    );
    seg.start = 12;
    assert.deepEqual(
      seg.uncoveredCommits().map((c) => c[0]),
      [3, 4],
    );
  });

  test("apply units name a missing block instead of storing a hole", () => {
    const seg = fetchingBlocks(batch, 10);
    const s = seg.state;
    assert.ok(s.kind === "fetching_blocks");
    // Force ready with one block missing: only a bug could do this; the error says which.
    const [chunk] = chunksOf(seg);
    seg.blocksAccepted(chunk!, batch.refs.map(blockFor));
    s.blocks.delete(1);
    assert.throws(
      () => seg.startApplying(),
      (e: unknown) => e instanceof SegmentError && e.code === "missing_block",
    );
  });
});

describe("segment state machine: properties", () => {
  test("chunking covers every ref not at hand exactly once, in order, ≤ the per-chunk limit", () => {
    fc.assert(
      fc.property(
        refCountsArb,
        fc.integer({ min: 1, max: 9 }),
        fc.func(fc.boolean()),
        (counts, maxRefs, atHandOf) => {
          const batch = verifiedBatch(commitsOf(1, counts), [], COMMITTEE, undefined);
          const atHand = new Set(batch.refs.map((_, k) => k).filter((k) => atHandOf(k)));
          const lookup = (digest: Uint8Array) => {
            const k = batch.refs.findIndex((r) => r.digest === digest);
            return atHand.has(k) ? blockFor(batch.refs[k]!) : undefined;
          };
          const { chunks, found } = planChunks(batch.refs, maxRefs, lookup);
          const covered: number[] = [];
          for (const c of chunks) {
            assert.ok(c.count >= 1 && c.count <= maxRefs, `chunk of ${c.count} refs (limit ${maxRefs})`);
            for (let k = c.offset; k < c.offset + c.count; k++) covered.push(k);
          }
          const expected = batch.refs.map((_, k) => k).filter((k) => !atHand.has(k));
          assert.deepEqual(covered, expected);
          assert.equal(found.size, atHand.size);
          for (const k of atHand) assert.ok(found.has(k));
        },
      ),
    );
  });

  test("blocks are matched to commits by ref, whatever the chunking, order and partial answers", () => {
    fc.assert(
      fc.property(
        refCountsArb.filter((c) => c.some((n) => n > 0)),
        fc.integer({ min: 1, max: 9 }),
        fc.boolean(),
        fc.infiniteStream(fc.nat()),
        (counts, maxRefs, endsEpoch, choices) => {
          const commits = commitsOf(5, counts, endsEpoch);
          const certifiers = [new Uint8Array([9])];
          const batch = verifiedBatch(commits, certifiers, COMMITTEE, endsEpoch ? NEXT_COMMITTEE : undefined);
          const seg = fetchingBlocks(batch, maxRefs);
          const pick = choices[Symbol.iterator]();
          for (let guard = 0; seg.state.kind === "fetching_blocks"; guard++) {
            assert.ok(guard < 10_000, "no progress");
            const chunks = chunksOf(seg);
            const chunk = chunks[pick.next().value! % chunks.length]!;
            seg.chunkRequested(chunk);
            // A peer answers a prefix of the chunk, sometimes nothing (re-asked later).
            const n = pick.next().value! % (chunk.count + 1);
            const refs = batch.refs.slice(chunk.offset, chunk.offset + n);
            seg.blocksAccepted(chunk, refs.map(blockFor));
          }
          const units = seg.startApplying();
          assert.equal(seg.state.kind, "applying");
          assert.deepEqual(
            units.map((u) => u.index),
            commits.map((c) => c.index),
          );
          units.forEach((u, k) => {
            const refs = commits[k]!.commit.blocks;
            assert.equal(u.blocks.length, refs.length);
            u.blocks.forEach((b, j) => {
              assert.equal(b.ref, refs[j]);
              assert.deepEqual(b.bytes, blockFor(refs[j]!));
            });
            const last = k === units.length - 1;
            assert.equal(u.certifierBlocks, last ? certifiers : undefined);
            assert.equal(u.nextCommittee !== undefined, last && endsEpoch);
          });
        },
      ),
    );
  });

  test("commitOfRef names the commit whose refs hold a ref", () => {
    fc.assert(
      fc.property(refCountsArb, (counts) => {
        const batch = verifiedBatch(commitsOf(1, counts), [], COMMITTEE, undefined);
        batch.refs.forEach((ref, r) => {
          const owner = batch.commits.find((c) => c.commit.blocks.includes(ref));
          assert.equal(commitOfRef(batch, r), owner);
        });
      }),
    );
  });

  test("splitting a chunk after a commit keeps the cover and cuts right after that commit's refs", () => {
    fc.assert(
      fc.property(refCountsArb, fc.integer({ min: 1, max: 40 }), fc.nat(), (counts, maxRefs, at) => {
        const batch = verifiedBatch(commitsOf(1, counts), [], COMMITTEE, undefined);
        if (batch.refs.length === 0) return;
        const seg = fetchingBlocks(batch, maxRefs);
        const chunks = chunksOf(seg);
        const chunk = chunks[at % chunks.length]!;
        const before = chunks.map((c) => [c.offset, c.count]);
        const { first, last } = seg.chunkCommits(chunk);
        const cutAt = first.index + (at % (last.index - first.index + 1));
        const split = seg.splitChunkAfterCommit(chunk, cutAt);
        const cover = (cs: readonly Chunk[]) =>
          cs.flatMap((c) => Array.from({ length: c.count }, (_, k) => c.offset + k));
        assert.deepEqual(
          cover(chunks),
          cover(before.map(([offset, count]) => ({ offset: offset!, count: count!, fetching: false }))),
        );
        if (split) {
          // Commits without refs may sit at the cut: the first part ends with the last ref at or before it.
          assert.ok(commitOfRef(batch, chunk.offset + chunk.count - 1)!.index <= cutAt);
          assert.ok(commitOfRef(batch, chunk.offset + chunk.count)!.index > cutAt);
        } else
          assert.deepEqual(
            chunks.map((c) => [c.offset, c.count]),
            before,
          );
      }),
    );
  });
});

describe("segment plan", () => {
  const contiguous = (plan: SegmentPlan, from: number) => {
    let next = from;
    for (const s of plan.segments) {
      assert.equal(s.start, next, `segments ${plan.segments.map((x) => `${x.start}..${x.end}`)}`);
      assert.ok(s.end >= s.start);
      next = s.end + 1;
    }
    return next - 1;
  };

  test("extend, split, absorb and drop keep the segments contiguous from the store's head", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 50 }),
        fc.integer({ min: 1, max: 400 }),
        fc.integer({ min: 1, max: 30 }),
        fc.array(fc.tuple(fc.constantFrom("split", "absorb", "drop"), fc.nat(), fc.nat()), { maxLength: 20 }),
        (synced, ahead, per, ops) => {
          const plan = new SegmentPlan();
          const target = synced + ahead;
          plan.extend(synced, target, per, 8);
          assert.ok(plan.segments.length <= 8);
          assert.ok(plan.segments.every((s) => s.end - s.start + 1 <= per));
          assert.equal(contiguous(plan, synced + 1), Math.min(target, synced + 8 * per));
          for (const [op, a, b] of ops) {
            const segs = plan.segments;
            if (segs.length === 0) break;
            const seg = segs[a % segs.length]!;
            if (op === "split" && seg.end > seg.start)
              plan.splitAfter(seg, seg.start + (b % (seg.end - seg.start)));
            if (op === "absorb") {
              const gone = plan.absorbFollowing(seg, seg.end + (b % 3 === 0 ? 0 : 1 + (b % (2 * per))));
              for (const g of gone) assert.ok(!plan.includes(g));
            }
            if (op === "drop") plan.dropBeyond(synced + (b % (ahead + 1)));
            contiguous(plan, synced + 1);
            plan.extend(synced, target, per, 8);
            contiguous(plan, synced + 1);
          }
        },
      ),
    );
  });

  test("only the ready head after the store is applied, with ready followers up to the byte limit, never past an epoch end", () => {
    const plan = new SegmentPlan();
    plan.extend(0, 30, 10, 3);
    const [a, b, c] = plan.segments as Segment[];
    const ready = (seg: Segment, bytes: number, endsEpoch = false) => {
      seg.startFetchingCommits("p");
      seg.commitsFetched([new Uint8Array([1])], []);
      const commits = commitsOf(seg.start, [0], endsEpoch);
      seg.batchVerified(
        verifiedBatch(commits, [], COMMITTEE, endsEpoch ? NEXT_COMMITTEE : undefined),
        10,
        undefined,
      );
      seg.bytes = bytes;
    };
    ready(b!, 10);
    assert.deepEqual(plan.readyRun(0, 100), [], "the head is not ready");
    ready(a!, 10, true);
    ready(c!, 10);
    assert.deepEqual(plan.readyRun(5, 100), [], "the head is not next after the store");
    assert.deepEqual(plan.readyRun(0, 100), [a], "an epoch end closes the write");
    const plan2 = new SegmentPlan();
    plan2.extend(0, 30, 10, 3);
    const [x, y, z] = plan2.segments as Segment[];
    ready(x!, 60);
    ready(y!, 30);
    ready(z!, 30);
    assert.deepEqual(plan2.readyRun(0, 100), [x, y], "the byte limit closes the write");
    assert.deepEqual(plan2.readyRun(0, 10), [x], "the head always goes");
  });
});

describe("byte budget", () => {
  test("bytes held and reserved bound what may be asked, except for the head", () => {
    const budget = new ByteBudget({ ...DEFAULT_SYNC_OPTIONS, maxInflightBytes: 1000 });
    const seg = new Segment(1, 1);
    budget.hold(seg, 600);
    budget.reserve(300);
    assert.equal(budget.allows(100, false), true);
    assert.equal(budget.allows(101, false), false);
    assert.equal(budget.allows(10_000, true), true);
    budget.unreserve(300);
    budget.release(seg);
    assert.equal(seg.bytes, 0);
    assert.equal(budget.inflightBytes, 0);
    assert.equal(budget.allows(1000, false), true);
  });

  test("the block size estimate starts at its option, follows answers, and keeps its floor", () => {
    const budget = new ByteBudget(DEFAULT_SYNC_OPTIONS);
    assert.equal(budget.estimateBlocks(2), 2 * DEFAULT_SYNC_OPTIONS.initialBlockBytesEstimate);
    budget.observeBlocks(1000 * 10_000, 1000);
    assert.equal(budget.estimateBlocks(1), Math.round(0.8 * 4096 + 0.2 * 10_000));
    for (let i = 0; i < 100; i++) budget.observeBlocks(1, 1);
    assert.equal(budget.estimateBlocks(1), DEFAULT_SYNC_OPTIONS.minBlockBytesEstimate);
    assert.equal(budget.estimateCommits(3), 3 * DEFAULT_SYNC_OPTIONS.commitBytesEstimate);
  });
});
