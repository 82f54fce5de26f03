/**
 * The devnet chain generator produces a chain that the core rules accept end to end: every
 * commit certified by its epoch's committee and linked to the one before, every committed block
 * matching its ref, every epoch handing over to the next through a certified end_of_epoch. Its
 * DAG has the Mysticeti shape (each block references a stake quorum of the previous round), later
 * blocks carry the votes, and the output is a pure function of the seed.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type BlockEntry,
  blockRefEquals,
  blockRefKey,
  type CommitteeView,
  commitRefEquals,
  commitRefOf,
  nextCommitteeFrom,
  parseCommit,
  parseSignedBlock,
  verifyBlocksAgainstRefs,
  verifyCommitBatch,
  verifySignedBlock,
} from "../../src/core/index.js";
import { NativeVerifier } from "../../src/crypto/verifier.js";
import {
  DevnetChain,
  type DevnetOptions,
  type GeneratedCommit,
  validatorAddresses,
} from "../../src/devnet/chain.js";

const OPTIONS: Partial<DevnetOptions> = { validators: 4, epochs: 3, commitsPerEpoch: 30 };
const chain = new DevnetChain(OPTIONS);
const commits = [...chain.commits()];
const verifier = new NativeVerifier();

/** Committees by epoch, each obtained through the checked transition from the one before. */
const committees = new Map<number, CommitteeView>([[0, chain.genesis.committee]]);
/** Every generated block (committed and certifier blocks), by round/author. */
const blocksByPosition = new Map<string, BlockEntry>();
for (const c of commits) {
  for (const bytes of [...c.blocks.map((b) => b.bytes), ...c.certifierBlocks]) {
    const block = parseSignedBlock(bytes);
    blocksByPosition.set(`${block.round}/${block.author}`, block);
  }
  if (c.nextCommittee !== undefined) {
    const next = nextCommitteeFrom(parseCommit(c.commitBytes), committees.get(c.epoch)!);
    committees.set(next.epoch, next);
  }
}

