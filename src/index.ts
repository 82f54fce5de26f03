/**
 * dagsync as a library (DESIGN §11): what another TypeScript program imports as "dagsync".
 * Importing has no side effects: no logger, server, timer or global metrics registry is created
 * until a function below is called. Subpaths: "dagsync/client" (peer client, subscribeVerified)
 * and "dagsync/core" (pure verification rules and wire views).
 */

export type { Logger } from "pino";
export type { Registry } from "prom-client";
export {
  ArchiveError,
  type ArchiveErrorCode,
  type ArchiveReaderOptions,
  DEFAULT_ARCHIVE_READER_OPTIONS,
  type Manifest,
  type ManifestChunk,
  parseManifest,
} from "./archive/index.js";
export { type ArchiveWriterOptions, DEFAULT_ARCHIVE_WRITER_OPTIONS } from "./archive/options.js";
export { ExportError, type ExportErrorCode, type ExportResult, exportArchive } from "./archive/writer.js";
export {
  DEFAULT_PEER_CLIENT_OPTIONS,
  PeerClient,
  type PeerClientOptions,
  PeerError,
  type PeerErrorKind,
  subscribeVerified,
  type TrustedStart,
  type VerifiedSubscriptionOptions,
} from "./client/index.js";
export {
  DagsyncError,
  parseCommit,
  parseGenesis,
  parseSignedBlock,
  SubscriberLagError,
  SubscriptionError,
  type SubscriptionErrorCode,
  VerifyError,
  type VerifyErrorCode,
  WireFormatError,
} from "./core/index.js";
export {
  createVerifier,
  Ed25519Signer,
  KeyFileError,
  readKeyFile,
  type VerifierBackend,
  writeKeyFile,
} from "./crypto/index.js";
export type {
  Block,
  BlockRef,
  Commit,
  CommitRef,
  CommittedSubDag,
  Committee,
  Genesis,
  SignedBlock,
  Validator,
} from "./gen/dagsync/v1/types_pb.js";
export { CheckpointError, type CheckpointFile, exportCheckpoint, readCheckpoint } from "./node/checkpoint.js";
export {
  type CheckpointInput,
  createFullNode,
  createSyncServer,
  decodeSubDag,
  type EmbeddedFullNode,
  type FullNodeOptions,
  type FullNodeStatus,
  type RunningSyncServer,
  type SyncServerOptions,
} from "./node/embed.js";
export { GenesisFileError } from "./node/full-node.js";
export { DEFAULT_SERVER_OPTIONS, RpcError, type ServerOptions, ServerStartError } from "./server/index.js";
export {
  type CommittedSubDagView,
  DEFAULT_SUB_DAG_FEED_OPTIONS,
  Store,
  StoreError,
  type StoreErrorCode,
  SubDagFeed,
  type SubDagFeedOptions,
  type TrustedCheckpoint,
} from "./store/index.js";
export {
  DEFAULT_SYNC_OPTIONS,
  SyncError,
  type SyncErrorCode,
  type SyncOptions,
  type SyncPhase,
  type SyncStall,
} from "./sync/index.js";

import { Ed25519Signer } from "./crypto/index.js";

/** A new Ed25519 key pair (a validator's protocol or network key); save it with `writeKeyFile`. */
export function keygen(): Ed25519Signer {
  return Ed25519Signer.generate();
}
