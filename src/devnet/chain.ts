/**
 * The devnet chain generator: a local committee, its genesis, and a synthetic chain with a real
 * DAG shape (DESIGN.md §7).
 *
 * - Every round, each validator signs a block that references its own previous block and random
 *   others of the previous round until they make a quorum by stake.
 * - After round r, the leader of round r-1 is committed when a quorum of round-r blocks reference
 *   it; the commit linearizes the leader's not-yet-committed causal history of the epoch, sorted
 *   by (round, author), leader last.
 * - Round r+1's blocks carry `commit_votes` for the commits formed after round r, so they are the
 *   certifier blocks of those commits.
 * - The last commit of each epoch carries the next committee: one validator's stake grows and
 *   another's keys rotate. The round after it only votes; the next epoch starts the round after.
 *
 * Everything derives from the seed, so the output is byte-identical for a seed.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  blockSigningMessage,
  type CommitteeView,
  type GenesisEntry,
  parseGenesis,
  quorumThreshold,
  sha256,
  CommitteeView as View,
} from "../core/index.js";
import { Ed25519Signer } from "../crypto/keys.js";
import {
  type BlockRef,
  BlockRefSchema,
  BlockSchema,
  CommitRefSchema,
  CommitSchema,
  type Committee,
  CommitteeSchema,
  EndOfEpochSchema,
  GenesisSchema,
  ValidatorSchema,
} from "../gen/dagsync/v1/types_pb.js";
import { WireSignedBlockSchema } from "../gen/dagsync/wire/v1/wire_pb.js";
import { deriveSeed, Rng } from "./rng.js";

export interface DevnetOptions {
  /** Committee size (default 4). */
  readonly validators: number;
  /** Epochs to generate (default 3). */
  readonly epochs: number;
  /** Commits in each epoch (default 200). */
  readonly commitsPerEpoch: number;
  /** Transactions in each block (default 8). */
  readonly txsPerBlock: number;
  /** Bytes per transaction (default 256). */
  readonly txBytes: number;
  /** Seed: the same seed gives the same chain, byte for byte (default 1). */
  readonly seed: number;
  /** Chain id (default "dagsync-devnet-<seed>"). */
  readonly chainId?: string | undefined;
  /** Validator i serves sync on basePort + 2i and gossip on basePort + 2i + 1 (default 9100). */
  readonly basePort: number;
  /** Host in validator addresses (default 127.0.0.1). */
  readonly host: string;
  /**
   * One host per validator, overriding `host` (default: none): validator i's addresses are on
   * `hosts[i]`, so that nodes on one machine look like distinct hosts (127.0.0.11, 127.0.0.12, …)
   * to per-address limits, discovery and the network tests' link proxies.
   */
  readonly hosts?: readonly string[] | undefined;
  /**
   * A validator that rotates its keys at an epoch change also moves to a new address (default
   * false): the committee's addresses then change across epochs, as a real validator set's do.
   */
  readonly moveRotated: boolean;
}

export const DEFAULT_DEVNET_OPTIONS: DevnetOptions = {
  validators: 4,
  epochs: 3,
  commitsPerEpoch: 200,
  txsPerBlock: 8,
  txBytes: 256,
  seed: 1,
  basePort: 9100,
  host: "127.0.0.1",
  moveRotated: false,
};

/**
 * Validator `index`'s sync and gossip addresses in `epoch`: `basePort + 2·slot` and the port after.
 * The slot is the index; with `moveRotated`, the validator that rotated keys at epoch r (r mod n)
 * moves to slot n + r − 1 from r on, a port no other validator ever uses.
 */
export function validatorAddresses(
  o: Pick<DevnetOptions, "validators" | "basePort" | "host" | "hosts" | "moveRotated">,
  epoch: number,
  index: number,
): { readonly syncAddress: string; readonly gossipAddress: string } {
  let slot = index;
  if (o.moveRotated) {
    for (let r = epoch; r >= 1; r--) {
      if (r % o.validators === index) {
        slot = o.validators + r - 1;
        break;
      }
    }
  }
  const port = o.basePort + 2 * slot;
  const host = o.hosts?.[index] ?? o.host;
  return { syncAddress: `${host}:${port}`, gossipAddress: `${host}:${port + 1}` };
}

