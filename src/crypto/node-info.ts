/**
 * Signs this node's info for peer exchange (DESIGN.md §9). The signing payload is core's
 * (core/node-info.ts); the key lives here, in crypto.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { nodeInfoSigningMessage } from "../core/node-info.js";
import { encodeRawFields } from "../core/wire.js";
import { NodeInfoSchema } from "../gen/dagsync/v1/types_pb.js";
import type { Ed25519Signer } from "./keys.js";

export interface NodeInfoFields {
  /** host:port of this node's StateSync service. */
  readonly syncAddress: string;
  /** host:port of its Gossip service; "" (the default) when it has none. */
  readonly gossipAddress?: string | undefined;
  /** When the info is signed, ms since the Unix epoch. */
  readonly timestampMs: number;
}

/** The encoded SignedNodeInfo of `fields`, signed by `signer` (whose public key is the network key). */
export function signNodeInfo(signer: Ed25519Signer, chainId: string, fields: NodeInfoFields): Uint8Array {
  const infoBytes = toBinary(
    NodeInfoSchema,
    create(NodeInfoSchema, {
      networkKey: signer.publicKey,
      syncAddress: fields.syncAddress,
      gossipAddress: fields.gossipAddress ?? "",
      timestampMs: BigInt(fields.timestampMs),
    }),
  );
  const signature = signer.sign(nodeInfoSigningMessage(chainId, infoBytes));
  return encodeRawFields([
    [1, [infoBytes]],
    [2, [signature]],
  ]);
}
