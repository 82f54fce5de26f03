/**
 * What the sync engine is built from: the store it fills, the network and peers it fetches
 * from, the signature verifier, and optional hooks (near-tip blocks at hand, applied blocks).
 */
import type { Logger } from "pino";
import type { SignatureItem, SignatureVerifier } from "../core/index.js";
import type { BlockKeyRef, Store } from "../store/index.js";
import type { SyncMetrics } from "./metrics.js";
import type { SyncNetwork } from "./network.js";
import type { SyncOptions } from "./options.js";
import type { PeerEntry } from "./peers.js";
import type { StallReason } from "./stall.js";

export interface SyncEngineConfig {
  readonly store: Store;
  readonly network: SyncNetwork;
  /**
   * The peers to start with; a bare address is a bootstrap peer (`--peer`). More join and leave
   * at runtime (`SyncEngine.addPeer`, `removePeer`, `setPeers`).
   */
  readonly peers: readonly PeerEntry[];
  readonly verifier: SignatureVerifier;
  /**
   * Checks signatures off the event loop (src/crypto's VerifyPool), one verdict per item in
   * order. When set, the signatures of every fetched certifier block (and, with
   * `verifyBlockSignatures`, of every fetched block) are checked through it as answers arrive,
   * and the verification stage then uses those verdicts; a failure here only means they are
   * checked inline instead. Unset: everything is verified inline with `verifier`.
   */
  readonly verifySignatures?: ((items: readonly SignatureItem[]) => Promise<boolean[]>) | undefined;
  readonly log: Logger;
  readonly options?: Partial<SyncOptions> | undefined;
  readonly metrics?: SyncMetrics | undefined;
  readonly now?: (() => number) | undefined;
  readonly random?: (() => number) | undefined;
  /**
   * Blocks already at hand (near-tip blocks from the live channel), by digest. They are used
   * only where a verified commit references their digest, so they need no trust.
   */
  readonly nearTipBlocks?: ((digest: Uint8Array) => Uint8Array | undefined) | undefined;
  /**
   * Called with the refs of the blocks of each applied store write and their epoch (one per
   * write), so that a near-tip cache can drop them and what is now too old to be committed.
   */
  readonly onBlocksApplied?: ((refs: readonly BlockKeyRef[], epoch: number) => void) | undefined;
  /**
   * No working peer can serve the next commit (every one pruned below our head, behind, failing;
   * or none at all): find more peers (discovery asks around), and add them with `addPeer`. Called
   * at most every `needPeersIntervalMs`, with the stall reason and a line saying why.
   */
  readonly onNeedPeers?: ((reason: StallReason, detail: string) => void) | undefined;
}