describe("devnet chain: verification under the core rules", () => {
  test("has the requested shape: 3 epochs of 30 commits, indices from 1", () => {
    assert.equal(commits.length, 90);
    commits.forEach((c, i) => {
      assert.equal(c.index, i + 1);
      assert.equal(c.epoch, Math.floor(i / 30));
      assert.equal(c.nextCommittee !== undefined, (i + 1) % 30 === 0, `commit ${c.index}`);
    });
  });

  test("every commit, its blocks and every epoch transition verify end to end", () => {
    let committee = chain.genesis.committee;
    let previousDigest = chain.genesis.digest;
    const committed = new Set<string>();
    for (const c of commits) {
      const result = verifyCommitBatch({
        commits: [c.commitBytes],
        certifierBlocks: c.certifierBlocks,
        expectedStart: c.index,
        previousDigest,
        committee,
        chainId: chain.chainId,
        verifier,
      });
      assert.equal(result.error, undefined, `commit ${c.index}: ${result.error?.message}`);
      assert.equal(result.commits.length, 1);
      const entry = result.commits[0]!;
      assert.deepEqual(entry.digest, c.commitDigest);
      assert.equal(entry.epoch, committee.epoch);
      assert.ok(
        committee.isQuorum(result.certifierBlocks.reduce((s, b) => s + committee.stakeOf(b.author)!, 0)),
      );

      // Blocks: authenticated by digest against the certified refs, in commit order, leader last.
      const refs = entry.commit.blocks;
      assert.ok(refs.length > 0, `commit ${c.index} commits no block`);
      assert.equal(c.blocks.length, refs.length);
      for (const [i, b] of c.blocks.entries()) assert.ok(blockRefEquals(b.ref, refs[i]!));
      const blocks = verifyBlocksAgainstRefs(
        refs,
        c.blocks.map((b) => b.bytes),
      );
      assert.equal(blocks.error, undefined, `commit ${c.index}: ${blocks.error?.message}`);
      assert.equal(blocks.blocks.length, refs.length);
      assert.ok(blockRefEquals(refs.at(-1)!, entry.commit.leader!), "the leader comes last");
      for (let i = 1; i < refs.length; i++) {
        const [a, b] = [refs[i - 1]!, refs[i]!];
        assert.ok(
          a.round < b.round || (a.round === b.round && a.author < b.author),
          "sorted by (round, author)",
        );
      }
      for (const b of c.blocks) {
        // The optional full check (verifyBlockSignatures) passes too, under the commit's committee.
        const block = parseSignedBlock(b.bytes);
        verifySignedBlock(block, committee, chain.chainId, verifier);
        assert.equal(block.epoch, committee.epoch);
        const key = blockRefKey(b.ref);
        assert.ok(!committed.has(key), `block ${key} committed twice`);
        committed.add(key);
      }

      if (c.nextCommittee !== undefined) {
        const next = nextCommitteeFrom(entry, committee);
        assert.equal(next.epoch, committee.epoch + 1);
        assert.deepEqual(next.committee, c.nextCommittee);
        committee = next;
      } else {
        assert.throws(() => nextCommitteeFrom(entry, committee));
      }
      previousDigest = entry.digest;
    }
    assert.equal(committee.epoch, 3);
  });

  test("a whole epoch verifies as one batch, certified by its last commit's votes", () => {
    for (let epoch = 0; epoch < 3; epoch++) {
      const batch = commits.filter((c) => c.epoch === epoch);
      const first = batch[0]!;
      const result = verifyCommitBatch({
        commits: batch.map((c) => c.commitBytes),
        certifierBlocks: batch.at(-1)!.certifierBlocks,
        expectedStart: first.index,
        previousDigest: first.index === 1 ? chain.genesis.digest : commits[first.index - 2]!.commitDigest,
        committee: committees.get(epoch)!,
        chainId: chain.chainId,
        verifier,
      });
      assert.equal(result.error, undefined, result.error?.message);
      assert.equal(result.commits.length, 30);
    }
  });
});

