/**
 * `subscribeVerified`: a remote SubscribeCommits stream that the subscriber verifies itself, so
 * that an executor on another machine trusts no node, only its genesis or checkpoint (DESIGN §11).
 *
 * The stream carries commits and blocks but no votes, so certification comes from the same peer's
 * FetchCommits (certifier blocks of a batch's last commit) and is checked here with the core rules:
 * - every commit links to the one before it (`previous_digest`, contiguous indices), from the
 *   trusted start (genesis digest or checkpoint) — commits below `from` are checked as headers;
 * - a quorum of the commit's epoch committee votes, in signed certifier blocks, for it or for a
 *   commit linked after it; the next committee comes only from a certified end-of-epoch commit;
 * - the streamed commit is byte for byte the certified one (same digest), and every block hashes
 *   to its ref in the commit.
 * A sub-DAG is yielded only once all of that holds. A bad one throws a VerifyError (`code` names
 * the rule); the peer's refusals throw a SubscriptionError with the same codes as the in-process
 * subscription (out_of_range, not_found, lagged); network failures a PeerError.
 *
 * A busy server (RESOURCE_EXHAUSTED with a retry-after-ms hint, e.g. bulk admission under load)
 * is waited for and asked again, up to `maxBusyRetries` times in a row. Aborting `signal` ends the
 * iteration quietly; only the cancellation that abort causes is swallowed, never another error.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  bytesEqual,
  type CommitEntry,
  CommitteeView as Committees,
  type CommitteeView,
  nextCommitteeFrom,
  parseCommit,
  parseGenesis,
  parseSignedBlock,
  type SignatureVerifier,
  SubscriberLagError,
  SubscriptionError,
  shortHex,
  VerifyError,
  verifyBlocksAgainstRefs,
  verifyCommitBatch,
  verifyLink,
} from "../core/index.js";
import { createVerifier } from "../crypto/index.js";
import {
  type CommittedSubDag,
  CommittedSubDagSchema,
  type Committee,
  SignedBlockSchema,
} from "../gen/dagsync/v1/types_pb.js";

import { PeerError } from "./errors.js";
import type { PeerClientOptions } from "./options.js";
import { PeerClient } from "./peer-client.js";

/** A trusted start other than genesis: commit `index` with `digest`, and the committee after it. */
export interface TrustedStart {
  readonly chainId: string;
  readonly index: number;
  readonly digest: Uint8Array;
  /** The committee of the epoch of commit `index + 1`. */
  readonly committee: Committee;
}

export type VerifiedSubscriptionOptions = (
  | { readonly genesis: Uint8Array; readonly checkpoint?: undefined }
  | { readonly checkpoint: TrustedStart; readonly genesis?: undefined }
) & {
  readonly signal?: AbortSignal | undefined;
  /** Signature backend for certifier blocks (default: node:crypto). */
  readonly verifier?: SignatureVerifier | undefined;
  readonly client?: Partial<PeerClientOptions> | undefined;
  /** Tries when the peer does not yet hold the votes for a streamed commit. Default 5 (200 ms apart). */
  readonly certifyAttempts?: number | undefined;
  /**
   * Busy answers (RESOURCE_EXHAUSTED, not a lag) waited out in a row on one call, FetchCommits or
   * the opening of the stream, before the PeerError (kind `rate_limited`) is thrown. Each wait is
   * the server's retry-after-ms hint (250 ms without one, at most 30 s). Default 20
   * (DEFAULT_MAX_BUSY_RETRIES); 0 fails on the first busy answer.
   */
  readonly maxBusyRetries?: number | undefined;
};

/** Default of `VerifiedSubscriptionOptions.maxBusyRetries`. */
export const DEFAULT_MAX_BUSY_RETRIES = 20;
/** Wait after a busy answer without a retry-after-ms hint, ms. */
const BUSY_WAIT_WITHOUT_HINT_MS = 250;
/** Longest wait a retry-after-ms hint gets, ms. */
const BUSY_WAIT_MAX_MS = 30_000;

