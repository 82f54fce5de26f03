/**
 * The discovery loop (DESIGN.md §9) around a PeerBook: every `discoveryIntervalMs` (5 s) it asks
 * one random known peer for its peers, and every newly learned peer once; it passes this node's
 * signed info as `caller` when it advertises (re-signed every `resignIntervalMs`); it ingests the
 * answers (their `self` too), records dial failures and successes, saves the book to the store
 * (debounced) whenever it changes, and loads it at start so a restart without `--peer` remembers.
 *
 * The network, clock, random and timers are injected, so the loop is unit-testable. It does not
 * import the sync engine: it reports the addresses each source names through `onPeersChanged`,
 * and the node passes them on (`SyncEngine.setPeers`).
 */
import type { KnownPeersAnswer } from "../client/peer-client.js";
import type { Ed25519Signer } from "../crypto/keys.js";
import { signNodeInfo } from "../crypto/node-info.js";
import type { Validator } from "../gen/dagsync/v1/types_pb.js";
import { PEER_SOURCES, type PeerBook, type PeerSource } from "./peer-book.js";

export interface DiscoveryNetwork {
  /** GetKnownPeers at `address`, introducing ourselves with `caller` when we advertise. */
  getKnownPeers(address: string, caller: Uint8Array | undefined): Promise<KnownPeersAnswer>;
}

/** Where the book is kept (the store's `peers` table). */
export interface DiscoveryStore {
  putKnownPeers(bytes: Uint8Array): Promise<void>;
  getKnownPeers(): Promise<Uint8Array | undefined>;
}

export interface DiscoveryLoopOptions {
  /** How often one random known peer is asked for its peers, ms. Default 5,000 (5 s). */
  readonly discoveryIntervalMs: number;
  /** How often this node's advertised info is signed anew, ms. Default 600,000 (10 min). */
  readonly resignIntervalMs: number;
  /** Changes are saved to the store at most this long after they happen, ms. Default 1,000. */
  readonly saveDebounceMs: number;
  /** Newly learned peers asked at once per round; the others wait for the next round. Default 8. */
  readonly maxNewAsksPerRound: number;
}

export const DEFAULT_DISCOVERY_LOOP_OPTIONS: DiscoveryLoopOptions = {
  discoveryIntervalMs: 5_000,
  resignIntervalMs: 600_000,
  saveDebounceMs: 1_000,
  maxNewAsksPerRound: 8,
};

export interface Advertise {
  readonly signer: Ed25519Signer;
  /** host:port where others reach our StateSync service. */
  readonly syncAddress: string;
  readonly gossipAddress?: string | undefined;
}

export interface DiscoveryLog {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface DiscoveryConfig {
  readonly book: PeerBook;
  readonly chainId: string;
  readonly network: DiscoveryNetwork;
  readonly store?: DiscoveryStore | undefined;
  /** Set when this node serves and has a network key. */
  readonly advertise?: Advertise | undefined;
  /** The addresses a source names changed (every source is reported once at start). */
  readonly onPeersChanged?: ((source: PeerSource, addresses: string[]) => void) | undefined;
  readonly log?: DiscoveryLog | undefined;
  readonly now?: (() => number) | undefined;
  readonly random?: (() => number) | undefined;
  readonly options?: Partial<DiscoveryLoopOptions> | undefined;
}

export class Discovery {
  readonly options: DiscoveryLoopOptions;
  readonly book: PeerBook;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly emitted = new Map<PeerSource, string>();
  /** Addresses learned and not yet asked. */
  private readonly fresh = new Set<string>();
  private readonly asking = new Map<string, Promise<void>>();
  private selfInfo: { bytes: Uint8Array; signedAtMs: number } | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private saveTimer: ReturnType<typeof setTimeout> | undefined;
  private dirty = false;
  private saving: Promise<void> = Promise.resolve();
  private stopped = false;
  private advertise: Advertise | undefined;

  constructor(private readonly config: DiscoveryConfig) {
    this.book = config.book;
    this.options = { ...DEFAULT_DISCOVERY_LOOP_OPTIONS, ...config.options };
    this.now = config.now ?? Date.now;
    this.random = config.random ?? Math.random;
    this.advertise = config.advertise;
  }

  /** Starts (or changes) advertising, e.g. once the server's port is bound. */
  setAdvertise(advertise: Advertise | undefined): void {
    this.advertise = advertise;
    this.selfInfo = undefined;
  }

  /** Loads the stored book; returns how many records were loaded. Reports every source. */
  async load(): Promise<number> {
    const bytes = await this.config.store?.getKnownPeers();
    const loaded = bytes === undefined ? 0 : this.book.loadStored(bytes, this.now());
    for (const p of this.book.peers()) if (p.syncAddress !== "") this.fresh.add(p.syncAddress);
    this.changed(false);
    return loaded;
  }

  /** Asks around now and every `discoveryIntervalMs` until `stop` (call `load` first). */
  start(): void {
    if (this.timer !== undefined || this.stopped) return;
    this.timer = setInterval(() => void this.round(), this.options.discoveryIntervalMs);
    this.timer.unref?.();
    void this.round();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    await Promise.allSettled([...this.asking.values()]);
    await this.flush();
  }

  /** The committee of `epoch` (the node calls this at start and at each epoch change). */
  setCommittee(
    epoch: number,
    validators: readonly Pick<Validator, "networkKey" | "syncAddress" | "gossipAddress">[],
  ): void {
    const before = new Set(this.book.peers().map((p) => p.syncAddress));
    if (!this.book.setCommittee(epoch, validators)) return;
    this.learned(before);
    this.changed(false);
  }

