/**
 * The model of an emulated network for multi-process tests: named nodes on their own loopback
 * addresses (127.0.0.11, 127.0.0.12, …) and one directed `Link` per (src, dst) pair, each with a
 * profile (latency, jitter, bandwidth, random resets), a partition/stall state, a token bucket and
 * counters. The link proxies (link-proxy.ts) read this model and shape real TCP bytes with it.
 *
 * Choices:
 * - Directed links: a→b and b→a are independent, so asymmetric conditions (a slow uplink, a
 *   one-way stall) can be expressed. A connection dialed from a to b sends on a→b and receives
 *   on b→a; it "belongs" to a→b for the connection counters and for `resetMeanMs`.
 * - Partition vs stall: `partition(A, B)` blocks both directions between every pair of the two
 *   groups and also holds new connections (a SYN blackhole, see link-proxy.ts); `stall(src, dst)`
 *   blocks one direction's bytes only. Both hold bytes (no loss), like TCP retransmitting
 *   through a blackhole; `heal()` lifts the partitions, `stall(…, false)` the stall.
 * - Source IPs that belong to no registered node map to the pseudo-node "unknown"; its links use
 *   the default profile and partitions never apply to them.
 * - Reproducibility: each link draws its randomness (jitter, reset times) from its own PRNG seeded
 *   with the network seed and the link's name, so one link's draws do not depend on another's
 *   traffic. (The interleaving of several connections on one link still depends on timing.)
 */
import { Rng } from "../../src/devnet/rng.js";

/** How one direction of traffic between two nodes behaves. */
export interface LinkProfile {
  /** One-way propagation delay added to every chunk, in milliseconds. Default 0. */
  latencyMs: number;
  /** Extra random delay per chunk, uniform in [0, jitterMs] milliseconds (never reorders). Default 0. */
  jitterMs: number;
  /** Shared capacity of the directed link in bytes per second; undefined = unlimited (default). */
  bandwidthBytesPerSec: number | undefined;
  /**
   * Mean time in milliseconds after which each connection dialed over this link is reset (TCP RST),
   * drawn from an exponential distribution per connection; undefined = never (default).
   */
  resetMeanMs: number | undefined;
}

/** No delay, no limit, no resets: the default profile unless the Network is given another. */
export const PERFECT_LINK: Readonly<LinkProfile> = Object.freeze({
  latencyMs: 0,
  jitterMs: 0,
  bandwidthBytesPerSec: undefined,
  resetMeanMs: undefined,
});

/** The pseudo-node name of source addresses that belong to no registered node. */
export const UNKNOWN_NODE = "unknown";

/** Minimum token bucket burst, in bytes (64 KiB): a few TCP segments' worth at any rate. */
export const MIN_BURST_BYTES = 64 * 1024;
/** Burst as time at the link's rate, in milliseconds (50 ms); the larger of the two is used. */
export const BURST_MS = 50;

/**
 * A token bucket in "debt" form: `reserve(n)` always takes n tokens, possibly going negative, and
 * returns how long the caller must wait before sending. Each caller reserves one piece at a time,
 * so connections sharing the bucket interleave in reservation order and together get the rate.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private rate: number | undefined,
    now: number,
  ) {
    this.tokens = this.burst();
    this.last = now;
  }

  /** Burst size in bytes: max(MIN_BURST_BYTES, BURST_MS worth of the rate). */
  burst(): number {
    return this.rate === undefined
      ? Number.POSITIVE_INFINITY
      : Math.max(MIN_BURST_BYTES, (this.rate * BURST_MS) / 1000);
  }

  setRate(rate: number | undefined, now: number): void {
    this.refill(now);
    this.rate = rate;
    this.tokens = Math.min(this.tokens, this.burst());
    // Leaving "unlimited": start from a full burst rather than from infinity.
    if (!Number.isFinite(this.tokens)) this.tokens = this.burst();
  }

  /** Takes `bytes` tokens; returns the wait in milliseconds before they may be sent (0 = now). */
  reserve(bytes: number, now: number): number {
    if (this.rate === undefined) return 0;
    this.refill(now);
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000;
  }

  private refill(now: number): void {
    if (this.rate !== undefined) {
      this.tokens = Math.min(this.burst(), this.tokens + ((now - this.last) * this.rate) / 1000);
    }
    this.last = now;
  }
}

/** What a link tells the connections on it: its state changed (re-check), or reset now. */
export interface LinkListener {
  wake(): void;
  reset(): void;
}

/** Counters of one directed link. */
export interface LinkStats {
  src: string;
  dst: string;
  /** Bytes written to the receiving side over this direction. */
  bytesDelivered: number;
  /** Connections dialed over this link (src dialed dst), including those held by a partition. */
  connectionsOpened: number;
  /** Of those, connections reset by the emulator (random resets and `resetAll`). */
  connectionsReset: number;
}

/** One direction of traffic between two nodes. */
export class Link {
  readonly name: string;
  profile: Readonly<LinkProfile>;
  partitioned = false;
  stalled = false;
  readonly bucket: TokenBucket;
  bytesDelivered = 0;
  connectionsOpened = 0;
  connectionsReset = 0;
  private readonly rng: Rng;
  private readonly listeners = new Set<LinkListener>();

  constructor(
    readonly src: string,
    readonly dst: string,
    profile: Readonly<LinkProfile>,
    seed: string,
  ) {
    this.name = `${src}->${dst}`;
    this.profile = { ...profile };
    this.rng = new Rng(`${seed}/${this.name}`);
    this.bucket = new TokenBucket(profile.bandwidthBytesPerSec, performance.now());
  }

