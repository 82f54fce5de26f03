/** Every limit and timeout of the sync engine, with its default and unit (DESIGN.md §4). */
export interface SyncOptions {
  /** How often peers are asked for their heights, ms. Default 5,000. */
  readonly peerQueryIntervalMs: number;
  /** Commits asked for per FetchCommits (servers cap at 100). Default 100. */
  readonly commitsPerRequest: number;
  /**
   * Estimated size of one commit without its blocks, bytes: what a FetchCommits reserves against
   * `maxInflightBytes` per commit asked for. Default 512.
   */
  readonly commitBytesEstimate: number;
  /**
   * A FetchCommits deadline is sized for at least this many times its reservation (or
   * `commitAnswerBytes`, whichever is more): certifier blocks come with the commits. Default 4.
   */
  readonly commitAnswerHeadroom: number;
  /**
   * Bytes a FetchCommits answer may carry, for its deadline: a server may answer past the end
   * asked for (the batch contract), so a short request can bring a long batch. Default 4 MiB
   * (servers' maxFetchResponseBytes).
   */
  readonly commitAnswerBytes: number;
  /** Refs per FetchBlocks request (servers reject more than 1000). Default 1000. */
  readonly blocksPerRequest: number;
  /** Estimated size of a block before any is measured, bytes (FetchBlocks reservations). Default 4,096. */
  readonly initialBlockBytesEstimate: number;
  /** Floor of the measured block size estimate, bytes. Default 256. */
  readonly minBlockBytesEstimate: number;
  /**
   * Weight of each FetchBlocks answer in the running average of block size (0..1; the rest
   * stays with the previous estimate). Default 0.2.
   */
  readonly blockEstimateWeight: number;
  /** Commit batches planned ahead of the applied height. Default 32. */
  readonly maxSegmentsAhead: number;
  /**
   * Requests in flight across all peers. Default 16: four slots for each of four peers, so that on
   * long links (200 ms RTT) every peer's link stays busy while its requests travel (12 left the
   * links a quarter idle; BENCHMARKS.md, network section).
   */
  readonly maxConcurrentRequests: number;
  /** Requests in flight to one peer. Default 4. */
  readonly maxRequestsPerPeer: number;
  /**
   * A FetchBlocks that would carry at most half of `blocksPerRequest` refs, all from the end of
   * a segment other than the head's, waits for the next segment's refs (to go in the same call)
   * while at least this many fetches are in flight. Default 1: a 100k-block catch-up then made
   * ≈125 calls of ≈800 refs instead of ≈190 of ≈530, 2–3 % faster (BENCHMARKS.md); 0 never
   * waits. A segment is never held once it is the head, so a wait never stalls the apply.
   */
  readonly foldWaitMinInflight: number;
  /**
   * A peer out of request slots is waited for, rather than an idle one used now, when what one
   * more request can expect from it (its measured rate over its requests in flight, plus one) is
   * more than this many times the idle one's. Default 1.5: a peer at a tenth of the others' speed
   * then gets no work they could do sooner; one at a third still helps.
   */
  readonly busyPeerPreference: number;
  /** Bytes fetched but not yet applied; bounds memory whatever the chain length. Default 128 MiB. */
  readonly maxInflightBytes: number;
  /**
   * Ready segments written to the store in one atomic batch, at most this many bytes (the head
   * always goes). Default 2 MiB: as fast as 8 MiB here, and LevelDB's memtables and the
   * compactions they feed stay smaller (peak RSS ≈25 MB lower; BENCHMARKS.md).
   */
  readonly maxApplyBatchBytes: number;
  /** How long a peer that sent invalid data is refused, ms. Default 60,000. */
  readonly banDurationMs: number;
  /**
   * How long no source may be able to serve the next commit before the node reports itself
   * stalled (log line, Admin status, metric), ms. Short gaps (a peer's brief backoff) are normal.
   * Default 2,000.
   */
  readonly stallGraceMs: number;
  /**
   * With `run(untilSynced)` (`--exit-when-synced`): how long a stall may last before the run
   * fails with its reason, ms. Default 120,000 (2 minutes).
   */
  readonly maxStallMs: number;
  /** Deadline of a GetCommitAvailability call, ms. Default 5,000. */
  readonly heightQueryTimeoutMs: number;
  /**
   * How often the loop wakes up with nothing else to wake it (retries after a backoff, stall
   * checks), ms. Default 250.
   */
  readonly tickIntervalMs: number;
  /** First retry delay after a network error, ms; doubles per consecutive failure, with jitter. Default 250. */
  readonly backoffBaseMs: number;
  /** Cap of the retry delay, ms. Default 15,000. */
  readonly backoffMaxMs: number;
  /** Probability of trying a peer with no throughput sample over the best known one. Default 0.2. */
  readonly explorationRate: number;
  /** Check every committed block's signature, not just the certifier blocks'. Default false. */
  readonly verifyBlockSignatures: boolean;
  /** Minimum interval between PushCommit hints to one peer, ms. Default 1,000. */
  readonly pushIntervalMs: number;
  /** Commits a subscriber may fall behind before its iterator fails with the index to resume from. Default 1,024. */
  readonly subscriberBufferCommits: number;
  /**
   * Peers used for sync at a time (the working set): committee members first, then bootstrap
   * peers, then peers found by exchange. The others stay known but are neither asked their
   * heights nor fetched from. Default 16.
   */
  readonly maxSyncPeers: number;
  /**
   * First contacts (the first height query of a peer that enters the working set) per second, on
   * average; up to this many may go at once (token bucket). Default 8.
   */
  readonly maxDialsPerSecond: number;
  /**
   * Consecutive failed calls (refused, unreachable, deadline, an error status; not rate limits,
   * refused ranges or bans, which are handled apart) after which a working peer leaves
   * the working set for another known peer, when one can take its place. It stays known and is
   * tried again after `dialBackoffBaseMs`, doubling per such exit. Default 5.
   */
  readonly maxDialFailures: number;
  /** How long a peer that left the working set after `maxDialFailures` stays out at first, ms. Default 5,000. */
  readonly dialBackoffBaseMs: number;
  /** Cap of that wait (it doubles each time the peer leaves again), ms. Default 300,000 (5 minutes). */
  readonly dialBackoffMaxMs: number;
  /**
   * How long a working peer swapped out for an untried known peer, because no working peer could
   * serve the next commit (pruned, behind, failing), stays out of the working set, ms.
   * Default 60,000.
   */
  readonly peerRestMs: number;
  /**
   * Minimum interval between two calls of the engine's `onNeedPeers` hook (no working peer can
   * serve the next commit: ask discovery for more), ms. Default 5,000.
   */
  readonly needPeersIntervalMs: number;
}

