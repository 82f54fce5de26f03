/**
 * Height refresh (DESIGN §4 item 1): rounds of GetCommitAvailability to every peer, every
 * `peerQueryIntervalMs` and on each PushCommit hint. At most one round runs and one more is
 * queued, so that a flood of hints costs at most one extra round. A height query holds a request
 * slot of its peer like a fetch, and is launched before fetches so that it gets the next one.
 *
 * Threat: heights are claims. A peer that refused a commit it advertised is a suspect; the first
 * answer to a query sent after the refusal judges it: if it still advertises that commit, its
 * heights above it are not believed for `banDurationMs` (not a ban: it may serve what is below),
 * so that it neither gets that range again nor holds the target up. A peer with another genesis
 * is off-chain and never asked again.
 *
 * Only the working set is asked. A peer that enters it is asked at once, in the round in progress
 * or in a round of its own (`ask`), not at the next interval; that first query is its dial, and
 * dials go through the `DialLimiter` (`maxDialsPerSecond`): a peer waiting for one stays due.
 */
import type { Logger } from "pino";
import type { Availability, PeerError } from "../client/index.js";
import { DialLimiter } from "./dial-limiter.js";
import type { SyncOptions } from "./options.js";
import type { PeerFetch } from "./peer-fetch.js";
import type { PeerSet, PeerState } from "./peers.js";

export interface HeightRefreshDeps {
  readonly peers: PeerSet;
  readonly fetch: PeerFetch;
  readonly options: SyncOptions;
  readonly log: Logger;
  readonly now: () => number;
  readonly onError: (peer: PeerState, method: string, error: PeerError) => void;
  /** An answer arrived: the loop may have work. */
  readonly kick: () => void;
}

interface Round {
  /** Peers still to ask, each waiting for a free slot under `maxRequestsPerPeer`. */
  due: PeerState[];
  /** Every peer of the round, due or asked. */
  readonly members: Set<PeerState>;
  outstanding: number;
}

export class HeightRefresh {
  /** Completed rounds: the engine is not synced before the first. */
  private completed = 0;
  private round: Round | undefined;
  private queued = false;
  /** Height queries launched so far: an answer judges a refusal only if asked after it. */
  private seq = 0;
  /** Peers that refused a commit they advertised: the commit, and `seq` then. */
  private readonly suspects = new Map<string, { index: number; seq: number }>();

  private readonly dials: DialLimiter;

  constructor(private readonly deps: HeightRefreshDeps) {
    this.dials = new DialLimiter(deps.options.maxDialsPerSecond);
  }

  get roundsCompleted(): number {
    return this.completed;
  }

  /**
   * Starts a round, or queues one if a round is in progress. Peers backing off after failures sit
   * the round out until their retry time; off-chain peers are never asked again.
   */
  request(): void {
    if (this.round !== undefined) {
      this.queued = true;
      return;
    }
    const due = this.askable(this.deps.peers.working());
    this.round = { due, members: new Set(due), outstanding: 0 };
    this.launch();
  }

  /**
   * Asks these peers now (peers that just entered the working set): in the round in progress, or
   * in a round of their own. Peers already in the round are not asked twice.
   */
  ask(peers: readonly PeerState[]): void {
    const fresh = this.askable(peers).filter((p) => !this.round?.members.has(p));
    if (fresh.length === 0) return;
    if (this.round === undefined) this.round = { due: [], members: new Set(), outstanding: 0 };
    for (const p of fresh) {
      this.round.due.push(p);
      this.round.members.add(p);
    }
    this.launch();
  }

  /** The peer left the set: it is not asked, and nothing is held for it. */
  forget(p: PeerState): void {
    this.suspects.delete(p.address);
    const round = this.round;
    if (round === undefined) return;
    round.due = round.due.filter((q) => q !== p);
    this.finishIfDone(round);
  }

  /** Working, on-chain peers whose retry time has come. */
  private askable(peers: readonly PeerState[]): PeerState[] {
    const now = this.deps.now();
    return peers.filter((p) => p.working && !p.offChain && p.retryAt <= now);
  }

  /** `peer` refused commit `index` although it advertised it: ask everyone again. */
  suspect(peer: PeerState, index: number): void {
    this.suspects.set(peer.address, { index, seq: this.seq });
    this.request();
  }

  /** Asks the round's due peers that have a free request slot. */
  launch(): void {
    const round = this.round;
    if (round === undefined) return;
    const waiting: PeerState[] = [];
    const now = this.deps.now();
    for (const p of round.due) {
      if (!p.working) continue; // it left the working set meanwhile
      if (!this.deps.fetch.peerHasFreeSlot(p) || (!p.dialed && !this.dials.take(now))) {
        waiting.push(p);
        continue;
      }
      p.dialed = true;
      round.outstanding++;
      const seq = ++this.seq;
      this.deps.fetch.getCommitAvailability(
        p,
        (report) => {
          this.judge(p, seq, report);
          this.answered(round);
        },
        (e: unknown) => {
          this.deps.onError(p, "GetCommitAvailability", e as PeerError);
          this.answered(round);
        },
      );
    }
    round.due = waiting;
    this.finishIfDone(round);
  }

  /** Records `p`'s answer to query number `seq`, and judges a refusal it made before. */
  private judge(p: PeerState, seq: number, report: Availability): void {
    const { peers, options, log } = this.deps;
    if (!peers.has(p)) return; // it left meanwhile: its answer must not bring it back
    const now = this.deps.now();
    const suspect = this.suspects.get(p.address);
    // Only an answer to a query sent after the refusal can judge it.
    const judged = suspect !== undefined && seq > suspect.seq;
    if (judged) this.suspects.delete(p.address);
    if (judged && report.lowest <= suspect.index && report.highest >= suspect.index) {
      p.doubtedFrom = suspect.index;
      p.doubtedUntil = now + options.banDurationMs;
      p.lastError = `refused commit ${suspect.index}, which it advertises (${report.lowest}..${report.highest}): its heights above ${suspect.index - 1} are ignored for ${Math.round(options.banDurationMs / 1000)} s`;
      log.warn({ peer: p.address, commit: suspect.index }, p.lastError);
    }
    if (!peers.updateHeights(p.address, report, now))
      log.warn({ peer: p.address }, "peer serves another chain (genesis differs): never used");
    else if (suspect !== undefined && !judged) p.highest = Math.min(p.highest, suspect.index - 1);
  }

  private answered(round: Round): void {
    round.outstanding--;
    this.finishIfDone(round);
    this.deps.kick();
  }

  private finishIfDone(round: Round): void {
    if (this.round !== round || round.outstanding !== 0 || round.due.length !== 0) return;
    this.completed++;
    this.round = undefined;
    if (this.queued) {
      this.queued = false;
      this.request();
    }
  }
}
