/**
 * The store walk every network scenario ends with. `checkStoreIntegrity` (test/helpers/e2e-store)
 * checks links, digests, blocks and watermarks, and that nothing lies past the watermark; this adds
 * the quorums: every stored set of certifier blocks is a quorum of its epoch's committee for its
 * commit (signatures checked), every commit is covered by a certified commit of its own epoch at
 * or above it (certifying a commit certifies everything linked below it), and the head itself is
 * certified, because a node serves its head with the certifiers it holds.
 */
import assert from "node:assert/strict";
import { parseCommit } from "../../src/core/index.js";
import { verifyCommitBatch } from "../../src/core/verify.js";
import { NativeVerifier } from "../../src/crypto/verifier.js";
import { Store } from "../../src/store/index.js";
import { checkStoreIntegrity, type Integrity } from "../helpers/e2e-store.js";

export interface IntegrityWithQuorums extends Integrity {
  /** Commits whose certifier blocks are stored (each checked to be a quorum). */
  readonly certified: number;
}

/** Runs only while no process holds the store. Throws an AssertionError naming the first fault. */
export async function walkStore(path: string, genesis: Uint8Array): Promise<IntegrityWithQuorums> {
  const base = await checkStoreIntegrity(path, genesis);
  const store = await Store.open(path, { genesis, mustExist: true });
  const verifier = new NativeVerifier();
  let certified = 0;
  try {
    const chainId = store.genesis.genesis.chainId;
    // Epoch of each commit, and whether a certified commit of its epoch lies at or above it.
    let coveredEpoch: number | undefined;
    for (let index = base.highest; index >= base.lowest; index--) {
      const bytes = await store.getCommit(index);
      assert.ok(bytes !== undefined, `${path}: commit ${index}`);
      const entry = parseCommit(bytes);
      const certifiers = await store.getCertifiers(index);
      if (index === base.highest)
        assert.ok(certifiers !== undefined, `${path}: the head (commit ${index}) has no certifier blocks`);
      if (certifiers !== undefined) {
        const committee = await store.getCommittee(entry.epoch);
        assert.ok(committee !== undefined, `${path}: committee of epoch ${entry.epoch}`);
        const result = verifyCommitBatch({
          commits: [bytes],
          certifierBlocks: certifiers,
          expectedStart: index,
          committee,
          chainId,
          verifier,
        });
        assert.equal(
          result.error,
          undefined,
          `${path}: certifiers of commit ${index}: ${result.error?.message ?? ""}`,
        );
        assert.equal(result.commits.length, 1, `${path}: commit ${index} certified`);
        certified++;
        coveredEpoch = entry.epoch;
      }
      assert.equal(
        coveredEpoch,
        entry.epoch,
        `${path}: commit ${index} (epoch ${entry.epoch}) has no certified commit of its epoch at or above it`,
      );
    }
  } finally {
    await store.close();
  }
  return { ...base, certified };
}
