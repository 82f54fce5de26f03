/** Recently seen digests, bounded in size and age (oldest evicted first). */
export class DedupCache {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly capacity: number,
    private readonly maxAgeMs: number,
  ) {}

  /** Records the key; false when it was already seen (and not yet expired). */
  firstSight(key: string, now: number): boolean {
    const at = this.seen.get(key);
    if (at !== undefined && at > now - this.maxAgeMs) return false;
    if (at !== undefined) this.seen.delete(key);
    this.seen.set(key, now);
    for (const [k, t] of this.seen) {
      if (this.seen.size <= this.capacity && t > now - this.maxAgeMs) break;
      this.seen.delete(k);
    }
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}
