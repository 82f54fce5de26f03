import assert from "node:assert/strict";
import { test } from "node:test";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import pino from "pino";
import { NativeVerifier } from "../src/crypto/index.js";
import { CommitSchema } from "../src/gen/dagsync/v1/types_pb.js";
import { SyncEngine } from "../src/sync/engine.js";
import { FakeSyncNetwork } from "../test/helpers/sync-fake-network.js";
import { checkpointAt, SMALL_OPTIONS, tempStore, testChain } from "../test/helpers/sync-harness.js";

const { chain, commits } = testChain();

test("DEMO C: one hostile peer answering first (uncertified commit, wrong previous_digest) => fatal checkpoint_mismatch although an honest peer serves the chain", async () => {
  const ts = await tempStore(chain, checkpointAt(chain, commits, 50));
  const network = new FakeSyncNetwork(commits, chain.genesis.digest, {
    "evil:1": {
      rewriteCommits: (r) => {
        const c = fromBinary(CommitSchema, r.commits[0]!);
        c.previousDigest = new Uint8Array(32).fill(9);
        return { commits: [toBinary(CommitSchema, c)], certifierBlocks: [] };
      },
    },
    "honest:1": { latencyMs: 200 },
  });
  const engine = new SyncEngine({ store: ts.store, network, peers: ["evil:1", "honest:1"],
    verifier: new NativeVerifier(), log: pino({ level: "silent" }), options: SMALL_OPTIONS });
  let err: any;
  await engine.run(true).catch((e) => (err = e));
  console.log({ code: err?.code, msg: err?.message?.slice(0, 160), highest: ts.store.watermarks.highestSynced });
  assert.equal(err?.code, "checkpoint_mismatch");
  await engine.stop(); await ts.cleanup();
});
