/**
 * Archives (DESIGN §10) as peers of the sync engine: a SyncNetwork that answers for the archive
 * addresses (the directory or URL as given to `--archive`) from an ArchiveSource and hands every
 * other address to the peer network. The engine then treats an archive like any peer: in the
 * balancer with its manifest's range, scored by its throughput, its answers verified the same way.
 *
 * An archive's failures are failed calls, never bans and never a smaller range: a bad chunk
 * (missing, truncated, tampered, malformed) or an unreachable host backs the archive off like a
 * failing peer, so the engine goes to other sources for that range, and a node that has no other
 * says it is stalled, with the archive's reason, instead of calling itself synced. Only bytes that
 * fail verification ban it, as they would a peer.
 */
import { ArchiveError, type ArchiveSource } from "../archive/index.js";
import { PeerError, type PeerErrorKind } from "../client/index.js";
import type { BlockRef, CommitRef } from "../gen/dagsync/v1/types_pb.js";
import type { FetchOptions, SyncNetwork } from "./network.js";

function toPeerError(address: string, e: unknown, signal: AbortSignal): PeerError {
  if (signal.aborted) return new PeerError("cancelled", address, "cancelled");
  if (!(e instanceof ArchiveError))
    return new PeerError("network", address, (e as Error).message ?? String(e));
  const kind: PeerErrorKind = e.code === "unreachable" ? "network" : "rpc";
  return new PeerError(kind, address, `archive: ${e.message}`);
}

export class ArchiveAwareNetwork implements SyncNetwork {
  private readonly archives: ReadonlyMap<string, ArchiveSource>;

  constructor(
    private readonly peers: SyncNetwork,
    archives: readonly ArchiveSource[],
  ) {
    this.archives = new Map(archives.map((a) => [a.name, a]));
  }

  /** The addresses the engine knows the archives by. */
  get addresses(): string[] {
    return [...this.archives.keys()];
  }

  async getCommitAvailability(peer: string, signal: AbortSignal) {
    const a = this.archives.get(peer);
    if (a === undefined) return this.peers.getCommitAvailability(peer, signal);
    try {
      return await a.availability(signal);
    } catch (e) {
      throw toPeerError(peer, e, signal);
    }
  }

  async fetchCommits(peer: string, start: number, end: number, options: FetchOptions) {
    const a = this.archives.get(peer);
    if (a === undefined) return this.peers.fetchCommits(peer, start, end, options);
    try {
      return await a.fetchCommits(start, end, options.signal);
    } catch (e) {
      throw toPeerError(peer, e, options.signal);
    }
  }

  async fetchBlocks(peer: string, refs: readonly BlockRef[], options: FetchOptions) {
    const a = this.archives.get(peer);
    if (a === undefined) return this.peers.fetchBlocks(peer, refs, options);
    if (options.commits === undefined)
      throw new PeerError(
        "unavailable_range",
        peer,
        "archive: FetchBlocks without the commits the refs belong to",
      );
    try {
      return await a.fetchBlocks(refs, options.commits, options.signal);
    } catch (e) {
      throw toPeerError(peer, e, options.signal);
    }
  }

  async pushCommit(peer: string, commit: CommitRef, highestSynced: number): Promise<void> {
    // An archive is static files: nothing to tell it.
    if (this.archives.has(peer)) return;
    return this.peers.pushCommit(peer, commit, highestSynced);
  }

  forgetPeer(peer: string): void {
    if (!this.archives.has(peer)) this.peers.forgetPeer?.(peer);
  }

  close(): void {
    this.peers.close();
    for (const a of this.archives.values()) void a.close();
  }
}
