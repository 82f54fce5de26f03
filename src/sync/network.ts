/**
 * The network functions the sync engine uses, injected (as Lodestar's range sync does) so that
 * unit tests drive the engine with fakes and production wires real peer clients.
 */
import type { Availability, BlocksResponse, CommitsResponse } from "../client/index.js";
import { PeerClient, type PeerClientOptions } from "../client/index.js";
import type { BlockRef, CommitRef } from "../gen/dagsync/v1/types_pb.js";

export interface FetchOptions {
  readonly signal: AbortSignal;
  readonly expectedBytes: number;
  /**
   * FetchBlocks: the commits the refs belong to (first..last). Peers do not need it; an archive
   * finds the chunks to read by it.
   */
  readonly commits?: { readonly first: number; readonly last: number } | undefined;
}

export interface SyncNetwork {
  getCommitAvailability(peer: string, signal: AbortSignal): Promise<Availability>;
  fetchCommits(peer: string, start: number, end: number, options: FetchOptions): Promise<CommitsResponse>;
  fetchBlocks(peer: string, refs: readonly BlockRef[], options: FetchOptions): Promise<BlocksResponse>;
  pushCommit(peer: string, commit: CommitRef, highestSynced: number): Promise<void>;
  /** The peer left the engine's set: release what is held for it (its connection). Optional. */
  forgetPeer?(peer: string): void;
  close(): void;
}

/** The production network: one PeerClient per peer address. */
export class PeerClientNetwork implements SyncNetwork {
  private readonly clients = new Map<string, PeerClient>();

  constructor(private readonly clientOptions: Partial<PeerClientOptions> = {}) {}

  private client(peer: string): PeerClient {
    let c = this.clients.get(peer);
    if (c === undefined) {
      c = new PeerClient(peer, this.clientOptions);
      this.clients.set(peer, c);
    }
    return c;
  }

  getCommitAvailability(peer: string, signal: AbortSignal) {
    return this.client(peer).getCommitAvailability({ signal });
  }

  fetchCommits(peer: string, start: number, end: number, o: FetchOptions) {
    return this.client(peer).fetchCommits(start, end, o);
  }

  fetchBlocks(peer: string, refs: readonly BlockRef[], o: FetchOptions) {
    return this.client(peer).fetchBlocks(refs, o);
  }

  pushCommit(peer: string, commit: CommitRef, highestSynced: number) {
    return this.client(peer).pushCommit(commit, highestSynced);
  }

  /** Closes the peer's client, so that peers that come and go (exchange) leave no connections behind. */
  forgetPeer(peer: string): void {
    this.clients.get(peer)?.close();
    this.clients.delete(peer);
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
