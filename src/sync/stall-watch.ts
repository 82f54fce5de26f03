/**
 * The stall watch (DESIGN §4 item 7: a node never waits silently). `diagnoseStall` says, each
 * step, why no source can serve the next commit; this turns those verdicts into a state: the node
 * is stalled once no source could serve for `stallGraceMs`, says so once per reason (log line and
 * metric, not every tick), and stays stalled until it makes progress or a healthy peer can serve
 * again. Under `run(untilSynced)` a stall lasting `maxStallMs` becomes a SyncError("stalled").
 *
 * Threat: peers that answer nothing, or only refusals, must not leave an operator guessing; a
 * short gap (one peer's brief backoff) must not cry wolf either.
 */
import type { Logger } from "pino";
import { SyncError } from "./errors.js";
import type { SyncMetrics } from "./metrics.js";
import type { SyncOptions } from "./options.js";
import { STALL_REASONS, type StallDiagnosis } from "./stall.js";
import type { SyncStall } from "./sync-status.js";

export class StallWatch {
  /** Since when no source could serve the next commit (before the grace period ends). */
  private noSourceSince: number | undefined;
  private current: SyncStall | undefined;

  constructor(
    private readonly options: SyncOptions,
    private readonly log: Logger,
    private readonly metrics: SyncMetrics | undefined,
  ) {}

  get stall(): SyncStall | undefined {
    return this.current;
  }

  /**
   * Takes this step's diagnosis for commit `next` (undefined: some source can serve it, or we
   * are synced). Returns the error that ends a run that gives up on a stall.
   */
  update(
    diagnosis: StallDiagnosis | undefined,
    next: number,
    now: number,
    giveUp: boolean,
  ): SyncError | undefined {
    const m = this.metrics;
    if (diagnosis === undefined) {
      this.noSourceSince = undefined;
      const stall = this.current;
      if (stall === undefined) return undefined;
      this.current = undefined;
      for (const reason of STALL_REASONS) m?.stalled.set({ reason }, 0);
      this.log.info(
        { commit: next, stalledSeconds: Math.round((now - stall.sinceMs) / 1000) },
        `sync resumed: a peer can serve commit ${next} again`,
      );
      return undefined;
    }
    this.noSourceSince ??= now;
    if (this.current === undefined && now - this.noSourceSince < this.options.stallGraceMs) return undefined;
    const previous = this.current;
    const stall = { ...diagnosis, sinceMs: previous?.sinceMs ?? this.noSourceSince };
    this.current = stall;
    if (previous?.reason !== diagnosis.reason) {
      for (const reason of STALL_REASONS) m?.stalled.set({ reason }, reason === diagnosis.reason ? 1 : 0);
      this.log.warn(
        { reason: diagnosis.reason, commit: next },
        `sync stalled (${diagnosis.reason}): ${diagnosis.detail}; still retrying`,
      );
    }
    if (giveUp && now - stall.sinceMs >= this.options.maxStallMs)
      return new SyncError(
        "stalled",
        `gave up after ${Math.round((now - stall.sinceMs) / 1000)} s without a source (${diagnosis.reason}): ${diagnosis.detail}`,
      );
    return undefined;
  }
}
