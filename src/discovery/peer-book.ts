/**
 * The known set of peers (DESIGN.md §9): every peer this node has heard of, from three sources,
 * with its dial state. Pure bookkeeping with injected time: no timers, no I/O. `node` wires it to
 * the sync engine (who to dial), the server (what GetKnownPeers answers) and the store
 * (persist.ts).
 *
 * Sources:
 * - `committee`: the validators of the current epoch (`setCommittee`), keyed by network key, at
 *   their committee addresses. At an epoch change, departed validators lose this source and are
 *   dropped when no other source remains.
 * - `bootstrap`: configured `--peer` addresses, without keys (`addBootstrap`).
 * - `exchange`: signed NodeInfo from GetKnownPeers (`ingest`, `offer`), keyed by network key; each
 *   entry passes every rule of core/node-info.ts, and a newer timestamp replaces an older one.
 *   A key may be both committee and exchange: its signed info, being newer word from the key
 *   itself, gives its address then.
 *
 * Bounds: at most `maxEntriesPerAnswer` (200) entries of an answer are considered, the rest are
 * ignored and counted; bad entries are counted by reason, never fatal. The set holds at most
 * `maxKnownPeers` (1,000) entries: a new exchange entry at the bound evicts the worst
 * exchange-only entry (most consecutive dial failures, then oldest timestamp) when the newcomer is
 * better, and is refused otherwise. Committee and bootstrap entries are never evicted (their
 * number is bounded by the chain and the configuration); when they alone exceed the bound, the
 * set holds no exchange-only entries.
 *
 * Dial state is per address: `recordDialFailure` backs the address off exponentially
 * (`dialBackoffBaseMs` doubled per failure, at most `dialBackoffMaxMs`); `recordDialSuccess`
 * clears it. `pick` skips peers in backoff and orders committee first, then bootstrap, then
 * exchange.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { KnownPeersAnswer } from "../client/peer-client.js";
import {
  isHostPort,
  NODE_INFO_REJECTIONS,
  type NodeInfoEntry,
  type NodeInfoRejection,
  type NodeInfoRules,
  type SignatureVerifier,
  toHex,
  validateSignedNodeInfo,
} from "../core/index.js";
import type { Validator } from "../gen/dagsync/v1/types_pb.js";
import { type StoredKnownPeers, StoredKnownPeersSchema } from "../gen/dagsync/wire/v1/wire_pb.js";
import { type DiscoveryOptions, resolveDiscoveryOptions } from "./options.js";

export type PeerSource = "committee" | "bootstrap" | "exchange";
export const PEER_SOURCES: readonly PeerSource[] = ["committee", "bootstrap", "exchange"];

/** A snapshot of one known peer. */
export interface KnownPeer {
  /** Hex network key, or `bootstrap:<address>` for a bootstrap address without a key. */
  readonly id: string;
  readonly networkKey: Uint8Array | undefined;
  /** Where to dial its StateSync service ("" for a committee member without an address). */
  readonly syncAddress: string;
  readonly gossipAddress: string;
  /** Its sources, in rank order (committee, bootstrap, exchange). */
  readonly sources: readonly PeerSource[];
  /** The best of its sources. */
  readonly source: PeerSource;
  /** Timestamp of its signed info, ms; 0 when it has none. */
  readonly timestampMs: number;
  /** Its encoded SignedNodeInfo as received, for exchange entries. */
  readonly signedInfo: Uint8Array | undefined;
  /** Dial failures in a row at its address. */
  readonly consecutiveFailures: number;
  /** No dial before this time, ms; 0 when not backed off. */
  readonly backoffUntilMs: number;
}

/** What happened to one offered entry. */
export type OfferOutcome =
  | "added"
  | "updated"
  /** A known key with a timestamp not newer than the one held: kept as it was. */
  | "not_newer"
  /** The set is full and the newcomer is not better than any evictable entry. */
  | "full"
  | NodeInfoRejection;

export interface IngestResult {
  readonly added: number;
  readonly updated: number;
  readonly notNewer: number;
  readonly full: number;
  /** Entries beyond maxEntriesPerAnswer, not looked at. */
  readonly ignored: number;
  readonly rejected: Readonly<Record<NodeInfoRejection, number>>;
}

/** Counters for metrics, as plain numbers. */
export interface PeerBookStats {
  /** Entries having each source (an entry may count under several), and the total. */
  readonly known: Readonly<Record<PeerSource, number>> & { readonly total: number };
  /** Entries refused since start, by reason. */
  readonly rejected: Readonly<Record<NodeInfoRejection, number>>;
  /** Entries beyond maxEntriesPerAnswer, ignored, since start. */
  readonly ignoredOverLimit: number;
  /** Newcomers refused because the set was full, since start. */
  readonly refusedFull: number;
  /** Exchange entries evicted to make room, since start. */
  readonly evicted: number;
  /** Dial failures recorded, since start. */
  readonly dialFailures: number;
}