  /** True while bytes may not cross this link (partitioned or stalled). */
  get blocked(): boolean {
    return this.partitioned || this.stalled;
  }

  /** A uniform float in [0, 1) from this link's own PRNG. */
  random(): number {
    return this.rng.nextU32() / 2 ** 32;
  }

  /** One jitter draw in milliseconds, uniform in [0, jitterMs]. */
  jitterSample(): number {
    return this.profile.jitterMs > 0 ? this.random() * this.profile.jitterMs : 0;
  }

  /** Milliseconds until a connection on this link is reset (exponential), or undefined for never. */
  resetDelaySample(): number | undefined {
    const mean = this.profile.resetMeanMs;
    return mean === undefined ? undefined : -mean * Math.log(1 - this.random());
  }

  update(patch: Partial<LinkProfile>): void {
    this.profile = { ...this.profile, ...patch };
    this.bucket.setRate(this.profile.bandwidthBytesPerSec, performance.now());
    this.wake();
  }

  /** Registers a connection on this link; returns the function that removes it. */
  attach(listener: LinkListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Tells every connection on this link that its state changed. */
  wake(): void {
    for (const l of [...this.listeners]) l.wake();
  }

  /** Resets (RST) every open connection on this link. */
  resetConnections(): void {
    for (const l of [...this.listeners]) l.reset();
  }

  stats(): LinkStats {
    const { src, dst, bytesDelivered, connectionsOpened, connectionsReset } = this;
    return { src, dst, bytesDelivered, connectionsOpened, connectionsReset };
  }
}

export interface NetworkOptions {
  /** Seed of every link's PRNG: same seed, same draws. */
  seed: string;
  /** Profile of links not configured otherwise (and of the "unknown" node's). Default PERFECT_LINK. */
  defaultProfile?: Partial<LinkProfile>;
}

/** Named nodes and the directed links between them. */
export class Network {
  readonly seed: string;
  readonly defaultProfile: Readonly<LinkProfile>;
  private readonly ips = new Map<string, string>();
  private readonly names = new Map<string, string>();
  private readonly linkMap = new Map<string, Link>();

  constructor(options: NetworkOptions) {
    this.seed = options.seed;
    this.defaultProfile = { ...PERFECT_LINK, ...options.defaultProfile };
  }

  addNode(name: string, ip: string): void {
    if (name === UNKNOWN_NODE) throw new Error(`"${UNKNOWN_NODE}" is reserved`);
    if (this.ips.has(name) || this.names.has(ip))
      throw new Error(`node ${name} or address ${ip} already added`);
    this.ips.set(name, ip);
    this.names.set(ip, name);
  }

  /** Registered node names, in the order added. */
  nodes(): string[] {
    return [...this.ips.keys()];
  }

  ipOf(name: string): string {
    const ip = this.ips.get(name);
    if (ip === undefined) throw new Error(`unknown node ${name}`);
    return ip;
  }

  /** The node at `ip` (an IPv4-mapped "::ffff:" prefix is ignored), or "unknown". */
  nodeOf(ip: string | undefined): string {
    const plain = ip?.startsWith("::ffff:") ? ip.slice(7) : ip;
    return (plain !== undefined && this.names.get(plain)) || UNKNOWN_NODE;
  }

  /** The directed link src→dst, created with the default profile on first use. */
  link(src: string, dst: string): Link {
    const key = `${src}->${dst}`;
    let link = this.linkMap.get(key);
    if (!link) {
      link = new Link(src, dst, this.defaultProfile, this.seed);
      this.linkMap.set(key, link);
    }
    return link;
  }

  /** Links created so far. */
  links(): Link[] {
    return [...this.linkMap.values()];
  }

  setLink(src: string, dst: string, patch: Partial<LinkProfile>): void {
    this.link(src, dst).update(patch);
  }

  /** Sets both directions between a and b. */
  setPair(a: string, b: string, patch: Partial<LinkProfile>): void {
    this.setLink(a, b, patch);
    this.setLink(b, a, patch);
  }

  /** Applies `patch` to every link between registered nodes (and existing ones) that `match` accepts. */
  setLinks(match: (src: string, dst: string) => boolean, patch: Partial<LinkProfile>): void {
    for (const src of this.nodes()) for (const dst of this.nodes()) if (src !== dst) this.link(src, dst);
    for (const link of this.links()) if (match(link.src, link.dst)) link.update(patch);
  }

  /**
   * Blocks both directions between every node of `a` and every node of `b` until `heal()`. Open
   * connections hold their bytes; new ones are held unanswered. With `reset`, open connections
   * between the groups are reset instead.
   */
  partition(a: readonly string[], b: readonly string[], options: { reset?: boolean } = {}): void {
    for (const x of a) {
      for (const y of b) {
        if (x === y || x === UNKNOWN_NODE || y === UNKNOWN_NODE) continue;
        for (const link of [this.link(x, y), this.link(y, x)]) {
          link.partitioned = true;
          if (options.reset) link.resetConnections();
          link.wake();
        }
      }
    }
  }

  /** Lifts every partition (stalls stay). */
  heal(): void {
    for (const link of this.links()) {
      if (!link.partitioned) continue;
      link.partitioned = false;
      link.wake();
    }
  }

  /** Holds (on) or releases (off) the bytes of the one direction src→dst. */
  stall(src: string, dst: string, on: boolean): void {
    const link = this.link(src, dst);
    link.stalled = on;
    link.wake();
  }

  /** Resets (RST) every open connection between src and dst, in either direction. */
  resetAll(src: string, dst: string): void {
    this.link(src, dst).resetConnections();
    this.link(dst, src).resetConnections();
  }

  stats(): LinkStats[] {
    return this.links().map((l) => l.stats());
  }
}