/** Sub-DAGs from `from` on, from the node at `address`, each verified here before it is yielded. */
export async function* subscribeVerified(
  address: string,
  from: number,
  options: VerifiedSubscriptionOptions,
): AsyncGenerator<CommittedSubDag> {
  const verifier = options.verifier ?? createVerifier("native");
  let chainId: string;
  /** The last commit linked and certified so far (delivered, or a header below `from`). */
  let certLast: { index: number; digest: Uint8Array };
  /** The committee that certifies commit `certLast.index + 1`. */
  let committee: CommitteeView;
  if (options.genesis !== undefined) {
    const g = parseGenesis(options.genesis);
    chainId = g.genesis.chainId;
    certLast = { index: 0, digest: g.digest };
    committee = g.committee;
  } else {
    const cp = options.checkpoint;
    chainId = cp.chainId;
    certLast = { index: cp.index, digest: cp.digest };
    committee = new Committees(cp.committee);
  }
  if (!Number.isSafeInteger(from) || from < 1)
    throw new SubscriptionError("invalid_argument", `start ${from}: commit indices start at 1`);
  if (from <= certLast.index)
    throw new SubscriptionError(
      "out_of_range",
      `start ${from} is at or below the trusted checkpoint ${certLast.index}: nothing before it can be verified`,
    );
  const client = new PeerClient(address, options.client ?? {});
  const signal = options.signal;
  const attempts = options.certifyAttempts ?? 5;
  const maxBusyRetries = options.maxBusyRetries ?? DEFAULT_MAX_BUSY_RETRIES;
  /** Digests of commits certified ahead of the stream, by index (≥ from). */
  const certified = new Map<number, Uint8Array>();

  /** Certifies commits up to at least `upTo` with the peer's FetchCommits, checked here. */
  const certify = async (upTo: number): Promise<void> => {
    let tries = 0;
    while (certLast.index < upTo) {
      const start = certLast.index + 1;
      const response = await fetchOrRefuse(client, start, upTo, signal, maxBusyRetries);
      const result = verifyCommitBatch({
        commits: response.commits,
        certifierBlocks: response.certifierBlocks,
        expectedStart: start,
        previousDigest: certLast.digest,
        committee,
        chainId,
        verifier,
      });
      if (result.commits.length === 0) {
        const error = result.error ?? new VerifyError("missing_quorum", `no certified commit at ${start}`);
        // A node may apply a commit just before it stores the votes of a later batch: ask again.
        if (error.code === "missing_quorum" && ++tries < attempts) {
          await sleep(200, signal, address);
          continue;
        }
        throw error;
      }
      tries = 0;
      for (const c of result.commits) advance(c);
    }
  };
  const advance = (c: CommitEntry) => {
    if (c.index >= from) certified.set(c.index, c.digest);
    certLast = { index: c.index, digest: c.digest };
    if (c.commit.endOfEpoch !== undefined) committee = nextCommitteeFrom(c, committee);
  };

  let stream: AsyncGenerator<{ commit: Uint8Array; blocks: Uint8Array[] }> | undefined;
  try {
    // Headers below `from`: link the trusted start to the commit before the first one streamed.
    await certify(from - 1);
    let last: { index: number; digest: Uint8Array } | undefined;
    let busy = 0;
    stream = client.subscribeCommits(from, signal);
    for (;;) {
      let m: { commit: Uint8Array; blocks: Uint8Array[] };
      try {
        const r = await stream.next();
        if (r.done === true) return;
        m = r.value;
      } catch (e) {
        const next = last === undefined ? from : last.index + 1;
        const refused = refusal(e, next);
        if (isBusy(refused) && busy < maxBusyRetries) {
          // Refused before it streamed (the server's admission): open it again after the wait.
          busy++;
          await sleep(busyWaitMs(refused), signal, address);
          stream = client.subscribeCommits(next, signal);
          continue;
        }
        throw refused;
      }
      busy = 0;
      const entry = parseCommit(m.commit);
      if (last !== undefined) verifyLink(entry, last.index, last.digest);
      else if (entry.index !== from)
        throw new VerifyError("gap", `the stream started at commit ${entry.index}, asked for ${from}`);
      if (!certified.has(entry.index)) await certify(entry.index);
      const digest = certified.get(entry.index);
      if (digest === undefined || !bytesEqual(digest, entry.digest))
        throw new VerifyError(
          "missing_quorum",
          `commit ${entry.index} ${shortHex(entry.digest)} is not the commit a quorum certified`,
        );
      certified.delete(entry.index);
      const refs = entry.commit.blocks;
      if (m.blocks.length !== refs.length)
        throw new VerifyError(
          "malformed",
          `commit ${entry.index}: ${m.blocks.length} blocks for ${refs.length} refs`,
        );
      const checked = verifyBlocksAgainstRefs(refs, m.blocks);
      if (checked.error !== undefined) throw checked.error;
      last = { index: entry.index, digest: entry.digest };
      yield create(CommittedSubDagSchema, {
        commit: entry.commit,
        blocks: m.blocks.map((bytes) => {
          const b = parseSignedBlock(bytes);
          return create(SignedBlockSchema, { block: b.block, signature: b.signature });
        }),
      });
    }
  } catch (e) {
    // The caller stopped it: the cancellation its abort caused just ends the iteration. Any other
    // error (a VerifyError found at the same moment, a refusal) is still thrown.
    if (signal?.aborted === true && e instanceof PeerError && e.kind === "cancelled") return;
    throw e;
  } finally {
    // End the stream's call ourselves (a no-op once it ended or failed), then the connection.
    try {
      await stream?.return(undefined);
    } catch {
      // the call is being torn down anyway
    }
    client.close();
  }
}