  /** Configured `--peer` addresses; returns the malformed ones. */
  addBootstrap(addresses: readonly string[]): string[] {
    const refused = this.book.addBootstrap(addresses);
    for (const a of addresses) if (!refused.includes(a)) this.fresh.add(a);
    this.changed(true);
    return refused;
  }

  /** Our signed info, re-signed when older than `resignIntervalMs`; undefined when we do not advertise. */
  self(): Uint8Array | undefined {
    const a = this.advertise;
    if (a === undefined) return undefined;
    const now = this.now();
    if (this.selfInfo === undefined || now - this.selfInfo.signedAtMs >= this.options.resignIntervalMs) {
      const bytes = signNodeInfo(a.signer, this.config.chainId, {
        syncAddress: a.syncAddress,
        gossipAddress: a.gossipAddress,
        timestampMs: now,
      });
      this.selfInfo = { bytes, signedAtMs: now };
    }
    return this.selfInfo.bytes;
  }

  /** Signed infos to answer GetKnownPeers with. */
  peers(limit: number): Uint8Array[] {
    return this.book.signedInfos(limit);
  }

  /** A caller introduced itself (GetKnownPeersRequest.caller). */
  offer(signedInfo: Uint8Array): void {
    const before = new Set(this.book.peers().map((p) => p.syncAddress));
    const outcome = this.book.offer(signedInfo, this.now());
    if (outcome !== "added" && outcome !== "updated") return;
    this.learned(before);
    this.changed(true);
  }

  /** Asks around now (the engine found no usable peer): a random known peer and every fresh one. */
  exchangeNow(): Promise<void> {
    return this.round();
  }

  /** One round: every fresh peer (up to maxNewAsksPerRound) and one random known peer. */
  async round(): Promise<void> {
    if (this.stopped) return;
    const now = this.now();
    const targets = new Set<string>();
    for (const a of this.fresh) {
      if (targets.size >= this.options.maxNewAsksPerRound) break;
      targets.add(a);
      this.fresh.delete(a);
    }
    const candidates = this.book.workingCandidates(now).filter((p) => !targets.has(p.syncAddress));
    if (candidates.length > 0) {
      const i = Math.min(candidates.length - 1, Math.floor(this.random() * candidates.length));
      targets.add(candidates[i]!.syncAddress);
    }
    await Promise.allSettled([...targets].map((a) => this.ask(a)));
  }

  /** Asks `address` for its peers (once at a time per address). */
  ask(address: string): Promise<void> {
    const pending = this.asking.get(address);
    if (pending !== undefined) return pending;
    const p = this.doAsk(address).finally(() => this.asking.delete(address));
    this.asking.set(address, p);
    return p;
  }

  /** Saves the book now if it changed since the last save. */
  async flush(): Promise<void> {
    if (this.saveTimer !== undefined) clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    await this.saving;
    const store = this.config.store;
    if (!this.dirty || store === undefined) return;
    this.dirty = false;
    this.saving = store.putKnownPeers(this.book.toStored()).catch((e: unknown) => {
      this.dirty = true;
      this.config.log?.warn({ err: (e as Error).message }, "saving known peers failed");
    });
    await this.saving;
  }

  private async doAsk(address: string): Promise<void> {
    let answer: KnownPeersAnswer;
    try {
      answer = await this.config.network.getKnownPeers(address, this.self());
    } catch (e) {
      this.book.recordDialFailure(address, this.now());
      this.config.log?.debug({ peer: address, err: (e as Error).message }, "GetKnownPeers failed");
      return;
    }
    this.book.recordDialSuccess(address);
    if (this.stopped) return;
    const before = new Set(this.book.peers().map((p) => p.syncAddress));
    const r = this.book.ingest(answer, this.now());
    this.learned(before);
    if (r.added + r.updated > 0) {
      this.config.log?.debug({ peer: address, added: r.added, updated: r.updated }, "peers learned");
      this.changed(true);
    }
  }

  /** Addresses not in `before` are fresh: asked in the next round. */
  private learned(before: ReadonlySet<string>): void {
    for (const p of this.book.peers())
      if (p.syncAddress !== "" && !before.has(p.syncAddress)) this.fresh.add(p.syncAddress);
  }

  /** Reports the sources whose addresses changed; schedules a save when `persist`. */
  private changed(persist: boolean): void {
    // Each address under the best source naming it (a bootstrap address whose node advertises
    // itself is both bootstrap and exchange: it stays bootstrap).
    const best = new Map<string, number>();
    for (const p of this.book.peers()) {
      if (p.syncAddress === "") continue;
      const rank = PEER_SOURCES.indexOf(p.source);
      best.set(p.syncAddress, Math.min(rank, best.get(p.syncAddress) ?? rank));
    }
    const bySource = new Map<PeerSource, string[]>(PEER_SOURCES.map((s) => [s, []]));
    for (const [address, rank] of best) bySource.get(PEER_SOURCES[rank]!)!.push(address);
    for (const [source, list] of bySource) {
      const addresses = [...new Set(list)].sort();
      const key = addresses.join(",");
      if (this.emitted.get(source) === key) continue;
      this.emitted.set(source, key);
      this.config.onPeersChanged?.(source, addresses);
    }
    if (persist) this.scheduleSave();
  }

  private scheduleSave(): void {
    this.dirty = true;
    if (this.saveTimer !== undefined || this.config.store === undefined) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined;
      void this.flush();
    }, this.options.saveDebounceMs);
    this.saveTimer.unref?.();
  }
}
