/**
 * What a failed or invalid call says about a peer (DESIGN §4 item 7), in one place.
 *
 * A ban needs evidence of misbehaviour: a bad signature, digest, link or quorum, undecodable
 * bytes. Being unreachable, slow, busy or pruned is not evidence: such a peer backs off
 * exponentially with jitter and its work goes elsewhere at once. A peer that refuses a range it
 * advertised is neither: it is asked its heights again (it may have pruned), which the height
 * refresh judges.
 *
 * A failure that got no answer at all (refused, unreachable, deadline) is also a dial failure: a
 * working peer with `maxDialFailures` of them in a row leaves the working set for a standby peer,
 * with backoff (`PeerSet.benchIfFailing`). Leaving is not a ban either.
 */
import type { Logger } from "pino";
import type { PeerError } from "../client/index.js";
import type { SyncMetrics } from "./metrics.js";
import type { PeerSet, PeerState } from "./peers.js";

export interface PeerFaultsDeps {
  readonly peers: PeerSet;
  readonly log: Logger;
  readonly metrics: SyncMetrics | undefined;
  readonly now: () => number;
  /** The engine is stopping: failures are its own cancellations, not the peer's. */
  readonly stopping: () => boolean;
  /** `peer` refused commit `index`, which it advertised: ask its heights again. */
  readonly onRefusedRange: (peer: PeerState, index: number) => void;
  /** For log lines: `maxDialFailures`. */
  readonly maxDialFailures: number;
}

export class PeerFaults {
  constructor(private readonly deps: PeerFaultsDeps) {}

  /** Bans `peer` for `banDurationMs` on evidence `code` (a verification code or "invalid_data"). */
  ban(peer: PeerState, code: string, reason: string): void {
    const { peers, metrics, log, now } = this.deps;
    peers.ban(peer, reason, now());
    metrics?.bans.inc({ peer: peer.address, reason: code });
    log.warn(
      { peer: peer.address, code, until: new Date(peer.bannedUntil).toISOString() },
      `banned peer ${peer.address}: ${reason}`,
    );
  }

  /** A call to `peer` failed; `index` is the commit it was asked for, when it was a fetch. */
  onError(peer: PeerState, method: string, error: PeerError, index?: number): void {
    const { peers, metrics, log } = this.deps;
    const now = this.deps.now();
    const kind = error.kind ?? "rpc";
    metrics?.peerErrors.inc({ peer: peer.address, kind });
    if (kind === "cancelled" || this.deps.stopping()) return;
    if (kind === "invalid_data") {
      this.ban(peer, "invalid_data", `${method}: ${error.message}`);
      return;
    }
    if (kind === "unavailable_range" && index !== undefined) {
      // Honest peers never un-advertise a commit, but they may prune: ask again before anything
      // else. Until the answer, it is not asked for this range.
      peer.highest = Math.min(peer.highest, index - 1);
      peer.lastError = `${method}: ${error.message}`;
      this.deps.onRefusedRange(peer, index);
      return;
    }
    // Unreachable, slow or busy peers back off (their work goes elsewhere at once); none of it is
    // evidence of misbehaviour, so none of it bans.
    peers.recordFailure(
      peer,
      `${method}: ${error.message}`,
      now,
      kind === "rate_limited" ? error.retryAfterMs : undefined,
      kind === "rate_limited",
    );
    if (kind !== "rate_limited") metrics?.dialFailures.inc({ reason: kind });
    if (peers.benchIfFailing(peer, now)) {
      metrics?.workingSetExits.inc({ reason: "dial_failures" });
      log.warn(
        { peer: peer.address, until: new Date(peer.benchedUntil).toISOString() },
        `peer ${peer.address} failed ${this.deps.maxDialFailures} calls in a row: another known peer takes its place in the working set`,
      );
      return;
    }
    // The first failure of a streak is worth a line; the rest of the streak goes to debug (a
    // stall, if it comes to that, is reported once by the stall watch).
    if (peer.consecutiveFailures === 1 && kind !== "rate_limited")
      log.warn({ peer: peer.address, kind }, `${error.message} (will retry with backoff)`);
    else log.debug({ peer: peer.address, kind, err: error.message }, "peer call failed");
  }
}