export interface PeerBookConfig {
  readonly chainId: string;
  readonly verifier: SignatureVerifier;
  /** This node's network key, when it has one: entries naming it are refused (`own_key`). */
  readonly ownKey?: Uint8Array | undefined;
  readonly options?: Partial<DiscoveryOptions> | undefined;
}

interface Entry {
  readonly id: string;
  readonly networkKey: Uint8Array | undefined;
  committee: { syncAddress: string; gossipAddress: string } | undefined;
  bootstrap: string | undefined;
  signed: NodeInfoEntry | undefined;
}

interface DialState {
  failures: number;
  backoffUntilMs: number;
}

const SOURCE_BITS: Record<PeerSource, number> = { committee: 1, bootstrap: 2, exchange: 4 };

function zeroRejections(): Record<NodeInfoRejection, number> {
  return Object.fromEntries(NODE_INFO_REJECTIONS.map((r) => [r, 0])) as Record<NodeInfoRejection, number>;
}

function sourcesOf(e: Entry): PeerSource[] {
  const out: PeerSource[] = [];
  if (e.committee !== undefined) out.push("committee");
  if (e.bootstrap !== undefined) out.push("bootstrap");
  if (e.signed !== undefined) out.push("exchange");
  return out;
}

function syncAddressOf(e: Entry): string {
  return e.signed?.syncAddress ?? e.committee?.syncAddress ?? e.bootstrap ?? "";
}

function isExchangeOnly(e: Entry): boolean {
  return e.committee === undefined && e.bootstrap === undefined;
}

export class PeerBook {
  readonly options: DiscoveryOptions;
  private readonly entries = new Map<string, Entry>();
  private readonly dial = new Map<string, DialState>();
  private committeeEpoch = -1;
  private readonly rejected = zeroRejections();
  private ignoredOverLimit = 0;
  private refusedFull = 0;
  private evicted = 0;
  private dialFailures = 0;

  constructor(private readonly config: PeerBookConfig) {
    this.options = resolveDiscoveryOptions(config.options);
  }

  get size(): number {
    return this.entries.size;
  }

  /** The epoch of the committee last set, or -1 before any. */
  get epoch(): number {
    return this.committeeEpoch;
  }

  /**
   * The committee of `epoch` becomes the committee source: its members are added (or keep the
   * source), departed ones lose it and are dropped when no other source remains. An epoch older
   * than the one held is ignored (returns false). Our own key is skipped; a member whose
   * sync_address is not `host:port` is kept without an address (nothing to dial there).
   */
  setCommittee(
    epoch: number,
    validators: readonly Pick<Validator, "networkKey" | "syncAddress" | "gossipAddress">[],
  ): boolean {
    if (epoch < this.committeeEpoch) return false;
    this.committeeEpoch = epoch;
    const { maxAddressBytes } = this.options;
    const members = new Set<string>();
    for (const v of validators) {
      if (this.isOwnKey(v.networkKey)) continue;
      const id = toHex(v.networkKey);
      members.add(id);
      const entry = this.entries.get(id) ?? this.insert(id, v.networkKey);
      entry.committee = {
        syncAddress: isHostPort(v.syncAddress, maxAddressBytes) ? v.syncAddress : "",
        gossipAddress: isHostPort(v.gossipAddress, maxAddressBytes) ? v.gossipAddress : "",
      };
    }
    for (const entry of [...this.entries.values()]) {
      if (entry.committee === undefined || members.has(entry.id)) continue;
      entry.committee = undefined;
      if (sourcesOf(entry).length === 0) this.remove(entry);
    }
    this.trim();
    return true;
  }

  /** Adds bootstrap addresses (`host:port`, no key). Returns the addresses refused as malformed. */
  addBootstrap(addresses: readonly string[]): string[] {
    const refused: string[] = [];
    for (const address of addresses) {
      if (!isHostPort(address, this.options.maxAddressBytes)) {
        refused.push(address);
        continue;
      }
      const id = `bootstrap:${address}`;
      const entry = this.entries.get(id) ?? this.insert(id, undefined);
      entry.bootstrap = address;
    }
    this.trim();
    return refused;
  }