/** One generated commit with everything a store needs to hold it. */
export interface GeneratedCommit {
  readonly index: number;
  readonly epoch: number;
  readonly commitBytes: Uint8Array;
  readonly commitDigest: Uint8Array;
  readonly blocks: { readonly ref: BlockRef; readonly bytes: Uint8Array }[];
  readonly certifierBlocks: Uint8Array[];
  readonly nextCommittee: Committee | undefined;
}

/** A DevnetChain's state as JSON, to continue the chain live in another process. */
export interface DevnetSnapshot {
  readonly options: DevnetOptions;
  readonly rng: number[];
  readonly commitsPerEpoch?: number | undefined;
  readonly epoch: number;
  readonly round: number;
  readonly nextIndex: number;
  readonly previousDigest: string;
  readonly epochCommits: number;
  readonly committee: string;
  readonly keySeeds: { protocol: string; network: string }[];
  readonly lastRound: { round: number; author: number; digest: string; bytes: string; ancestors: string[] }[];
  readonly pending: { round: number; author: number; digest: string; bytes: string; ancestors: string[] }[];
  readonly awaitingVotes: {
    index: number;
    epoch: number;
    commitBytes: string;
    commitDigest: string;
    blocks: { round: number; author: number; digest: string; bytes: string }[];
    nextCommittee: string | undefined;
  }[];
  readonly finished: boolean;
}

interface PendingBlock {
  readonly ref: BlockRef;
  readonly bytes: Uint8Array;
  readonly ancestors: readonly string[];
}

interface Keys {
  protocol: Ed25519Signer;
  network: Ed25519Signer;
}

const refKey = (r: { round: number; author: number; digest: Uint8Array }) =>
  `${r.round}/${r.author}/${Buffer.from(r.digest).toString("hex")}`;

export class DevnetChain {
  readonly options: DevnetOptions;
  readonly chainId: string;
  readonly genesis: GenesisEntry;
  /** Keys of each epoch's committee, by author index. */
  readonly keysByEpoch = new Map<number, Keys[]>();

  private rng: Rng;
  private commitsPerEpoch: number;
  private committee: CommitteeView;
  private keys: Keys[];
  private epoch = 0;
  private round = 0;
  private nextIndex = 1;
  private previousDigest: Uint8Array;
  private epochCommits = 0;
  private lastRound: PendingBlock[] = [];
  private pending = new Map<string, PendingBlock>();
  /** Commits formed after the last round, awaiting the next round's votes. */
  private awaitingVotes: Omit<GeneratedCommit, "certifierBlocks">[] = [];
  private finished = false;

  constructor(options: Partial<DevnetOptions> = {}) {
    this.options = { ...DEFAULT_DEVNET_OPTIONS, ...options };
    const o = this.options;
    if (o.hosts !== undefined && o.hosts.length !== o.validators)
      throw new RangeError(`devnet: ${o.hosts.length} hosts for ${o.validators} validators (give one each)`);
    this.chainId = o.chainId ?? `dagsync-devnet-${o.seed}`;
    this.rng = new Rng(`dagsync/devnet/${o.seed}/shape`);
    this.commitsPerEpoch = o.commitsPerEpoch;
    this.keys = Array.from({ length: o.validators }, (_, i) => this.deriveKeys(0, i));
    const committee = this.makeCommittee(
      0,
      Array.from({ length: o.validators }, () => 1n),
    );
    const genesisBytes = toBinary(
      GenesisSchema,
      create(GenesisSchema, { chainId: this.chainId, timestampMs: BigInt(this.genesisTime()), committee }),
    );
    this.genesis = parseGenesis(genesisBytes);
    this.committee = this.genesis.committee;
    this.keysByEpoch.set(0, this.keys);
    this.previousDigest = this.genesis.digest;
  }

  private genesisTime(): number {
    return 1_700_000_000_000 + this.options.seed * 1000;
  }

