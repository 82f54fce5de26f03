/**
 * Rate limit of first contacts (DESIGN §9: dials are rate-limited). A token bucket on the engine's
 * clock: `maxDialsPerSecond` tokens a second, at most that many saved up, so that a burst of new
 * peers (a committee change, an exchange answer) is dialed over time instead of all at once.
 *
 * Threat: a peer list that fills with many addresses, some hostile or dead, must not make us open
 * connections at any rate it likes.
 */
export class DialLimiter {
  private tokens: number;
  private last: number | undefined;
  private readonly capacity: number;

  constructor(private readonly perSecond: number) {
    this.capacity = Math.max(1, perSecond);
    this.tokens = this.capacity;
  }

  /** Takes a token for one dial at `now` (ms), if one is left. */
  take(now: number): boolean {
    if (this.last !== undefined && now > this.last)
      this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) * this.perSecond) / 1000);
    this.last = Math.max(now, this.last ?? now);
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }
}
