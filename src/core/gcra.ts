/**
 * GCRA (generic cell rate algorithm), a token bucket with one number per key: the theoretical
 * arrival time (TAT). A request at `now` is admitted when TAT - now ≤ (burst - 1)·interval, and
 * moves TAT to max(TAT, now) + interval. Pure: the caller passes the clock.
 */

/** A quota: `perSecond` sustained, `burst` at once. */
export interface RateQuota {
  readonly perSecond: number;
  readonly burst: number;
}

export type Admission = { readonly ok: true } | { readonly ok: false; readonly retryAfterMs: number };

export class Gcra {
  private readonly intervalMs: number;
  private readonly toleranceMs: number;
  private readonly tat = new Map<string, number>();

  constructor(
    quota: RateQuota,
    private readonly maxKeys: number,
  ) {
    this.intervalMs = 1000 / quota.perSecond;
    this.toleranceMs = this.intervalMs * Math.max(0, quota.burst - 1);
  }

  take(key: string, now = performance.now()): Admission {
    const tat = Math.max(this.tat.get(key) ?? now, now);
    const wait = tat - now - this.toleranceMs;
    if (wait > 0) return { ok: false, retryAfterMs: Math.ceil(wait) };
    if (!this.tat.has(key) && this.tat.size >= this.maxKeys) this.evictIdle(now);
    this.tat.set(key, tat + this.intervalMs);
    return { ok: true };
  }

  /** Forgets keys whose bucket is full again (they would be admitted as new anyway). */
  private evictIdle(now: number): void {
    for (const [key, tat] of this.tat) if (tat <= now) this.tat.delete(key);
    if (this.tat.size >= this.maxKeys) this.tat.clear(); // all busy: fail open rather than grow
  }
}