  private deriveKeys(epoch: number, author: number): Keys {
    const label = `dagsync/devnet/${this.options.seed}/epoch-${epoch}/validator-${author}`;
    return {
      protocol: new Ed25519Signer(deriveSeed(`${label}/protocol`)),
      network: new Ed25519Signer(deriveSeed(`${label}/network`)),
    };
  }

  private makeCommittee(epoch: number, stakes: readonly bigint[]): Committee {
    return create(CommitteeSchema, {
      epoch: BigInt(epoch),
      validators: this.keys.map((k, i) =>
        create(ValidatorSchema, {
          protocolKey: k.protocol.publicKey,
          networkKey: k.network.publicKey,
          stake: stakes[i]!,
          ...validatorAddresses(this.options, epoch, i),
        }),
      ),
    });
  }

  /**
   * Live continuation: the chain stays in its current epoch from now on (a live validator keeps
   * its keys; epoch changes are exercised by the generated history).
   */
  freezeEpoch(): void {
    this.commitsPerEpoch = Number.POSITIVE_INFINITY;
  }

  /** The blocks of the last produced round, by author. */
  get lastRoundBlocks(): readonly { readonly author: number; readonly bytes: Uint8Array }[] {
    return this.lastRound.map((b) => ({ author: b.ref.author, bytes: b.bytes }));
  }

  /** Index of the next commit to be formed. */
  get nextCommitIndex(): number {
    return this.nextIndex;
  }

  get currentRound(): number {
    return this.round;
  }

  /** Everything needed to continue this chain in another process (see `DevnetChain.restore`). */
  snapshot(): DevnetSnapshot {
    const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
    const block = (b: PendingBlock) => ({
      round: b.ref.round,
      author: b.ref.author,
      digest: b64(b.ref.digest),
      bytes: b64(b.bytes),
      ancestors: [...b.ancestors],
    });
    return {
      options: this.options,
      rng: this.rng.state(),
      commitsPerEpoch: this.commitsPerEpoch,
      epoch: this.epoch,
      round: this.round,
      nextIndex: this.nextIndex,
      previousDigest: b64(this.previousDigest),
      epochCommits: this.epochCommits,
      committee: b64(toBinary(CommitteeSchema, this.committee.committee)),
      keySeeds: this.keys.map((k) => ({ protocol: b64(k.protocol.seed), network: b64(k.network.seed) })),
      lastRound: this.lastRound.map(block),
      pending: [...this.pending.values()].map(block),
      awaitingVotes: this.awaitingVotes.map((c) => ({
        index: c.index,
        epoch: c.epoch,
        commitBytes: b64(c.commitBytes),
        commitDigest: b64(c.commitDigest),
        blocks: c.blocks.map((x) => ({
          round: x.ref.round,
          author: x.ref.author,
          digest: b64(x.ref.digest),
          bytes: b64(x.bytes),
        })),
        nextCommittee:
          c.nextCommittee === undefined ? undefined : b64(toBinary(CommitteeSchema, c.nextCommittee)),
      })),
      finished: this.finished,
    };
  }

  static restore(snap: DevnetSnapshot): DevnetChain {
    const chain = new DevnetChain(snap.options);
    const bytes = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
    const ref = (r: { round: number; author: number; digest: string }) =>
      create(BlockRefSchema, { round: r.round, author: r.author, digest: bytes(r.digest) });
    const block = (b: DevnetSnapshot["lastRound"][number]): PendingBlock => ({
      ref: ref(b),
      bytes: bytes(b.bytes),
      ancestors: b.ancestors,
    });
    chain.rng = Rng.fromState(snap.rng);
    chain.commitsPerEpoch = snap.commitsPerEpoch ?? Number.POSITIVE_INFINITY;
    chain.epoch = snap.epoch;
    chain.round = snap.round;
    chain.nextIndex = snap.nextIndex;
    chain.previousDigest = bytes(snap.previousDigest);
    chain.epochCommits = snap.epochCommits;
    chain.committee = new View(fromBinary(CommitteeSchema, bytes(snap.committee)), snap.epoch);
    chain.keys = snap.keySeeds.map((k) => ({
      protocol: new Ed25519Signer(bytes(k.protocol)),
      network: new Ed25519Signer(bytes(k.network)),
    }));
    chain.keysByEpoch.set(snap.epoch, chain.keys);
    chain.lastRound = snap.lastRound.map(block);
    chain.pending = new Map(snap.pending.map((b) => [refKey(ref(b)), block(b)]));
    chain.awaitingVotes = snap.awaitingVotes.map((c) => ({
      index: c.index,
      epoch: c.epoch,
      commitBytes: bytes(c.commitBytes),
      commitDigest: bytes(c.commitDigest),
      blocks: c.blocks.map((x) => ({ ref: ref(x), bytes: bytes(x.bytes) })),
      nextCommittee:
        c.nextCommittee === undefined ? undefined : fromBinary(CommitteeSchema, bytes(c.nextCommittee)),
    }));
    chain.finished = snap.finished;
    return chain;
  }

