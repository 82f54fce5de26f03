/**
 * The apply stage (DESIGN §4 items 5 and 8): ready segments are written to the store strictly in
 * order, the head with the ready segments right behind it (up to `maxApplyBatchBytes`) in one
 * atomic batch of commits, blocks, committee change and watermark; a crash at any point resumes
 * from the watermark. Then the sub-DAGs go to subscribers and peers known to be behind get a
 * PushCommit hint. One write at a time: writes are sequential anyway, and the next is planned
 * while this one runs.
 *
 * Threat: only segments that went through the whole state machine (verified batch, every block
 * checked against its ref) are ever written; `Segment.startApplying` matches blocks to commits.
 */
import { create } from "@bufbuild/protobuf";
import { CommitRefSchema } from "../gen/dagsync/v1/types_pb.js";
import type { BlockKeyRef, Store } from "../store/index.js";
import type { SubDagBroadcast } from "./broadcast.js";
import type { ByteBudget } from "./byte-budget.js";
import { SyncError } from "./errors.js";
import type { SyncMetrics } from "./metrics.js";
import type { SyncOptions } from "./options.js";
import type { PeerFetch } from "./peer-fetch.js";
import type { PeerSet } from "./peers.js";
import type { Segment } from "./segment.js";
import type { SegmentPlan } from "./segment-plan.js";

export interface ApplyStageDeps {
  readonly store: Store;
  readonly plan: SegmentPlan;
  readonly budget: ByteBudget;
  readonly broadcast: SubDagBroadcast;
  readonly peers: PeerSet;
  readonly fetch: PeerFetch;
  readonly options: SyncOptions;
  readonly metrics: SyncMetrics | undefined;
  readonly now: () => number;
  readonly onBlocksApplied: ((refs: readonly BlockKeyRef[], epoch: number) => void) | undefined;
  /** The store refused a write: the engine must stop. */
  readonly fail: (error: SyncError) => void;
  /** Runs an engine handler, stopping the engine if it throws (a bug). */
  readonly guard: (what: string, fn: () => void) => void;
  readonly kick: () => void;
}

export interface ApplyStats {
  commitsApplied: number;
  blocksApplied: number;
  bytesApplied: number;
}

export class ApplyStage {
  readonly stats: ApplyStats = { commitsApplied: 0, blocksApplied: 0, bytesApplied: 0 };
  private applying = false;
  private current: Promise<void> = Promise.resolve();

  constructor(private readonly deps: ApplyStageDeps) {}

  /** The write in progress, if any (stop waits for it so that the store can close). */
  settled(): Promise<void> {
    return this.current;
  }

  /** Starts a write of the ready run at the head, unless one is in progress. */
  applyReady(): void {
    if (this.applying) return;
    const { plan, store, options } = this.deps;
    const run = plan.readyRun(store.watermarks.highestSynced, options.maxApplyBatchBytes);
    if (run.length === 0) return;
    this.current = this.apply(run).catch((e: unknown) => {
      this.applying = false;
      this.deps.guard("apply", () => {
        throw e;
      });
    });
  }

  private async apply(run: readonly Segment[]): Promise<void> {
    const { store, plan, budget, metrics: m } = this.deps;
    this.applying = true;
    const units = run.flatMap((seg) => seg.startApplying());
    try {
      await store.apply(units);
    } catch (e) {
      const range = `${run[0]!.start}..${run.at(-1)!.end}`;
      this.deps.fail(
        new SyncError("store_write", `cannot write commits ${range} to the store: ${(e as Error).message}`),
      );
      this.applying = false;
      this.deps.kick();
      return;
    }
    for (const seg of plan.removeApplied(run.length)) budget.release(seg);
    const refs = units.flatMap((u) => u.blocks.map((b) => b.ref));
    const bytes = units.reduce((n, u) => u.blocks.reduce((k, b) => k + b.bytes.length, n), 0);
    this.deps.onBlocksApplied?.(refs, units.at(-1)!.epoch);
    this.stats.commitsApplied += units.length;
    this.stats.blocksApplied += refs.length;
    this.stats.bytesApplied += bytes;
    m?.commitsApplied.inc(units.length);
    m?.blocksApplied.inc(refs.length);
    m?.highestSynced.set(store.watermarks.highestSynced);
    this.applying = false;
    this.deps.broadcast.publish(units); // caught-up subscribers take these from memory
    this.pushToPeersBehind();
    this.deps.kick();
  }

  /** A PushCommit hint to usable peers known to be behind, at most every `pushIntervalMs` each. */
  private pushToPeersBehind(): void {
    const { store, peers, options } = this.deps;
    const marks = store.watermarks;
    const now = this.deps.now();
    const ref = create(CommitRefSchema, {
      index: BigInt(marks.highestSynced),
      digest: marks.highestSyncedDigest,
    });
    for (const p of peers.all()) {
      if (!peers.isUsable(p, now) || p.highest >= marks.highestSynced) continue;
      if (now - p.lastPushAt < options.pushIntervalMs) continue;
      p.lastPushAt = now;
      this.deps.fetch.pushCommit(p, ref, marks.highestSynced);
    }
  }
}
