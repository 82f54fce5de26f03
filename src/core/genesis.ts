/** Genesis: the chain's identity. digest(Genesis) = SHA-256(encoded Genesis). */
import { type Genesis, GenesisSchema } from "../gen/dagsync/v1/types_pb.js";
import { CommitteeView } from "./committee.js";
import { sha256 } from "./digest.js";
import { VerifyError } from "./errors.js";
import { decodeStrict } from "./wire-check.js";

export interface GenesisEntry {
  readonly genesis: Genesis;
  readonly bytes: Uint8Array;
  readonly digest: Uint8Array;
  readonly committee: CommitteeView;
}

export function parseGenesis(bytes: Uint8Array): GenesisEntry {
  let genesis: Genesis;
  try {
    genesis = decodeStrict(GenesisSchema, bytes);
  } catch (e) {
    throw new VerifyError(
      "malformed",
      `Genesis does not decode: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  if (genesis.chainId === "") throw new VerifyError("malformed", "Genesis has an empty chain_id");
  if (genesis.committee === undefined) throw new VerifyError("malformed", "Genesis has no committee");
  return { genesis, bytes, digest: sha256(bytes), committee: new CommitteeView(genesis.committee, 0) };
}