export const DEFAULT_SYNC_OPTIONS: SyncOptions = {
  peerQueryIntervalMs: 5_000,
  commitsPerRequest: 100,
  commitBytesEstimate: 512,
  commitAnswerHeadroom: 4,
  commitAnswerBytes: 4 * 1024 * 1024,
  blocksPerRequest: 1000,
  initialBlockBytesEstimate: 4096,
  minBlockBytesEstimate: 256,
  blockEstimateWeight: 0.2,
  maxSegmentsAhead: 32,
  maxConcurrentRequests: 16,
  maxRequestsPerPeer: 4,
  foldWaitMinInflight: 1,
  busyPeerPreference: 1.5,
  maxInflightBytes: 128 * 1024 * 1024,
  maxApplyBatchBytes: 2 * 1024 * 1024,
  banDurationMs: 60_000,
  stallGraceMs: 2_000,
  maxStallMs: 120_000,
  heightQueryTimeoutMs: 5_000,
  tickIntervalMs: 250,
  backoffBaseMs: 250,
  backoffMaxMs: 15_000,
  explorationRate: 0.2,
  verifyBlockSignatures: false,
  pushIntervalMs: 1_000,
  subscriberBufferCommits: 1024,
  maxSyncPeers: 16,
  maxDialsPerSecond: 8,
  maxDialFailures: 5,
  dialBackoffBaseMs: 5_000,
  dialBackoffMaxMs: 300_000,
  peerRestMs: 60_000,
  needPeersIntervalMs: 5_000,
};
