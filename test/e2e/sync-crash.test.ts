/**
 * Crash and resume of `dagsync sync`, every node a real process: a full node catching up from two
 * validator processes is SIGKILLed at three seeded random points of its progress and restarted on
 * the same store each time, then finishes with --exit-when-synced. After every kill the store must
 * open and hold whole units only (every commit from the lowest contiguous, linked, with all its
 * blocks, nothing past the watermark) and keep at least what the node had already reported synced;
 * the final store must equal the validators' byte for byte.
 *
 * The sync is slowed (noble backend, every block's signature checked) so that a 300-commit chain
 * takes a few seconds and kills land mid-sync. DAGSYNC_E2E_SEED picks other kill points.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { PeerClient } from "../../src/client/index.js";
import { Rng } from "../../src/devnet/rng.js";
import { type Proc, ProcGroup, sleep, startOnFreePort, startValidator } from "../helpers/e2e-process.js";
import { assertSameChain, checkStoreIntegrity, readGenesisBytes } from "../helpers/e2e-store.js";

const EPOCHS = 30;
/** Short epochs: a fetched batch never spans two epochs, so the node applies in small steps. */
const PER_EPOCH = 10;
const HIGHEST = EPOCHS * PER_EPOCH;
const KILLS = 3;
const SEED = Number(process.env.DAGSYNC_E2E_SEED ?? 4242);
/** Kill i waits for a height in its own band of the chain, so that each run makes progress first. */
const band = (i: number) => [0.05 + 0.25 * i, 0.15 + 0.25 * i] as const;
/** Once the height is reached, a further random delay before the kill, ms. */
const MAX_EXTRA_DELAY_MS = 80;
const SLOW = ["--verifier", "noble", "--verify-block-signatures"];

const group = new ProcGroup();
let root: string;
let genesisFile: string;
let genesis: Uint8Array;
let reference: string;
const peers: string[] = [];

before(async () => {
  root = await mkdtemp(join(tmpdir(), "dagsync-e2e-crash-"));
  const devnet = join(root, "devnet");
  const gen = group.cli("devnet", [
    "devnet",
    "--out",
    devnet,
    "--validators",
    "4",
    "--epochs",
    String(EPOCHS),
    "--commits-per-epoch",
    String(PER_EPOCH),
    "--txs-per-block",
    "2",
    "--seed",
    "31",
  ]);
  assert.equal((await gen.wait(45_000)).code, 0, gen.output());
  genesisFile = join(devnet, "genesis.pb");
  genesis = await readGenesisBytes(genesisFile);
  reference = join(devnet, "validator-3", "store"); // never served: readable while the others run
  const started = await Promise.all(
    [0, 1].map((i) => startValidator(group, `validator-${i}`, join(devnet, `validator-${i}`, "store"))),
  );
  for (const s of started) peers.push(s.address);
});

after(async () => {
  await group.stopAll();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

/** Polls the node's own sync port until it reports `height` synced; fails if the node exits first. */
async function waitForHeight(node: Proc, address: string, height: number, timeoutMs = 60_000) {
  const client = new PeerClient(address, { smallCallTimeoutMs: 2_000 });
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  try {
    for (;;) {
      if (node.exit !== undefined)
        assert.fail(
          `${node.name} exited (${JSON.stringify(node.exit)}) at ${last}, before ${height}\n${node.output()}`,
        );
      try {
        last = (await client.getCommitAvailability()).highest;
      } catch {
        // busy verifying, or going away: ask again
      }
      if (last >= height) return last;
      if (Date.now() > deadline)
        assert.fail(
          `${node.name} did not reach commit ${height} within ${timeoutMs} ms (at ${last})\n${node.output()}`,
        );
      await sleep(15);
    }
  } finally {
    client.close();
  }
}

test("sync survives SIGKILL at 3 random points and resumes to a store equal to the validators'", {
  timeout: 150_000,
}, async (t) => {
  const rng = new Rng(`sync-crash-${SEED}`);
  t.diagnostic(`seed ${SEED} (set DAGSYNC_E2E_SEED to change the kill points)`);
  const store = join(root, "full");
  const args = ["sync", "--store", store, "--genesis", genesisFile, ...peers.flatMap((p) => ["--peer", p])];
  let held = 0;
  for (let i = 0; i < KILLS; i++) {
    const [lo, hi] = band(i);
    const inBand = Math.floor(HIGHEST * lo) + rng.below(Math.floor(HIGHEST * (hi - lo)) + 1);
    const threshold = Math.max(inBand, held + 1);
    const extraDelay = rng.below(MAX_EXTRA_DELAY_MS + 1);
    assert.ok(threshold < HIGHEST, `kill ${i}: threshold ${threshold} must be below ${HIGHEST}`);
    const node = await startOnFreePort((port) =>
      group.cli(`sync-run-${i}`, [...args, ...SLOW, "--listen", `127.0.0.1:${port}`]),
    );
    const seen = await waitForHeight(node.proc, node.address, threshold);
    await sleep(extraDelay);
    node.proc.signal("SIGKILL");
    const exit = await node.proc.wait(10_000);
    assert.deepEqual(
      exit,
      { code: null, signal: "SIGKILL" },
      `run ${i} was killed, not finished\n${node.proc.output()}`,
    );

    const left = await checkStoreIntegrity(store, genesis);
    t.diagnostic(
      `kill ${i}: threshold ${threshold}, +${extraDelay} ms, node reported ${seen}, store holds ${left.lowest}..${left.highest}`,
    );
    assert.equal(left.lowest, 1);
    assert.ok(
      left.highest >= seen,
      `kill ${i}: the store lost commits the node had reported synced (${left.highest} < ${seen})`,
    );
    assert.ok(left.highest >= held, `kill ${i}: the store went back from ${held} to ${left.highest}`);
    assert.ok(left.highest < HIGHEST, `kill ${i} came after the sync had finished: no crash was tested`);
    held = left.highest;
  }

  const last = group.cli("sync-final", [...args, "--exit-when-synced"]);
  const exit = await last.wait(60_000);
  assert.equal(exit.code, 0, `final run exit code\n${last.output()}`);
  const final = await checkStoreIntegrity(store, genesis);
  assert.equal(final.highest, HIGHEST);
  const same = await assertSameChain(reference, store, 1, HIGHEST);
  assert.equal(final.blocks, same.blocks);
  t.diagnostic(`final store: ${final.highest} commits, ${final.blocks} blocks, equal to the validators'`);
});
