/**
 * Trusted checkpoints: `dagsync checkpoint export` on a node one trusts writes the commit a new
 * node may start from, with the committee that certifies the commits after it. The JSON:
 *
 *   { "chain_id": "...", "genesis_digest": "<hex>", "index": N, "digest": "<hex>",
 *     "epoch": E, "committee": "<base64 of the encoded Committee of epoch E>" }
 *
 * `epoch` is the epoch of commit N+1 (N's own epoch, or the next one when N ends its epoch).
 */
import { readFile } from "node:fs/promises";
import { toBinary } from "@bufbuild/protobuf";
import {
  bytesEqual,
  CommitteeView,
  DagsyncError,
  decodeStrict,
  fromHex,
  sha256,
  shortHex,
  toHex,
} from "../core/index.js";
import { CommitteeSchema } from "../gen/dagsync/v1/types_pb.js";
import type { Store, TrustedCheckpoint } from "../store/index.js";

export interface CheckpointFile {
  readonly chain_id: string;
  readonly genesis_digest: string;
  readonly index: number;
  readonly digest: string;
  readonly epoch: number;
  readonly committee: string;
}

/**
 * `bad_checkpoint`: the checkpoint is malformed, or cannot be exported; `wrong_chain`: it belongs
 * to another genesis (another chain, or another devnet) than the node it is given to.
 */
export type CheckpointErrorCode = "bad_checkpoint" | "wrong_chain";

export class CheckpointError extends DagsyncError {
  override readonly name = "CheckpointError";
  constructor(
    message: string,
    override readonly code: CheckpointErrorCode = "bad_checkpoint",
  ) {
    super(code, message);
  }
}

/**
 * The checkpoint at commit `index` (default: the highest synced). Any stored commit will do; one
 * that ends an epoch makes the smallest checkpoint to reason about, since the committee that
 * follows it is the one its end_of_epoch names.
 */
export async function exportCheckpoint(store: Store, index?: number): Promise<CheckpointFile> {
  const marks = store.watermarks;
  if (marks.highestSynced === 0)
    throw new CheckpointError(`store ${store.path} holds no commits yet: nothing to export`);
  const at = index ?? marks.highestSynced;
  // The highest synced commit's digest is in the watermarks: a store started from a checkpoint
  // and not yet past it holds no commit bytes at all, and can still pass its checkpoint on.
  const highest = at === marks.highestSynced;
  if (!highest && (at < marks.lowestAvailable || at > marks.highestSynced))
    throw new CheckpointError(
      `--index ${at}: store ${store.path} holds commits ${marks.lowestAvailable}..${marks.highestSynced}`,
    );
  const bytes = highest ? undefined : await store.getCommit(at);
  if (!highest && bytes === undefined)
    throw new CheckpointError(`store ${store.path} is missing commit ${at}`);
  const bounds = store.epochBoundsOf(at);
  const epoch = bounds.end === at ? bounds.epoch + 1 : bounds.epoch;
  const committee = await store.getCommittee(epoch);
  if (committee === undefined)
    throw new CheckpointError(`store ${store.path} has no committee for epoch ${epoch}`);
  return {
    chain_id: store.genesis.genesis.chainId,
    genesis_digest: toHex(store.genesis.digest),
    index: at,
    digest: toHex(bytes === undefined ? marks.highestSyncedDigest : sha256(bytes)),
    epoch,
    committee: Buffer.from(toBinary(CommitteeSchema, committee.committee)).toString("base64"),
  };
}

/** Reads and checks a checkpoint file against the genesis it must belong to. */
export async function readCheckpoint(path: string, genesisDigest: Uint8Array): Promise<TrustedCheckpoint> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(
      `--checkpoint ${path}: ${code === "ENOENT" ? "file not found" : "not a JSON checkpoint (make one with `dagsync checkpoint export`)"}`,
    );
  }
  return checkCheckpoint(parsed, genesisDigest, `--checkpoint ${path}`);
}

/**
 * Checks a checkpoint (the JSON of `dagsync checkpoint export`, parsed) against the genesis it
 * must belong to, and decodes it. The one set of checks behind `--checkpoint` and the library's
 * `createFullNode({checkpoint})`: index ≥ 1, digests of 64 hex digits, the genesis digest (and
 * chain id) of `genesisDigest`'s chain, a committee of the stated epoch. `where` prefixes messages.
 */
export function checkCheckpoint(
  input: unknown,
  genesis: Uint8Array | { readonly digest: Uint8Array; readonly chainId?: string | undefined },
  where = "checkpoint",
): TrustedCheckpoint {
  const fail = (why: string, code?: CheckpointErrorCode) => new CheckpointError(`${where}: ${why}`, code);
  if (typeof input !== "object" || input === null || Array.isArray(input))
    throw fail("not a checkpoint object (make one with `dagsync checkpoint export`)");
  const parsed = input as Partial<Record<keyof CheckpointFile, unknown>>;
  const genesisDigest = genesis instanceof Uint8Array ? genesis : genesis.digest;
  const chainId = genesis instanceof Uint8Array ? undefined : genesis.chainId;
  if (typeof parsed.index !== "number" || !Number.isSafeInteger(parsed.index) || parsed.index < 1)
    throw fail('"index" must be a commit index ≥ 1');
  if (typeof parsed.digest !== "string" || !/^[0-9a-f]{64}$/i.test(parsed.digest))
    throw fail('"digest" must be 64 hex digits');
  if (typeof parsed.genesis_digest !== "string" || !/^[0-9a-f]{64}$/i.test(parsed.genesis_digest))
    throw fail('"genesis_digest" must be 64 hex digits');
  if (!bytesEqual(fromHex(parsed.genesis_digest), genesisDigest))
    throw fail(
      `it belongs to genesis ${parsed.genesis_digest.slice(0, 8)}, not to this node's genesis (${shortHex(genesisDigest)}): a checkpoint of another chain`,
      "wrong_chain",
    );
  if (chainId !== undefined && typeof parsed.chain_id === "string" && parsed.chain_id !== chainId)
    throw fail(
      `it names chain "${parsed.chain_id}", but the genesis is of chain "${chainId}"`,
      "wrong_chain",
    );
  if (typeof parsed.epoch !== "number" || typeof parsed.committee !== "string")
    throw fail('"epoch" and "committee" are required');
  let committee: CommitteeView;
  try {
    committee = new CommitteeView(
      decodeStrict(CommitteeSchema, Buffer.from(parsed.committee, "base64")),
      parsed.epoch,
    );
  } catch (e) {
    throw fail(`"committee" is not a valid committee of epoch ${parsed.epoch}: ${(e as Error).message}`);
  }
  return { index: parsed.index, digest: fromHex(parsed.digest), committee: committee.committee };
}

/**
 * Checks an already decoded checkpoint (no genesis digest to compare): index ≥ 1, a 32-byte
 * digest, a committee that passes the sanity checks.
 */
export function checkTrustedCheckpoint(cp: TrustedCheckpoint, where = "checkpoint"): TrustedCheckpoint {
  const fail = (why: string) => new CheckpointError(`${where}: ${why}`);
  if (!Number.isSafeInteger(cp.index) || cp.index < 1) throw fail("index must be a commit index ≥ 1");
  if (!(cp.digest instanceof Uint8Array) || cp.digest.length !== 32) throw fail("digest must be 32 bytes");
  try {
    new CommitteeView(cp.committee);
  } catch (e) {
    throw fail(`the committee is not valid: ${(e as Error).message}`);
  }
  return cp;
}