describe("devnet chain: DAG shape and votes", () => {
  const epochOfRound = new Map<number, number>();
  for (const b of blocksByPosition.values()) {
    const seen = epochOfRound.get(b.round);
    assert.ok(seen === undefined || seen === b.epoch, `round ${b.round} spans two epochs`);
    epochOfRound.set(b.round, b.epoch);
  }

  /** The epoch of a round: known from its blocks, or from known rounds of one epoch on both sides. */
  function committeeOfRound(round: number): CommitteeView {
    let epoch = epochOfRound.get(round);
    if (epoch === undefined) {
      const known = [...epochOfRound.keys()];
      const below = Math.max(...known.filter((r) => r < round));
      const above = Math.min(...known.filter((r) => r > round));
      if (epochOfRound.get(below) === epochOfRound.get(above)) epoch = epochOfRound.get(below);
    }
    assert.ok(epoch !== undefined, `the epoch of round ${round} is unknown`);
    const committee = committees.get(epoch);
    assert.ok(committee !== undefined);
    return committee;
  }

  test("every block references a stake quorum of the previous round, its own block among them", () => {
    assert.ok(blocksByPosition.size > 300, `only ${blocksByPosition.size} blocks collected`);
    let checked = 0;
    let resolved = 0;
    let total = 0;
    for (const block of blocksByPosition.values()) {
      const { ancestors } = block.block;
      if (block.round === 1) {
        assert.equal(ancestors.length, 0, "round 1 has no ancestors");
        continue;
      }
      const previous = committeeOfRound(block.round - 1);
      const authors = ancestors.map((a) => a.author);
      assert.equal(new Set(authors).size, authors.length, "distinct ancestor authors");
      for (const a of ancestors) {
        assert.equal(
          a.round,
          block.round - 1,
          `block ${block.round}/${block.author}: ancestor of round ${a.round}`,
        );
        assert.ok(previous.stakeOf(a.author) !== undefined, "ancestor author is a member");
        const known = blocksByPosition.get(`${a.round}/${a.author}`);
        total++;
        if (known !== undefined) {
          resolved++;
          assert.deepEqual(a.digest, known.digest, "ancestor ref matches the block's digest");
        }
      }
      assert.ok(authors.includes(block.author), `block ${block.round}/${block.author} skips its own`);
      const stake = authors.reduce((s, a) => s + previous.stakeOf(a)!, 0);
      assert.ok(
        previous.isQuorum(stake),
        `block ${block.round}/${block.author}: ancestors' stake ${stake} < ${previous.quorumThreshold}`,
      );
      checked++;
    }
    assert.ok(checked > 300);
    assert.ok(resolved > total * 0.9, `only ${resolved} of ${total} ancestor refs resolve to known blocks`);
  });

  test("committed blocks are of the commit's epoch and no later than its leader", () => {
    for (const c of commits) {
      const leader = parseCommit(c.commitBytes).commit.leader!;
      for (const b of c.blocks) {
        const block = parseSignedBlock(b.bytes);
        assert.equal(block.epoch, c.epoch);
        assert.ok(block.round <= leader.round);
      }
    }
  });

  test("later blocks carry commit_votes: each commit's certifier blocks vote for it", () => {
    const ref = (c: GeneratedCommit) => commitRefOf(parseCommit(c.commitBytes));
    for (const c of commits) {
      const leaderRound = parseCommit(c.commitBytes).commit.leader!.round;
      const target = ref(c);
      const certifiers = c.certifierBlocks.map(parseSignedBlock);
      assert.equal(certifiers.length, 4);
      assert.deepEqual(certifiers.map((b) => b.author).sort(), [0, 1, 2, 3]);
      for (const b of certifiers) {
        assert.ok(b.round > leaderRound, "votes come after the leader's round");
        assert.equal(b.epoch, c.epoch, "votes are of the commit's epoch");
        assert.ok(
          b.block.commitVotes.some((v) => commitRefEquals(v, target)),
          `no vote for ${c.index}`,
        );
      }
    }
    // Early blocks carry no votes: nothing was committed yet.
    const round1 = [...blocksByPosition.values()].filter((b) => b.round === 1);
    assert.ok(round1.length > 0);
    for (const b of round1) assert.equal(b.block.commitVotes.length, 0);
  });
});