  /** The committee of the epoch being generated. */
  get currentCommittee(): CommitteeView {
    return this.committee;
  }

  /** Generates every commit of every epoch, in order. */
  *commits(): Generator<GeneratedCommit> {
    while (!this.finished) yield* this.produceRound();
  }

  /**
   * Produces one round of blocks and returns the commits that round certified (those formed after
   * the previous round). Exposed so that a live producer can pace rounds in real time.
   */
  produceRound(): GeneratedCommit[] {
    this.round++;
    const votes = this.awaitingVotes.map((c) =>
      create(CommitRefSchema, { index: BigInt(c.index), digest: c.commitDigest }),
    );
    const blocks = this.keys.map((_, author) => this.makeBlock(author, votes));
    const certified = this.awaitingVotes.map((c) => ({ ...c, certifierBlocks: blocks.map((b) => b.bytes) }));
    this.awaitingVotes = [];

    const endedEpoch = certified.some((c) => c.nextCommittee !== undefined);
    if (endedEpoch) {
      // The vote round of an epoch's last commit closes the epoch: its blocks are never committed.
      this.beginNextEpoch(certified.find((c) => c.nextCommittee !== undefined)!.nextCommittee!);
      this.lastRound = blocks;
      this.pending.clear();
      return certified;
    }
    for (const b of blocks) this.pending.set(refKey(b.ref), b);
    this.tryCommitLeader(blocks);
    this.lastRound = blocks;
    return certified;
  }

  private makeBlock(
    author: number,
    votes: ReturnType<typeof create<typeof CommitRefSchema>>[],
  ): PendingBlock {
    const o = this.options;
    const ancestors = this.chooseAncestors(author);
    const transactions = Array.from({ length: o.txsPerBlock }, () =>
      this.rng.fill(new Uint8Array(o.txBytes)),
    );
    const block = create(BlockSchema, {
      epoch: BigInt(this.epoch),
      round: this.round,
      author,
      timestampMs: BigInt(this.genesisTime() + this.round * 250),
      ancestors,
      transactions,
      commitVotes: votes,
    });
    const blockBytes = toBinary(BlockSchema, block);
    const signature = this.keys[author]!.protocol.sign(blockSigningMessage(this.chainId, blockBytes));
    // The wire twin of SignedBlock wraps the exact signed bytes without encoding the block again.
    const bytes = toBinary(
      WireSignedBlockSchema,
      create(WireSignedBlockSchema, { block: blockBytes, signature }),
    );
    const ref = create(BlockRefSchema, { round: this.round, author, digest: sha256(bytes) });
    return { ref, bytes, ancestors: ancestors.map(refKey) };
  }

