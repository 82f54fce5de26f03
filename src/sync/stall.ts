/**
 * Why no source can serve the next commit (DESIGN.md §4 item 7: a node never waits silently).
 *
 * Pure: it reads the peers' state and the clock. The engine asks it each step; a diagnosis that
 * persists for `stallGraceMs` makes the node "stalled" (log line, Admin status, metric), and,
 * under `--exit-when-synced`, a stall that lasts `maxStallMs` ends the run with the reason.
 *
 * Each peer gets one verdict for commit `next`. The node is stalled when no peer can serve it
 * and the peers do not simply agree that there is nothing more (then the node is synced).
 *
 * The engine passes the peers in use or explaining why not (`PeerSet.diagnosable`: the working
 * set, and peers out of it because banned, off-chain or benched); standby peers neither serve nor
 * fail, and while the engine rotates them in, the verdicts of those it replaced stay the reason.
 */
import type { PeerState } from "./peers.js";

/** Metric label values: a small fixed set. */
export const STALL_REASONS = [
  "no_peers",
  "unreachable",
  "busy",
  "off_chain",
  "banned",
  "pruned",
  "behind",
] as const;
export type StallReason = (typeof STALL_REASONS)[number];

export type PeerVerdict =
  /** Can serve `next`, and has not failed since its last success. */
  | "can_serve"
  /** Holds nothing above our head: not a source, and not a fault. */
  | "behind"
  /** Its heights are not known yet and it has not failed: wait for the answer. */
  | "pending"
  /** In a failure streak (refused connections, deadlines, errors) until a call succeeds. */
  | "unreachable"
  /** In a streak of RESOURCE_EXHAUSTED answers with a retry hint, or of refusals. */
  | "busy"
  | "off_chain"
  | "banned"
  /** Its lowest available commit is above `next`. */
  | "pruned";

export interface StallDiagnosis {
  readonly reason: StallReason;
  /** One line for people: which peers, and why each cannot serve. */
  readonly detail: string;
}

export function peerVerdict(p: PeerState, next: number, now: number): PeerVerdict {
  if (p.offChain) return "off_chain";
  if (p.bannedUntil > now) return "banned";
  if (!p.known) return p.consecutiveFailures > 0 ? "unreachable" : "pending";
  // A streak lasts until a call succeeds, not until the backoff ends: a peer retried every 50 ms
  // that fails every time must not look like a source between its retries.
  if (p.consecutiveFailures > 0) return p.busy ? "busy" : "unreachable";
  if (p.highest < next) return "behind";
  if (p.lowest > next) return "pruned";
  return "can_serve";
}

/** Order of precedence when the peers fail for several reasons: the most actionable first. */
const PRECEDENCE = [
  "pruned",
  "unreachable",
  "busy",
  "banned",
  "off_chain",
] as const satisfies readonly (StallReason & PeerVerdict)[];

/**
 * The diagnosis for commit `next`, or undefined when some peer can serve it, an answer is
 * pending, or every usable peer is simply not ahead of us (synced). `knownBeyond`: commits from
 * `next` on are known to exist (verified ahead of the store), so peers behind them are no excuse.
 */
export function diagnoseStall(
  peers: readonly PeerState[],
  next: number,
  now: number,
  knownBeyond = false,
): StallDiagnosis | undefined {
  if (peers.length === 0)
    return {
      reason: "no_peers",
      detail: `no peer to ask for commit ${next}: none known yet (give --peer addresses, or wait for discovery to find some)`,
    };
  const byVerdict = new Map<PeerVerdict, string[]>();
  for (const p of peers) {
    const v = peerVerdict(p, next, now);
    if (v === "can_serve" || v === "pending") return undefined;
    const list = byVerdict.get(v) ?? [];
    list.push(p.address);
    byVerdict.set(v, list);
  }
  const failing = PRECEDENCE.filter((r) => byVerdict.has(r));
  // Everyone reachable is behind or level with us, and nobody is failing: synced, not stalled,
  // unless we know of certified commits that nobody we can reach holds.
  if (failing.length === 0 && !knownBeyond) return undefined;
  const reason: StallReason = failing[0] ?? "behind";
  const parts: string[] = [];
  for (const [verdict, addresses] of byVerdict)
    parts.push(
      `${verdict.replace("_", "-")}: ${addresses.slice(0, 4).join(", ")}${addresses.length > 4 ? ` (+${addresses.length - 4})` : ""}`,
    );
  return { reason, detail: `no peer can serve commit ${next} (${parts.join("; ")})` };
}
