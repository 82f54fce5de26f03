/**
 * Server-wide admission of bulk work (FetchCommits, FetchBlocks, SubscribeCommits replay steps).
 *
 * Per-peer quotas bound what one address can ask for, but not what a crowd can: after an outage
 * many nodes catch up at once, and an attacker may hold a few dozen addresses. Without a global
 * bound every admitted call assembles a response of up to 4 MiB, the responses queue in send
 * buffers behind each other, memory grows with the number of callers and every call misses its
 * deadline (congestion collapse). So bulk work takes a ticket:
 *
 * - at most `maxBulkCalls` calls at once, holding at most `maxServerInflightBytes` of responses
 *   being assembled or sent (a call reserves the most it may need, and gives back what it did not
 *   use once its response is assembled; the rest is held until the response has been written);
 * - fair: while addresses contend (hold tickets, or were refused within `contentionWindowMs`),
 *   each may hold at most an equal share of the calls and of the bytes (at least one call);
 * - in turn: an address refused for want of a free call waits in line, and the next freed calls
 *   are kept for the addresses in line, first refused first, for as long as they keep asking
 *   (within `contentionWindowMs`). Without this, an address that just finished a call asks again
 *   within a millisecond and takes the freed call, while the refused ones wait out their hint:
 *   shares alone left some addresses with nothing served at all;
 * - over the cap, a caller is refused at once with a retry hint (about when its turn comes),
 *   never queued until its deadline.
 *
 * Light calls (heights, hints, health, reflection, Admin) never take a ticket. Pure: a clock is
 * injected.
 */

export interface BulkAdmissionOptions {
  /** Bulk calls served at once, server-wide. */
  readonly maxBulkCalls: number;
  /** Response bytes being assembled or sent, server-wide. */
  readonly maxServerInflightBytes: number;
  /** How long a refused address counts as contending for its share, ms. */
  readonly contentionWindowMs: number;
  /** Bounds of the retry hint given with a refusal, ms. */
  readonly minRetryAfterMs: number;
  readonly maxRetryAfterMs: number;
}

export type BulkRefusal = {
  readonly reason: "calls" | "bytes" | "share" | "turn";
  readonly retryAfterMs: number;
};

export interface BulkTicket {
  /** The response is assembled: keep only `bytes` reserved until it is written. */
  resize(bytes: number): void;
  /** The call is over (idempotent). */
  release(): void;
}

interface Holder {
  calls: number;
  bytes: number;
}

export class BulkAdmission {
  private calls = 0;
  private bytes = 0;
  private readonly holders = new Map<string, Holder>();
  /**
   * Addresses refused recently, in the order they were first refused, with when they last asked:
   * they contend for a share although they hold nothing, and the next freed calls are theirs.
   */
  private readonly waiting = new Map<string, number>();
  /** EWMA of how long a ticket is held, ms. */
  private holdMs = 50;
  /** EWMA of the time between two releases, ms: how often a call frees up under load. */
  private releaseGapMs = 50;
  private lastReleaseAt: number | undefined;

  constructor(
    readonly options: BulkAdmissionOptions,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get inflightCalls(): number {
    return this.calls;
  }

  get inflightBytes(): number {
    return this.bytes;
  }

  /** A ticket for a call from `peer` that may need up to `reserve` bytes, or why not. */
  acquire(peer: string, reserve: number): { ok: true; ticket: BulkTicket } | ({ ok: false } & BulkRefusal) {
    const now = this.now();
    const o = this.options;
    this.expireWaiting(now);
    const holder = this.holders.get(peer) ?? { calls: 0, bytes: 0 };
    const contenders = this.contenders(peer);
    const callShare = Math.max(1, Math.floor(o.maxBulkCalls / contenders));
    const byteShare = Math.max(reserve, Math.floor(o.maxServerInflightBytes / contenders));
    const free = o.maxBulkCalls - this.calls;
    const place = this.placeInLine(peer);
    let reason: BulkRefusal["reason"] | undefined;
    if (holder.calls >= callShare || holder.bytes + reserve > byteShare) reason = "share";
    else if (free <= 0) reason = "calls";
    // The free calls are kept for those in line before us (all of the line, if we are not in it).
    else if (free <= place) reason = "turn";
    else if (this.bytes + reserve > o.maxServerInflightBytes && this.calls > 0) reason = "bytes";
    if (reason !== undefined) {
      // Wanting a free call puts an address in line (keeping its place if it had one); one
      // refused for holding its share already has its part.
      if (reason !== "share") this.waiting.set(peer, now);
      if (this.waiting.size > 4 * o.maxBulkCalls + 1024)
        this.waiting.delete(this.waiting.keys().next().value!);
      const retryAfterMs =
        reason === "share"
          ? // Its next call can start when one of its own ends.
            this.clampHint(this.holdMs / Math.max(1, holder.calls))
          : this.retryHint(this.placeInLine(peer));
      return { ok: false, reason, retryAfterMs };
    }
    this.waiting.delete(peer);
    holder.calls++;
    holder.bytes += reserve;
    this.holders.set(peer, holder);
    this.calls++;
    this.bytes += reserve;
    const started = now;
    let held = reserve;
    let released = false;
    return {
      ok: true,
      ticket: {
        resize: (bytes) => {
          if (released || bytes >= held) return;
          this.bytes -= held - bytes;
          holder.bytes -= held - bytes;
          held = bytes;
        },
        release: () => {
          if (released) return;
          released = true;
          this.calls--;
          this.bytes -= held;
          holder.calls--;
          holder.bytes -= held;
          if (holder.calls === 0) this.holders.delete(peer);
          const now = this.now();
          this.holdMs = 0.8 * this.holdMs + 0.2 * (now - started);
          if (this.lastReleaseAt !== undefined)
            this.releaseGapMs = 0.9 * this.releaseGapMs + 0.1 * (now - this.lastReleaseAt);
          this.lastReleaseAt = now;
        },
      },
    };
  }

  /** How many addresses are in line before `peer` (all of them if it is not in line). */
  private placeInLine(peer: string): number {
    let k = 0;
    for (const address of this.waiting.keys()) {
      if (address === peer) return k;
      k++;
    }
    return k;
  }

  /** Drops from the line the addresses that stopped asking. */
  private expireWaiting(now: number): void {
    for (const [address, at] of this.waiting)
      if (now - at > this.options.contentionWindowMs) this.waiting.delete(address);
  }

  /** Addresses holding tickets or waiting in line, counting `peer`. */
  private contenders(peer: string): number {
    let n = this.holders.size + (this.holders.has(peer) ? 0 : 1);
    for (const address of this.waiting.keys()) if (address !== peer && !this.holders.has(address)) n++;
    return n;
  }

  /**
   * About when a call frees up for the `place`-th in line: one frees up every releaseGapMs (as
   * measured, whichever of the calls or the bytes binds), or sooner when the server is not full.
   */
  private retryHint(place: number): number {
    const gap = Math.min(this.releaseGapMs, this.holdMs / Math.max(1, this.calls));
    return this.clampHint(gap * (place + 1));
  }

  private clampHint(ms: number): number {
    const { minRetryAfterMs, maxRetryAfterMs } = this.options;
    return Math.round(Math.min(maxRetryAfterMs, Math.max(minRetryAfterMs, ms)));
  }
}
