/** Peers disconnected and refused for `blockDurationMs` after misbehaving, by network key. */
import { toHex } from "../core/bytes.js";

export class Blocker {
  private readonly until = new Map<string, { until: number; reason: string }>();

  constructor(private readonly durationMs: number) {}

  block(key: Uint8Array, reason: string, now: number): number {
    const until = now + this.durationMs;
    this.until.set(toHex(key), { until, reason });
    return until;
  }

  blockedUntil(key: Uint8Array, now: number): number {
    const entry = this.until.get(toHex(key));
    if (entry === undefined) return 0;
    if (entry.until <= now) {
      this.until.delete(toHex(key));
      return 0;
    }
    return entry.until;
  }

  entries(now: number): { key: string; until: number; reason: string }[] {
    return [...this.until].filter(([, e]) => e.until > now).map(([key, e]) => ({ key, ...e }));
  }
}