describe("devnet chain: epoch changes", () => {
  test("each epoch ends with a committee change: one stake grows, one validator rotates its keys", () => {
    const ends = commits.filter((c) => c.nextCommittee !== undefined);
    assert.equal(ends.length, 3);
    for (const end of ends) {
      const current = committees.get(end.epoch)!.validators;
      const next = end.nextCommittee!;
      assert.equal(next.epoch, BigInt(end.epoch + 1));
      assert.equal(next.validators.length, current.length);
      const stakeChanges = next.validators.flatMap((v, i) =>
        v.stake === current[i]!.stake ? [] : [[i, current[i]!.stake, v.stake] as const],
      );
      assert.equal(stakeChanges.length, 1, `epoch ${end.epoch}: stake changes ${stakeChanges.join(";")}`);
      const [, before, after] = stakeChanges[0]!;
      assert.ok(after > before, "the stake grows");
      const rotated = next.validators.flatMap((v, i) =>
        Buffer.from(v.protocolKey).equals(current[i]!.protocolKey) ? [] : [i],
      );
      assert.equal(rotated.length, 1, `epoch ${end.epoch}: rotated ${rotated.join(",")}`);
      const r = rotated[0]!;
      assert.notDeepEqual(next.validators[r]!.networkKey, current[r]!.networkKey, "network key rotates too");
      next.validators.forEach((v, i) => {
        assert.equal(v.syncAddress, current[i]!.syncAddress);
        if (i !== r) assert.deepEqual(v.networkKey, current[i]!.networkKey);
      });
      // The signing keys of the next epoch are the ones announced.
      const keys = chain.keysByEpoch.get(end.epoch + 1);
      if (keys !== undefined)
        assert.deepEqual(
          keys.map((k) => [k.protocol.publicKey, k.network.publicKey]),
          next.validators.map((v) => [v.protocolKey, v.networkKey]),
        );
    }
    assert.ok(chain.keysByEpoch.has(1) && chain.keysByEpoch.has(2));
  });

  test("blocks of an epoch are signed with that epoch's keys: the rotated validator's new key", () => {
    const keys1 = chain.keysByEpoch.get(1)!;
    const keys0 = chain.keysByEpoch.get(0)!;
    const rotated = keys1.findIndex(
      (k, i) => !Buffer.from(k.protocol.publicKey).equals(keys0[i]!.protocol.publicKey),
    );
    assert.ok(rotated >= 0);
    const epoch1Block = commits
      .filter((c) => c.epoch === 1)
      .flatMap((c) => c.blocks)
      .map((b) => parseSignedBlock(b.bytes))
      .find((b) => b.author === rotated);
    assert.ok(epoch1Block !== undefined);
    verifySignedBlock(epoch1Block, committees.get(1)!, chain.chainId, verifier);
    // Under the old committee the block is of the wrong epoch, and its key would not match anyway.
    assert.throws(() => verifySignedBlock(epoch1Block, committees.get(0)!, chain.chainId, verifier));
  });
});

describe("devnet chain: determinism", () => {
  const digestsOf = (c: readonly GeneratedCommit[]) =>
    c.map((x) => Buffer.from(x.commitDigest).toString("hex"));

  test("the same seed gives identical commits; another seed gives different ones", () => {
    const again = [...new DevnetChain(OPTIONS).commits()];
    assert.deepEqual(digestsOf(again), digestsOf(commits));
    assert.deepEqual(
      again.map((c) => c.commitBytes),
      commits.map((c) => c.commitBytes),
    );
    assert.deepEqual(
      again.flatMap((c) => c.certifierBlocks),
      commits.flatMap((c) => c.certifierBlocks),
    );
    assert.deepEqual(new DevnetChain(OPTIONS).genesis.digest, chain.genesis.digest);

    const other = new DevnetChain({ ...OPTIONS, seed: 2 });
    const otherCommits = [...other.commits()];
    assert.equal(otherCommits.length, commits.length);
    assert.notDeepEqual(other.genesis.digest, chain.genesis.digest);
    const same = digestsOf(otherCommits).filter((d, i) => d === digestsOf(commits)[i]);
    assert.equal(same.length, 0, "no commit digest is shared between seeds");
  });
});

describe("devnet chain: validator hosts", () => {
  test("hosts puts each validator on its own address, in genesis and across moves", () => {
    const hosts = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];
    const chain = new DevnetChain({ ...OPTIONS, hosts, moveRotated: true });
    const members = chain.genesis.committee.validators;
    assert.deepEqual(
      members.map((m) => m.syncAddress.split(":")[0]),
      hosts,
      "genesis sync addresses carry each validator's host",
    );
    assert.deepEqual(
      members.map((m) => m.gossipAddress.split(":")[0]),
      hosts,
      "genesis gossip addresses carry each validator's host",
    );
    // The mover keeps its host and changes its port.
    const moved = validatorAddresses({ ...chain.options }, 1, 1);
    assert.equal(moved.syncAddress, `127.0.0.12:${chain.options.basePort + 2 * 4}`);
  });

  test("a hosts list of the wrong length is refused", () => {
    assert.throws(() => new DevnetChain({ ...OPTIONS, hosts: ["127.0.0.11"] }), /1 hosts for 4 validators/);
  });
});
