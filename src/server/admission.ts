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
 * - over the cap, a caller is refused at once with a retry hint (about the time a call holds its
 *   ticket), never queued until its deadline.
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

export type BulkRefusal = { readonly reason: "calls" | "bytes" | "share"; readonly retryAfterMs: number };

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
  /** Addresses refused recently, with when: they contend for a share although they hold nothing. */
  private readonly refused = new Map<string, number>();
  /** EWMA of how long a ticket is held, ms: the retry hint. */
  private holdMs = 50;

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
    const holder = this.holders.get(peer) ?? { calls: 0, bytes: 0 };
    const contenders = this.contenders(peer, now);
    const callShare = Math.max(1, Math.floor(o.maxBulkCalls / contenders));
    const byteShare = Math.max(reserve, Math.floor(o.maxServerInflightBytes / contenders));
    let reason: BulkRefusal["reason"] | undefined;
    if (holder.calls >= callShare || holder.bytes + reserve > byteShare) reason = "share";
    else if (this.calls >= o.maxBulkCalls) reason = "calls";
    else if (this.bytes + reserve > o.maxServerInflightBytes && this.calls > 0) reason = "bytes";
    if (reason !== undefined) {
      this.refused.set(peer, now);
      if (this.refused.size > 4 * o.maxBulkCalls + 1024) this.forgetRefused(now);
      return { ok: false, reason, retryAfterMs: this.retryHint() };
    }
    holder.calls++;
    holder.bytes += reserve;
    this.holders.set(peer, holder);
    this.calls++;
    this.bytes += reserve;
    this.refused.delete(peer);
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
          this.holdMs = 0.8 * this.holdMs + 0.2 * (this.now() - started);
        },
      },
    };
  }

  /** Addresses holding tickets or refused within the window, counting `peer`. */
  private contenders(peer: string, now: number): number {
    let n = this.holders.size + (this.holders.has(peer) ? 0 : 1);
    for (const [address, at] of this.refused) {
      if (now - at > this.options.contentionWindowMs) this.refused.delete(address);
      else if (address !== peer && !this.holders.has(address)) n++;
    }
    return n;
  }

  private forgetRefused(now: number): void {
    for (const [address, at] of this.refused)
      if (now - at > this.options.contentionWindowMs) this.refused.delete(address);
  }

  private retryHint(): number {
    const { minRetryAfterMs, maxRetryAfterMs } = this.options;
    return Math.round(Math.min(maxRetryAfterMs, Math.max(minRetryAfterMs, this.holdMs)));
  }
}