  /**
   * Applies the §9 rules to a GetKnownPeers answer: `self` and the first `maxEntriesPerAnswer`
   * peers are offered, the rest ignored and counted. Never throws for bad entries.
   */
  ingest(answer: KnownPeersAnswer, nowMs: number): IngestResult {
    const counts = { added: 0, updated: 0, notNewer: 0, full: 0 };
    const rejected = zeroRejections();
    const limit = this.options.maxEntriesPerAnswer;
    const considered = answer.peers.slice(0, limit);
    const ignored = answer.peers.length - considered.length;
    this.ignoredOverLimit += ignored;
    const offered = answer.self === undefined ? considered : [answer.self, ...considered];
    for (const bytes of offered) {
      const outcome = this.offer(bytes, nowMs);
      if (outcome === "added") counts.added++;
      else if (outcome === "updated") counts.updated++;
      else if (outcome === "not_newer") counts.notNewer++;
      else if (outcome === "full") counts.full++;
      else rejected[outcome]++;
    }
    return { ...counts, ignored, rejected };
  }

  /** Offers one encoded SignedNodeInfo (an answer's entry, or a caller's introduction). */
  offer(bytes: Uint8Array, nowMs: number): OfferOutcome {
    return this.offerWith(bytes, this.rules(nowMs));
  }

  /** Records a failed dial of `address`: one more failure in a row, and a longer backoff. */
  recordDialFailure(address: string, nowMs: number): void {
    const state = this.dial.get(address) ?? { failures: 0, backoffUntilMs: 0 };
    state.failures++;
    const { dialBackoffBaseMs, dialBackoffMaxMs } = this.options;
    const delay = Math.min(dialBackoffMaxMs, dialBackoffBaseMs * 2 ** Math.min(state.failures - 1, 30));
    state.backoffUntilMs = nowMs + delay;
    this.dial.set(address, state);
    this.dialFailures++;
  }

  /** Records a successful dial (any answered call) of `address`: its failures and backoff clear. */
  recordDialSuccess(address: string): void {
    this.dial.delete(address);
  }

  /** Whether `address` failed `maxDialFailures` times in a row: it leaves the working set. */
  isFailing(address: string): boolean {
    return (this.dial.get(address)?.failures ?? 0) >= this.options.maxDialFailures;
  }

