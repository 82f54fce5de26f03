/**
 * Handshakes in progress on the listener, bounded twice: per source address and in total.
 *
 * Threat: a crowd opens Connect streams and never finishes the handshake (or finishes it slowly).
 * Each open stream holds grpc-js and handshake state until `handshakeTimeoutMs`, so without a
 * bound memory grows with the crowd. The per-address cap stops one host from holding many; the
 * total cap bounds memory whatever the number of hosts. At the total cap the OLDEST pending
 * handshake is evicted rather than the newest refused: an honest peer finishes its handshake in
 * one round trip, so a crowd that wants to keep it out must open streams faster than that round
 * trip, every time, instead of filling the table once and waiting.
 */

/** A handshake admitted: call `release` once it settles (established, failed or closed). */
export interface PendingTicket {
  release(): void;
}

export type AdmitResult =
  | { readonly admitted: true; readonly ticket: PendingTicket }
  | { readonly admitted: false; readonly reason: string };

interface Entry {
  readonly address: string;
  readonly evict: () => void;
  released: boolean;
}

export class PendingHandshakes {
  private readonly byAddress = new Map<string, number>();
  /** Insertion order is age order: the first entry is the oldest. */
  private readonly entries = new Set<Entry>();

  constructor(
    private readonly maxTotal: number,
    private readonly maxPerAddress: number,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /**
   * Admits a handshake from `address`, evicting the oldest pending one when the total is at its
   * cap (`evict` is what ends a handshake evicted later). Refuses when `address` is at its cap.
   */
  admit(address: string, evict: () => void): AdmitResult {
    const mine = this.byAddress.get(address) ?? 0;
    if (mine >= this.maxPerAddress)
      return {
        admitted: false,
        reason: `too many handshakes in progress from ${address} (limit ${this.maxPerAddress})`,
      };
    while (this.entries.size >= this.maxTotal) {
      const oldest = this.entries.values().next().value as Entry;
      this.release(oldest);
      oldest.evict();
    }
    const entry: Entry = { address, evict, released: false };
    this.entries.add(entry);
    // Read again: the eviction above may have released one of this address's own entries (a
    // stale count here once left an address one slot short for good).
    this.byAddress.set(address, (this.byAddress.get(address) ?? 0) + 1);
    return { admitted: true, ticket: { release: () => this.release(entry) } };
  }

  private release(entry: Entry): void {
    if (entry.released) return;
    entry.released = true;
    this.entries.delete(entry);
    const n = (this.byAddress.get(entry.address) ?? 1) - 1;
    if (n <= 0) this.byAddress.delete(entry.address);
    else this.byAddress.set(entry.address, n);
  }
}

/** The IP of a grpc-js peer string ("127.0.0.1:5000", "[::1]:5000", "::ffff:10.0.0.1:5000"). */
export function peerHost(peer: string): string {
  const bracket = /^\[([^\]]+)\]:\d+$/.exec(peer);
  let host = bracket?.[1] ?? peer.replace(/:\d+$/, "");
  if (host.startsWith("::ffff:")) host = host.slice(7);
  return host;
}
