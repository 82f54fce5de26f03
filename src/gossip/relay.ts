/**
 * Dedup, delivery and relay of lane items (DESIGN.md §5: "digests seen recently are dropped; new
 * items are relayed to the other peers").
 *
 * Design: every item, ours or a peer's, is keyed by its digest ("b"/"t" + sha256 of the exact
 * bytes received) in one DedupCache; the first sight of a block is judged, delivered to the
 * listeners and queued for every other peer on its lane (lanes.ts); later sights are counted
 * as duplicates and go nowhere.
 *
 * Threats handled:
 * - Loops and amplification: an item is relayed once, to every peer except its sender, and the
 *   dedup cache is bounded in size and age.
 * - Invalid blocks: a BROADCAST block of the current epoch that is malformed, by a non-member or
 *   badly signed is evidence, and its sender is reported as misbehaving (blocked). A block is
 *   judged only against a committee we hold, the current one: one of a later epoch cannot be
 *   judged (an honest peer ahead of us sends them) and is dropped as "unknown_epoch"; one of an
 *   earlier epoch is stale (honest peers still relay the last rounds around an epoch change) and
 *   is dropped as "stale_epoch". Neither is blocked, delivered or relayed. Bytes that do not
 *   parse as a block have no epoch: junk, so the sender is blocked.
 */
import { toHex } from "../core/bytes.js";
import type { CommitteeView } from "../core/committee.js";
import { sha256 } from "../core/digest.js";
import type { SignatureVerifier } from "../core/types.js";
import { verifySignedBlock } from "../core/verify.js";
import { type BlockEntry, parseSignedBlock } from "../core/wire.js";
import type { DedupCache } from "./dedup.js";
import { encodeFrame, type Lane } from "./frames.js";
import type { Lanes } from "./lanes.js";
import type { GossipMetrics } from "./metrics.js";
import type { MisbehaviourKind, Session } from "./session.js";

export interface RelayDeps {
  readonly chainId: string;
  readonly committee: () => CommitteeView;
  readonly verifier: SignatureVerifier;
  readonly metrics: GossipMetrics | undefined;
  readonly dedup: DedupCache;
  readonly lanes: Lanes;
  /** The wall clock of the dedup cache. */
  readonly now: () => number;
  readonly sessions: () => Iterable<Session>;
  readonly misbehaved: (session: Session, kind: MisbehaviourKind, detail: string) => void;
}

export class Relay {
  private readonly blockListeners = new Set<(block: BlockEntry, from: string) => void>();
  private readonly txListeners = new Set<(tx: Uint8Array, from: string) => void>();

  constructor(private readonly deps: RelayDeps) {}

  onBlock(listener: (block: BlockEntry, from: string) => void): () => void {
    this.blockListeners.add(listener);
    return () => this.blockListeners.delete(listener);
  }

  onTransaction(listener: (tx: Uint8Array, from: string) => void): () => void {
    this.txListeners.add(listener);
    return () => this.txListeners.delete(listener);
  }

  /** Broadcasts our own signed block (encoded SignedBlock) to every peer. */
  publishBlock(bytes: Uint8Array): void {
    if (!this.firstSight("b", bytes)) return;
    this.sendToAll("broadcast", encodeFrame("block", bytes), undefined);
  }

  publishTransaction(tx: Uint8Array): void {
    if (!this.firstSight("t", tx)) return;
    this.sendToAll("mempool", encodeFrame("transaction", tx), undefined);
  }

  /** A BROADCAST item from `session`: judged, delivered and relayed, or dropped (module comment). */
  handleBlock(session: Session, bytes: Uint8Array): void {
    const { metrics } = this.deps;
    if (!this.firstSight("b", bytes)) {
      metrics?.duplicates.inc({ lane: "broadcast" });
      return;
    }
    let entry: BlockEntry;
    try {
      entry = parseSignedBlock(bytes);
    } catch (e) {
      return this.deps.misbehaved(session, "invalid_block", (e as Error).message);
    }
    const committee = this.deps.committee();
    if (entry.epoch !== committee.epoch) {
      const reason = entry.epoch > committee.epoch ? "unknown_epoch" : "stale_epoch";
      metrics?.dropped.inc({ lane: "broadcast", reason });
      return;
    }
    try {
      verifySignedBlock(entry, committee, this.deps.chainId, this.deps.verifier);
    } catch (e) {
      return this.deps.misbehaved(session, "invalid_block", (e as Error).message);
    }
    metrics?.delivered.inc({ lane: "broadcast" });
    for (const l of this.blockListeners) l(entry, session.keyHex);
    this.sendToAll("broadcast", encodeFrame("block", bytes), session);
  }

  /** A MEMPOOL item from `session`: delivered and relayed unless seen. */
  handleTransaction(session: Session, tx: Uint8Array): void {
    if (!this.firstSight("t", tx)) {
      this.deps.metrics?.duplicates.inc({ lane: "mempool" });
      return;
    }
    this.deps.metrics?.delivered.inc({ lane: "mempool" });
    for (const l of this.txListeners) l(tx, session.keyHex);
    this.sendToAll("mempool", encodeFrame("transaction", tx), session);
  }

  private firstSight(prefix: "b" | "t", bytes: Uint8Array): boolean {
    return this.deps.dedup.firstSight(`${prefix}${toHex(sha256(bytes))}`, this.deps.now());
  }

  /** Queues `frame` for every open session but `except`, within its outbound backlogs. */
  private sendToAll(lane: Lane, frame: Uint8Array, except: Session | undefined): void {
    for (const s of this.deps.sessions()) {
      if (s === except || s.closed) continue;
      if (!this.deps.lanes.enqueueOutbound(s.queues, lane, frame)) continue;
      if (except !== undefined) this.deps.metrics?.relayed.inc({ lane });
      s.pump();
    }
  }
}