  /**
   * Peers that may be dialed now, best first: by source (committee, bootstrap, exchange), then
   * fewer failures in a row, then newer signed info; one per address; none in backoff.
   */
  workingCandidates(nowMs: number): KnownPeer[] {
    const rank = (p: KnownPeer) => PEER_SOURCES.indexOf(p.source);
    const out = [...this.entries.values()]
      .map((e) => this.view(e))
      .filter((p) => p.syncAddress !== "" && p.backoffUntilMs <= nowMs)
      .sort(
        (a, b) =>
          rank(a) - rank(b) ||
          a.consecutiveFailures - b.consecutiveFailures ||
          b.timestampMs - a.timestampMs ||
          (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
      );
    const seen = new Set<string>();
    return out.filter((p) => !seen.has(p.syncAddress) && seen.add(p.syncAddress) !== undefined);
  }

  /** The best `n` working candidates (workingCandidates). */
  pick(n: number, nowMs: number): KnownPeer[] {
    return this.workingCandidates(nowMs).slice(0, Math.max(0, n));
  }

  /** Every known peer, in no particular order. */
  peers(): KnownPeer[] {
    return [...this.entries.values()].map((e) => this.view(e));
  }

  get(id: string): KnownPeer | undefined {
    const e = this.entries.get(id);
    return e === undefined ? undefined : this.view(e);
  }

  /** Up to `limit` signed infos to share in a GetKnownPeers answer: newest first. */
  signedInfos(limit: number): Uint8Array[] {
    return [...this.entries.values()]
      .flatMap((e) => (e.signed === undefined ? [] : [e.signed]))
      .sort((a, b) => b.timestampMs - a.timestampMs)
      .slice(0, Math.max(0, limit))
      .map((s) => s.bytes);
  }

  stats(): PeerBookStats {
    const known = { committee: 0, bootstrap: 0, exchange: 0, total: this.entries.size };
    for (const e of this.entries.values()) for (const s of sourcesOf(e)) known[s]++;
    return {
      known,
      rejected: { ...this.rejected },
      ignoredOverLimit: this.ignoredOverLimit,
      refusedFull: this.refusedFull,
      evicted: this.evicted,
      dialFailures: this.dialFailures,
    };
  }

  /**
   * The set as stored (StoredKnownPeers): bootstrap addresses and signed infos, as received.
   * Committee entries are not stored: they come back from the store's committee (setCommittee).
   */
  toStored(): Uint8Array {
    const peers = [];
    for (const e of this.entries.values()) {
      if (e.signed === undefined && e.bootstrap === undefined) continue;
      let sources = 0;
      for (const s of sourcesOf(e)) sources |= SOURCE_BITS[s];
      peers.push({
        signedInfo: e.signed?.bytes ?? new Uint8Array(0),
        address: e.bootstrap ?? "",
        sources,
      });
    }
    return toBinary(StoredKnownPeersSchema, create(StoredKnownPeersSchema, { peers }));
  }

  /**
   * Adds the peers of `toStored` bytes. Signed infos pass every rule again except their age (a
   * node that was down a day still knows its peers; dialing tells whether they are still there).
   * Bytes that do not decode load nothing. Returns how many records were loaded.
   */
  loadStored(bytes: Uint8Array, nowMs: number): number {
    let stored: StoredKnownPeers;
    try {
      stored = fromBinary(StoredKnownPeersSchema, bytes);
    } catch {
      return 0;
    }
    const rules = { ...this.rules(nowMs), maxAgeMs: Number.POSITIVE_INFINITY };
    let loaded = 0;
    for (const p of stored.peers) {
      if (p.address !== "" && this.addBootstrap([p.address]).length === 0) loaded++;
      if (p.signedInfo.length > 0) {
        const outcome = this.offerWith(p.signedInfo, rules);
        if (outcome === "added" || outcome === "updated" || outcome === "not_newer") loaded++;
      }
    }
    return loaded;
  }

  private rules(nowMs: number): NodeInfoRules {
    const o = this.options;
    return {
      chainId: this.config.chainId,
      verifier: this.config.verifier,
      nowMs,
      ownKey: this.config.ownKey,
      maxFutureMs: o.maxFutureMs,
      maxAgeMs: o.maxAgeMs,
      maxAddressBytes: o.maxAddressBytes,
    };
  }

  private offerWith(bytes: Uint8Array, rules: NodeInfoRules): OfferOutcome {
    const verdict = validateSignedNodeInfo(bytes, rules);
    if (!verdict.ok) {
      this.rejected[verdict.reason]++;
      return verdict.reason;
    }
    const info = verdict.entry;
    const id = toHex(info.networkKey);
    const existing = this.entries.get(id);
    if (existing !== undefined) {
      if (existing.signed !== undefined && info.timestampMs <= existing.signed.timestampMs)
        return "not_newer";
      existing.signed = info;
      return "updated";
    }
    if (this.entries.size >= this.options.maxKnownPeers) {
      const worst = this.worstEvictable();
      const worstFailures = worst === undefined ? 0 : this.failuresOf(worst);
      if (
        worst === undefined ||
        (worstFailures === 0 && (worst.signed?.timestampMs ?? 0) >= info.timestampMs)
      ) {
        this.refusedFull++;
        return "full";
      }
      this.remove(worst);
      this.evicted++;
    }
    this.insert(id, info.networkKey).signed = info;
    return "added";
  }

  /** Drops the worst exchange-only entries while the set is over its bound. */
  private trim(): void {
    while (this.entries.size > this.options.maxKnownPeers) {
      const worst = this.worstEvictable();
      if (worst === undefined) return;
      this.remove(worst);
      this.evicted++;
    }
  }

  /** The exchange-only entry to evict first: most failures in a row, then oldest timestamp. */
  private worstEvictable(): Entry | undefined {
    let worst: Entry | undefined;
    let worstFailures = -1;
    for (const e of this.entries.values()) {
      if (!isExchangeOnly(e)) continue;
      const failures = this.failuresOf(e);
      if (
        worst === undefined ||
        failures > worstFailures ||
        (failures === worstFailures && (e.signed?.timestampMs ?? 0) < (worst.signed?.timestampMs ?? 0))
      ) {
        worst = e;
        worstFailures = failures;
      }
    }
    return worst;
  }

  private failuresOf(e: Entry): number {
    return this.dial.get(syncAddressOf(e))?.failures ?? 0;
  }

  private isOwnKey(key: Uint8Array): boolean {
    const own = this.config.ownKey;
    return own !== undefined && toHex(own) === toHex(key);
  }

  private insert(id: string, networkKey: Uint8Array | undefined): Entry {
    const entry: Entry = { id, networkKey, committee: undefined, bootstrap: undefined, signed: undefined };
    this.entries.set(id, entry);
    return entry;
  }

  private remove(entry: Entry): void {
    this.entries.delete(entry.id);
    const address = syncAddressOf(entry);
    if (![...this.entries.values()].some((e) => syncAddressOf(e) === address)) this.dial.delete(address);
  }

  private view(e: Entry): KnownPeer {
    const sources = sourcesOf(e);
    const syncAddress = syncAddressOf(e);
    const dial = this.dial.get(syncAddress);
    return {
      id: e.id,
      networkKey: e.networkKey,
      syncAddress,
      gossipAddress: e.signed?.gossipAddress ?? e.committee?.gossipAddress ?? "",
      sources,
      source: sources[0] ?? "exchange",
      timestampMs: e.signed?.timestampMs ?? 0,
      signedInfo: e.signed?.bytes,
      consecutiveFailures: dial?.failures ?? 0,
      backoffUntilMs: dial?.backoffUntilMs ?? 0,
    };
  }
}