/** A busy answer to wait out: RESOURCE_EXHAUSTED that is not a lagging subscriber. */
function isBusy(e: unknown): e is PeerError {
  return e instanceof PeerError && e.kind === "rate_limited";
}

function busyWaitMs(e: PeerError): number {
  const hint = e.retryAfterMs;
  return hint === undefined || hint < 0 ? BUSY_WAIT_WITHOUT_HINT_MS : Math.min(hint, BUSY_WAIT_MAX_MS);
}

/** Waits `ms`; an abort of `signal` cuts it short with a PeerError("cancelled"), as a call would. */
function sleep(ms: number, signal: AbortSignal | undefined, peer: string): Promise<void> {
  const cancelled = () => new PeerError("cancelled", peer, "cancelled while waiting to retry");
  if (signal?.aborted === true) return Promise.reject(cancelled());
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(cancelled());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** FetchCommits, waiting out up to `maxBusy` busy answers in a row; a refusal as refusal() maps it. */
async function fetchOrRefuse(
  client: PeerClient,
  start: number,
  end: number,
  signal: AbortSignal | undefined,
  maxBusy: number,
) {
  for (let busy = 0; ; busy++) {
    try {
      return await client.fetchCommits(start, end, signal === undefined ? {} : { signal });
    } catch (e) {
      const refused = refusal(e, start);
      if (!isBusy(refused) || busy >= maxBusy) throw refused;
      await sleep(busyWaitMs(refused), signal, client.address);
    }
  }
}

/** The peer's refusal as the subscription error with the same code as the in-process path. */
function refusal(e: unknown, next: number): unknown {
  if (!(e instanceof PeerError)) return e;
  switch (e.grpcCode) {
    case Code.OutOfRange:
      return new SubscriptionError("out_of_range", e.message);
    case Code.NotFound:
      return new SubscriptionError("not_found", e.message);
    case Code.ResourceExhausted: {
      if (e.kind !== "rate_limited" || !/behind the tip/.test(e.message)) return e;
      const buffer = Number(/more than (\d+) commits/.exec(e.message)?.[1] ?? 0);
      return new SubscriberLagError(next, buffer);
    }
    default:
      return e;
  }
}
