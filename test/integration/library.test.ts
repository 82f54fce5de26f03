/**
 * The library entry (src/index.ts) in-process: createSyncServer serves a store, createFullNode
 * syncs from it from a trusted checkpoint and hands over decoded, verified sub-DAGs; a start below
 * the checkpoint fails with the same SubscriptionError as every other subscription path.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { DevnetChain, type GeneratedCommit } from "../../src/devnet/chain.js";
import {
  type CommittedSubDag,
  createFullNode,
  createSyncServer,
  DagsyncError,
  type RunningSyncServer,
  SubscriptionError,
} from "../../src/index.js";
import { buildStore, removeDir, tempDir } from "../helpers/server.js";
import { checkpointAt } from "../helpers/sync-harness.js";

const chain = new DevnetChain({ epochs: 2, commitsPerEpoch: 15, txsPerBlock: 2, txBytes: 16, seed: 5 });
let commits: GeneratedCommit[];
let dir: string;
let server: RunningSyncServer;
let closeStore: () => Promise<void>;

describe("library: createSyncServer + createFullNode", () => {
  before(async () => {
    dir = await tempDir();
    const built = await buildStore(join(dir, "source"), chain);
    commits = built.commits;
    closeStore = () => built.store.close();
    server = await createSyncServer({ store: built.store });
  });
  after(async () => {
    await server?.stop();
    await closeStore?.();
    await removeDir(dir);
  });

  test("a full node from a checkpoint: subDags below it is out_of_range; from it, every commit decoded in order", async () => {
    const CHECKPOINT = 10;
    await using node = await createFullNode({
      store: join(dir, "node"),
      genesis: chain.genesis.bytes,
      peers: [`127.0.0.1:${server.port}`],
      discovery: false,
      checkpoint: checkpointAt(chain, commits, CHECKPOINT),
      options: { sync: { peerQueryIntervalMs: 200 } },
    });
    await assert.rejects(
      (async () => {
        for await (const _ of node.subDags(CHECKPOINT)) return;
      })(),
      (e: unknown) =>
        e instanceof SubscriptionError && e instanceof DagsyncError && e.code === "out_of_range",
    );
    const got: CommittedSubDag[] = [];
    for await (const sub of node.subDags(CHECKPOINT + 1, { signal: AbortSignal.timeout(20_000) })) {
      got.push(sub);
      if (got.length === commits.length - CHECKPOINT) break;
    }
    assert.deepEqual(
      got.map((s) => Number(s.commit?.index)),
      commits.slice(CHECKPOINT).map((c) => c.index),
    );
    for (const [k, s] of got.entries()) {
      const c = commits[CHECKPOINT + k]!;
      assert.equal(s.blocks.length, c.blocks.length);
      assert.equal(s.blocks[0]?.block?.round, c.blocks[0]?.ref.round);
    }
    const status = node.status();
    assert.equal(status.highestSynced, commits.length);
    assert.equal(status.lowestAvailable, CHECKPOINT + 1);
    assert.equal(status.error, undefined);
  });
});
