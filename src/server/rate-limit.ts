/**
 * Per-peer admission: a GCRA token bucket per (peer, RPC) and a cap on requests in flight per
 * peer. A peer is its remote IP, not its port, so that opening more connections buys nothing.
 *
 * The GCRA itself is in core (the gossip lanes use it too). A refusal says how long to wait,
 * which the server passes on as a retry hint.
 */
export { type Admission, Gcra } from "../core/gcra.js";

export class InflightLimiter {
  private readonly counts = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** Takes a slot; returns the release function, or undefined when the peer is at its cap. */
  acquire(key: string): (() => void) | undefined {
    const n = this.counts.get(key) ?? 0;
    if (n >= this.max) return undefined;
    this.counts.set(key, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.counts.get(key) ?? 1) - 1;
      if (left <= 0) this.counts.delete(key);
      else this.counts.set(key, left);
    };
  }

  inflight(key: string): number {
    return this.counts.get(key) ?? 0;
  }
}

/** The peer key of a grpc-js call's `getPeer()`: "ipv4:1.2.3.4:5678" → "1.2.3.4". */
export function peerKey(peer: string): string {
  const m = /^(?:ipv4:|ipv6:)?\[?([^\]]*?)\]?:\d+$/.exec(peer);
  return m?.[1] ?? peer;
}
