/**
 * The library's full node when things go wrong: a fatal engine error ends every subDags() loop
 * with that error (never a silent hang), and a checkpoint is checked like `--checkpoint` before
 * anything starts (another chain's checkpoint is refused with CheckpointError "wrong_chain").
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { DevnetChain, type GeneratedCommit } from "../../src/devnet/chain.js";
import {
  CheckpointError,
  type CheckpointFile,
  createFullNode,
  createSyncServer,
  DagsyncError,
  exportCheckpoint,
  type FullNodeOptions,
  type RunningSyncServer,
  readCheckpoint,
} from "../../src/index.js";
import type { Store } from "../../src/store/index.js";
import { buildStore, removeDir, tempDir, waitFor } from "../helpers/server.js";
import { checkpointAt } from "../helpers/sync-harness.js";

const chain = new DevnetChain({ epochs: 2, commitsPerEpoch: 10, txsPerBlock: 1, txBytes: 16, seed: 41 });
const other = new DevnetChain({ epochs: 1, commitsPerEpoch: 5, txsPerBlock: 1, txBytes: 16, seed: 42 });
const CHECKPOINT = 8;
let commits: GeneratedCommit[];
let dir: string;
let source: Store;
let otherStore: Store;
let server: RunningSyncServer;
/** The checkpoint file `dagsync checkpoint export --index 8` writes for the served chain. */
let file: CheckpointFile;

/** The node's options around `checkpoint`, in a fresh store directory. */
let nodes = 0;
const nodeOptions = (checkpoint: FullNodeOptions["checkpoint"]): FullNodeOptions => ({
  store: join(dir, `node-${++nodes}`),
  genesis: chain.genesis.bytes,
  peers: [`127.0.0.1:${server.port}`],
  discovery: false,
  checkpoint,
  options: { sync: { peerQueryIntervalMs: 200 } },
});

/** createFullNode's rejection (a node that starts anyway is stopped, and the result is undefined). */
async function refusal(options: FullNodeOptions): Promise<unknown> {
  try {
    const node = await createFullNode(options);
    await node.stop();
    return undefined;
  } catch (e) {
    return e;
  }
}

describe("library: failures of an embedded full node", () => {
  before(async () => {
    dir = await tempDir();
    const built = await buildStore(join(dir, "source"), chain);
    source = built.store;
    commits = built.commits;
    otherStore = (await buildStore(join(dir, "other"), other)).store;
    server = await createSyncServer({ store: source });
    file = await exportCheckpoint(source, CHECKPOINT);
  });
  after(async () => {
    await server?.stop();
    await source?.close();
    await otherStore?.close();
    await removeDir(dir);
  });

  test("a fatal engine error (checkpoint_mismatch) ends subDags loops with that error, not a hang", async () => {
    // A checkpoint whose digest is not the chain's: every peer serves a commit 9 that does not
    // link to it, and the engine stops for good.
    const wrong = { ...checkpointAt(chain, commits, CHECKPOINT), digest: new Uint8Array(32).fill(3) };
    await using node = await createFullNode(nodeOptions(wrong));
    const consume = async () => {
      const got: number[] = [];
      try {
        // The timeout only bounds a regression: the loop must end long before it, with the error.
        for await (const s of node.subDags(CHECKPOINT + 1, { signal: AbortSignal.timeout(20_000) }))
          got.push(Number(s.commit?.index));
      } catch (e) {
        return { got, error: e };
      }
      return { got, error: undefined };
    };
    const t0 = Date.now();
    const early = await consume();
    assert.deepEqual(early.got, []);
    assert.ok(early.error instanceof DagsyncError, `expected the engine's error, got ${String(early.error)}`);
    assert.equal(early.error.code, "checkpoint_mismatch");
    assert.ok(Date.now() - t0 < 15_000, `ended after ${Date.now() - t0} ms`);
    assert.equal(node.status().error, early.error, "status() names the same error");
    // A subscriber that comes after the failure gets it at once.
    const late = await consume();
    assert.equal(late.error, early.error);
  });

  test("the caller's abort and stop() still end subDags quietly", async () => {
    await using node = await createFullNode(nodeOptions(file));
    const ac = new AbortController();
    const got: number[] = [];
    for await (const s of node.subDags(CHECKPOINT + 1, { signal: ac.signal })) {
      got.push(Number(s.commit?.index));
      if (got.length === 2) ac.abort();
    }
    assert.deepEqual(got, [CHECKPOINT + 1, CHECKPOINT + 2]);
    const following = (async () => {
      let n = 0;
      for await (const _ of node.subDags(CHECKPOINT + 1)) n++;
      return n;
    })();
    await waitFor(() => node.status().highestSynced === commits.length, 15_000, "the node to sync");
    await new Promise((r) => setTimeout(r, 100));
    await node.stop();
    assert.equal(await following, commits.length - CHECKPOINT);
    assert.equal(node.status().error, undefined);
  });

  test("a checkpoint file of another chain is refused with CheckpointError wrong_chain", async () => {
    const foreign = await exportCheckpoint(otherStore);
    const e = await refusal(nodeOptions(foreign));
    assert.ok(e instanceof CheckpointError, `expected a CheckpointError, got ${String(e)}`);
    assert.equal(e.code, "wrong_chain");
    assert.match(e.message, /another chain/);
    // The CLI's path (readCheckpoint) gives the same verdict.
    const path = join(dir, "foreign-checkpoint.json");
    await writeFile(path, JSON.stringify(foreign));
    await assert.rejects(
      readCheckpoint(path, chain.genesis.digest),
      (x: unknown) => x instanceof CheckpointError && x.code === "wrong_chain",
    );
  });

  test("a malformed checkpoint file is refused with CheckpointError bad_checkpoint", async () => {
    const cases: [string, CheckpointFile][] = [
      ["index 0", { ...file, index: 0 }],
      ["a fractional index", { ...file, index: 1.5 }],
      ["a short digest", { ...file, digest: file.digest.slice(2) }],
      ["a non-hex digest", { ...file, digest: `zz${file.digest.slice(2)}` }],
      ["a short genesis digest", { ...file, genesis_digest: file.genesis_digest.slice(2) }],
      ["a committee of another epoch", { ...file, epoch: file.epoch + 1 }],
    ];
    for (const [what, bad] of cases) {
      const e = await refusal(nodeOptions(bad));
      assert.ok(e instanceof CheckpointError, `${what}: expected a CheckpointError, got ${String(e)}`);
      assert.equal(e.code, "bad_checkpoint", what);
    }
  });

  test("a decoded checkpoint that is malformed is refused with CheckpointError bad_checkpoint", async () => {
    const good = checkpointAt(chain, commits, CHECKPOINT);
    for (const [what, bad] of [
      ["index 0", { ...good, index: 0 }],
      ["a 31-byte digest", { ...good, digest: good.digest.subarray(1) }],
    ] as const) {
      const e = await refusal(nodeOptions(bad));
      assert.ok(e instanceof CheckpointError, `${what}: expected a CheckpointError, got ${String(e)}`);
      assert.equal(e.code, "bad_checkpoint", what);
    }
  });

  test("the exported checkpoint file of this chain is accepted", async () => {
    await using node = await createFullNode(nodeOptions(file));
    for await (const s of node.subDags(CHECKPOINT + 1, { signal: AbortSignal.timeout(20_000) })) {
      assert.equal(Number(s.commit?.index), CHECKPOINT + 1);
      break;
    }
    assert.equal(node.status().lowestAvailable, CHECKPOINT + 1);
  });
});
