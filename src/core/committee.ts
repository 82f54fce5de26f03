/**
 * Committees and stake-weighted quorums. A committee is only ever trusted from genesis or from the
 * `end_of_epoch` of a commit certified by the previous committee, and it is sanity-checked before
 * use: a certified but absurd committee (empty, zero stake, repeated keys, wrong epoch) would
 * otherwise halt or hand the chain to whoever holds a duplicated key.
 */
import type { Committee, Validator } from "../gen/dagsync/v1/types_pb.js";
import { toHex } from "./bytes.js";
import { VerifyError } from "./errors.js";
import { PUBLIC_KEY_LENGTH } from "./wire.js";

/**
 * Total stake is capped so that 2·total stays an exact JS number (well above any real chain).
 */
export const MAX_TOTAL_STAKE = 2 ** 51;

/** ⌊2·total/3⌋ + 1: the least stake that is a quorum (DESIGN.md §2). */
export function quorumThreshold(totalStake: number): number {
  return Math.floor((2 * totalStake) / 3) + 1;
}

/** A checked committee with the lookups verification needs. Immutable. */
export class CommitteeView {
  readonly epoch: number;
  readonly validators: readonly Validator[];
  readonly totalStake: number;
  readonly quorumThreshold: number;
  private readonly stakes: readonly number[];

  /** Throws VerifyError("bad_committee") when the committee fails a sanity check. */
  constructor(
    readonly committee: Committee,
    expectedEpoch?: number,
  ) {
    const fail = (why: string) =>
      new VerifyError("bad_committee", `committee of epoch ${committee.epoch}: ${why}`);
    if (committee.epoch > BigInt(Number.MAX_SAFE_INTEGER)) throw fail("epoch out of range");
    this.epoch = Number(committee.epoch);
    if (expectedEpoch !== undefined && this.epoch !== expectedEpoch)
      throw fail(`expected epoch ${expectedEpoch}`);
    if (committee.validators.length === 0) throw fail("no validators");
    const protocolKeys = new Set<string>();
    const networkKeys = new Set<string>();
    const stakes: number[] = [];
    let total = 0;
    committee.validators.forEach((v, i) => {
      if (v.protocolKey.length !== PUBLIC_KEY_LENGTH)
        throw fail(`validator ${i}: protocol_key is not 32 bytes`);
      if (v.networkKey.length !== PUBLIC_KEY_LENGTH)
        throw fail(`validator ${i}: network_key is not 32 bytes`);
      if (v.stake <= 0n) throw fail(`validator ${i}: stake must be positive`);
      const pk = toHex(v.protocolKey);
      const nk = toHex(v.networkKey);
      if (protocolKeys.has(pk)) throw fail(`validator ${i}: duplicate protocol_key`);
      if (networkKeys.has(nk)) throw fail(`validator ${i}: duplicate network_key`);
      protocolKeys.add(pk);
      networkKeys.add(nk);
      if (v.stake > BigInt(MAX_TOTAL_STAKE)) throw fail(`validator ${i}: stake too large`);
      total += Number(v.stake);
      if (total > MAX_TOTAL_STAKE) throw fail("total stake too large");
      stakes.push(Number(v.stake));
    });
    this.validators = committee.validators;
    this.stakes = stakes;
    this.totalStake = total;
    this.quorumThreshold = quorumThreshold(total);
  }

  get size(): number {
    return this.validators.length;
  }

  /** Stake of an author index, or undefined when it is not a member. */
  stakeOf(author: number): number | undefined {
    return this.stakes[author];
  }

  protocolKeyOf(author: number): Uint8Array | undefined {
    return this.validators[author]?.protocolKey;
  }

  isQuorum(stake: number): boolean {
    return stake >= this.quorumThreshold;
  }

  /** The index of the validator with this network key, or -1. */
  indexOfNetworkKey(key: Uint8Array): number {
    const hex = toHex(key);
    return this.validators.findIndex((v) => toHex(v.networkKey) === hex);
  }
}