  /** Own previous block plus random others of the previous round, until their stake is a quorum. */
  private chooseAncestors(author: number): BlockRef[] {
    const prev = this.lastRound;
    if (prev.length === 0) return [];
    const stakeOf = (a: number) => this.committee.stakeOf(a) ?? 1;
    const total = prev.reduce((s, b) => s + stakeOf(b.ref.author), 0);
    const need = quorumThreshold(total);
    const chosen = new Set<number>();
    const own = prev.findIndex((b) => b.ref.author === author);
    if (own >= 0) chosen.add(own);
    let stake = own >= 0 ? stakeOf(author) : 0;
    const extra = this.rng.below(prev.length); // sometimes reference more than a bare quorum
    while (stake < need || chosen.size < Math.min(prev.length, Math.ceil(prev.length / 2) + extra)) {
      const pick = this.rng.below(prev.length);
      if (chosen.has(pick)) continue;
      chosen.add(pick);
      stake += stakeOf(prev[pick]!.ref.author);
    }
    return [...chosen].sort((a, b) => a - b).map((i) => prev[i]!.ref);
  }

  private leaderOf(round: number): number {
    return (round * 7 + this.epoch) % this.keys.length;
  }

  private tryCommitLeader(current: PendingBlock[]): void {
    const leaderRound = this.round - 1;
    const leader = this.lastRound.find((b) => b.ref.author === this.leaderOf(leaderRound));
    if (leader === undefined || !this.pending.has(refKey(leader.ref))) return;
    const leaderKey = refKey(leader.ref);
    const support = current
      .filter((b) => b.ancestors.includes(leaderKey))
      .reduce((s, b) => s + (this.committee.stakeOf(b.ref.author) ?? 0), 0);
    if (!this.committee.isQuorum(support)) return;

    // Linearize the leader's uncommitted causal history: (round, author), leader last.
    const subDag: PendingBlock[] = [];
    const stack = [leaderKey];
    const seen = new Set<string>();
    while (stack.length > 0) {
      const key = stack.pop()!;
      if (seen.has(key)) continue;
      seen.add(key);
      const block = this.pending.get(key);
      if (block === undefined) continue;
      subDag.push(block);
      stack.push(...block.ancestors);
    }
    subDag.sort((a, b) => a.ref.round - b.ref.round || a.ref.author - b.ref.author);
    for (const b of subDag) this.pending.delete(refKey(b.ref));

    this.epochCommits++;
    const endsEpoch = this.epochCommits === this.commitsPerEpoch;
    const nextCommittee = endsEpoch ? this.nextCommittee() : undefined;
    const commit = create(CommitSchema, {
      index: BigInt(this.nextIndex),
      epoch: BigInt(this.epoch),
      previousDigest: this.previousDigest,
      timestampMs: BigInt(this.genesisTime() + leaderRound * 250),
      leader: leader.ref,
      blocks: subDag.map((b) => b.ref),
      ...(nextCommittee === undefined ? {} : { endOfEpoch: create(EndOfEpochSchema, { nextCommittee }) }),
    });
    const commitBytes = toBinary(CommitSchema, commit);
    const commitDigest = sha256(commitBytes);
    this.awaitingVotes.push({
      index: this.nextIndex,
      epoch: this.epoch,
      commitBytes,
      commitDigest,
      blocks: subDag.map((b) => ({ ref: b.ref, bytes: b.bytes })),
      nextCommittee,
    });
    this.nextIndex++;
    this.previousDigest = commitDigest;
  }

  /** Next epoch: validator (e mod n) gains one unit of stake; validator (e+1 mod n) rotates keys. */
  private nextCommittee(): Committee {
    const n = this.keys.length;
    const next = this.epoch + 1;
    const stakes = this.committee.validators.map((v) => v.stake);
    stakes[this.epoch % n] = stakes[this.epoch % n]! + 1n;
    const rotated = (this.epoch + 1) % n;
    const keys = this.keys.slice();
    keys[rotated] = this.deriveKeys(next, rotated);
    const saved = this.keys;
    this.keys = keys;
    const committee = this.makeCommittee(next, stakes);
    this.keys = saved;
    this.pendingKeys = keys;
    return committee;
  }

  private pendingKeys: Keys[] | undefined;

  private beginNextEpoch(next: Committee): void {
    this.epoch++;
    this.committee = new View(next, this.epoch);
    this.keys = this.pendingKeys ?? this.keys;
    this.pendingKeys = undefined;
    this.keysByEpoch.set(this.epoch, this.keys);
    this.epochCommits = 0;
    if (this.epoch >= this.options.epochs) this.finished = true;
  }
}
