/**
 * Forgeries for the sync engine's fault tests, made with the devnet's real validator keys (what a
 * colluding quorum, or a thief of old keys, could produce): certifier blocks of any epoch voting
 * for any commit, and certified forks of a batch whose only flaw is where they link.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { blockSigningMessage, sha256 } from "../../src/core/index.js";
import type { DevnetChain, GeneratedCommit } from "../../src/devnet/chain.js";
import { BlockSchema, CommitRefSchema, CommitSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import { WireSignedBlockSchema } from "../../src/gen/dagsync/wire/v1/wire_pb.js";
import type { CommitsPayload } from "./sync-fake-network.js";

/**
 * Certifier blocks by every member of `keysEpoch`'s committee, claiming block epoch `blockEpoch`,
 * each voting for the given commit (index, digest). Round 1,000,000 never collides with a real one.
 */
export function forgeCertifiers(
  chain: DevnetChain,
  vote: { readonly index: number; readonly digest: Uint8Array },
  keysEpoch: number,
  blockEpoch: number = keysEpoch,
): Uint8Array[] {
  const keys = chain.keysByEpoch.get(keysEpoch);
  if (keys === undefined) throw new Error(`the devnet has no keys for epoch ${keysEpoch}`);
  return keys.map((k, author) => {
    const blockBytes = toBinary(
      BlockSchema,
      create(BlockSchema, {
        epoch: BigInt(blockEpoch),
        round: 1_000_000,
        author,
        timestampMs: 1n,
        commitVotes: [create(CommitRefSchema, { index: BigInt(vote.index), digest: vote.digest })],
      }),
    );
    const signature = k.protocol.sign(blockSigningMessage(chain.chainId, blockBytes));
    return toBinary(WireSignedBlockSchema, create(WireSignedBlockSchema, { block: blockBytes, signature }));
  });
}

/**
 * A fork of `served` that differs from it only in the first commit's previous_digest (`linkTo`):
 * every later commit is re-linked to its forked predecessor, and the last is certified by the
 * whole committee of the batch's epoch. Everything checks except the link to the real history.
 */
export function certifiedFork(
  chain: DevnetChain,
  served: readonly GeneratedCommit[],
  linkTo: Uint8Array,
): CommitsPayload {
  let previous = linkTo;
  const commits: Uint8Array[] = [];
  for (const c of served) {
    const commit = fromBinary(CommitSchema, c.commitBytes);
    commit.previousDigest = previous;
    const bytes = toBinary(CommitSchema, commit);
    commits.push(bytes);
    previous = sha256(bytes);
  }
  const last = served.at(-1)!;
  return {
    commits,
    certifierBlocks: forgeCertifiers(chain, { index: last.index, digest: previous }, last.epoch),
  };
}

/**
 * The certifier blocks of the last commit `served`, each with field 1 (epoch) appended again as
 * I32 and re-signed by its author: protobuf-es alone reads its 4 bytes as the same epoch (a varint)
 * and an unknown field, other readers as an unknown field 1. Only the wire type is wrong (issue 10).
 */
export function wrongWireTypeCertifiers(
  chain: DevnetChain,
  served: readonly GeneratedCommit[],
): Uint8Array[] {
  const last = served.at(-1)!;
  const keys = chain.keysByEpoch.get(last.epoch);
  if (keys === undefined) throw new Error(`the devnet has no keys for epoch ${last.epoch}`);
  return last.certifierBlocks.map((bytes) => {
    const signed = fromBinary(WireSignedBlockSchema, bytes);
    const decoded = fromBinary(BlockSchema, signed.block);
    const block = new Uint8Array([...signed.block, 0x0d, Number(decoded.epoch), 0xa0, 0x06, 0x00]);
    const signature = keys[decoded.author]!.protocol.sign(blockSigningMessage(chain.chainId, block));
    return toBinary(WireSignedBlockSchema, create(WireSignedBlockSchema, { block, signature }));
  });
}
