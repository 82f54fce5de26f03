/**
 * `dagsync sync` end to end, every node a real process: validators (`dagsync serve`) serve a
 * generated 3-epoch devnet; full nodes catch up from them, from each other, and from a trusted
 * checkpoint (`dagsync checkpoint export`) against pruned validators; a checkpoint with a changed
 * digest is refused; bad input ends with one line naming the flag or file; `dagsync status`
 * reports what the node holds. Stores are compared with the devnet's byte for byte once the
 * processes that held them are gone.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { PeerClient } from "../../src/client/index.js";
import { parseCommit, sha256, toHex } from "../../src/core/index.js";
import type { CheckpointFile } from "../../src/node/checkpoint.js";
import { logRecords, type Proc, ProcGroup, startOnFreePort, startValidator } from "../helpers/e2e-process.js";
import {
  assertSameChain,
  checkStoreIntegrity,
  copyPrefix,
  readGenesisBytes,
  withStore,
} from "../helpers/e2e-store.js";

const EPOCHS = 3;
const PER_EPOCH = 40;
const HIGHEST = EPOCHS * PER_EPOCH;
/** The checkpoint: a commit inside epoch 2 (commits 81..120), not at an epoch boundary. */
const CHECKPOINT = 95;
const PROCESS_TIMEOUT_MS = 45_000;

const group = new ProcGroup();
let root: string;
let devnet: string;
let genesisFile: string;
let genesis: Uint8Array;
/** validator-3's store: never served, so it can be read while the others run (all hold the same chain). */
let reference: string;
const validators: { proc: Proc; address: string; store: string }[] = [];

const storeOf = (i: number) => join(devnet, `validator-${i}`, "store");

/** Runs `dagsync ...args` to completion (killed and failed after the timeout). */
async function dagsync(name: string, args: readonly string[], timeoutMs = PROCESS_TIMEOUT_MS) {
  const p = group.cli(name, args);
  const exit = await p.wait(timeoutMs);
  return { ...exit, stdout: p.stdout(), stderr: p.stderr(), output: p.output() };
}

/** The stderr lines that are not pino JSON log records. */
const messageLines = (stderr: string) =>
  stderr
    .split("\n")
    .filter((l) => l.trim() !== "" && !l.startsWith("{"))
    .filter((l) => l !== "(run with --help for usage)");

before(async () => {
  root = await mkdtemp(join(tmpdir(), "dagsync-e2e-sync-"));
  devnet = join(root, "devnet");
  const gen = await dagsync("devnet", [
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
    "23",
  ]);
  assert.equal(gen.code, 0, `dagsync devnet failed:\n${gen.output}`);
  genesisFile = join(devnet, "genesis.pb");
  genesis = await readGenesisBytes(genesisFile);
  reference = storeOf(3);
  // Copies for the checkpoint test, taken before any process opens the stores.
  await cp(storeOf(1), join(root, "pruned-1"), { recursive: true });
  await cp(storeOf(2), join(root, "pruned-2"), { recursive: true });
  const started = await Promise.all(
    [0, 1, 2].map((i) => startValidator(group, `validator-${i}`, storeOf(i))),
  );
  started.forEach((s, i) => {
    validators.push({ proc: s.proc, address: s.address, store: storeOf(i) });
  });
});

after(async () => {
  await group.stopAll();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

describe("dagsync sync (multi-process)", { timeout: 120_000 }, () => {
  const synced = () => join(root, "full-a");
  let listening: { proc: Proc; address: string } | undefined;

  test("catches up from 3 validator processes and exits 0; its store equals the validators'", async () => {
    // What the validators advertise is the reference store's chain.
    const refMarks = await withStore(reference, async (s) => s.watermarks);
    assert.equal(refMarks.highestSynced, HIGHEST);
    for (const v of validators) {
      const client = new PeerClient(v.address);
      try {
        const a = await client.getCommitAvailability();
        assert.deepEqual([a.lowest, a.highest], [1, HIGHEST], `${v.address} advertises 1..${HIGHEST}`);
        assert.equal(toHex(a.highestDigest), toHex(refMarks.highestSyncedDigest), `${v.address} tip digest`);
      } finally {
        client.close();
      }
    }
    const r = await dagsync("sync-a", [
      "sync",
      "--store",
      synced(),
      "--genesis",
      genesisFile,
      ...validators.flatMap((v) => ["--peer", v.address]),
      "--exit-when-synced",
    ]);
    assert.equal(r.code, 0, `sync exit code\n${r.output}`);
    const done = logRecords(r.stderr).find((l) => l.msg === "synced: every commit and block verified");
    assert.ok(done !== undefined, `final summary line\n${r.output}`);
    assert.equal(done.highest, HIGHEST);
    assert.equal(done.commits, HIGHEST);
    assert.ok(
      typeof done.cpuSeconds === "number" && done.cpuSeconds > 0 && done.cpuSeconds < 600,
      `cpuSeconds in the summary: ${done.cpuSeconds}`,
    );

    const same = await assertSameChain(reference, synced(), 1, HIGHEST);
    assert.ok(same.blocks > HIGHEST, `blocks compared: ${same.blocks}`);
    const integrity = await checkStoreIntegrity(synced(), genesis);
    assert.deepEqual(integrity, { lowest: 1, highest: HIGHEST, epoch: EPOCHS, blocks: same.blocks });
    assert.equal(done.blocks, same.blocks, "blocks applied = blocks stored");
  });

  test("a synced node with --listen serves what it synced: a second node syncs from it alone", async () => {
    const a = await startOnFreePort((port) =>
      group.cli("full-a-listen", [
        "sync",
        "--store",
        synced(),
        "--genesis",
        genesisFile,
        ...validators.flatMap((v) => ["--peer", v.address]),
        "--no-discovery",
        "--listen",
        `127.0.0.1:${port}`,
      ]),
    );
    listening = a;
    const b = join(root, "full-b");
    const r = await dagsync("sync-b", [
      "sync",
      "--store",
      b,
      "--genesis",
      genesisFile,
      "--peer",
      a.address,
      "--exit-when-synced",
    ]);
    assert.equal(r.code, 0, `sync from the full node: exit code\n${r.output}\n${a.proc.output()}`);
    await assertSameChain(reference, b, 1, HIGHEST);
    await checkStoreIntegrity(b, genesis);
  });

  test("dagsync status on the synced node reports its highest commit, role and peers", async () => {
    assert.ok(listening !== undefined, "the listening node of the previous test");
    const r = await dagsync("status", ["status", listening.address]);
    assert.equal(r.code, 0, `status exit code\n${r.output}`);
    const status = JSON.parse(r.stdout) as {
      highestSyncedCommit: string;
      lowestAvailableCommit: string;
      epoch: string;
      role: string;
      syncState: string;
      peers?: { address: string; highest: string }[];
    };
    assert.equal(status.highestSyncedCommit, String(HIGHEST));
    assert.equal(status.lowestAvailableCommit, "1");
    assert.equal(status.epoch, String(EPOCHS));
    assert.equal(status.role, "full");
    assert.equal(status.syncState, "synced");
    assert.deepEqual(
      (status.peers ?? []).map((p) => p.address).sort(),
      validators.map((v) => v.address).sort(),
    );
    for (const p of status.peers ?? []) assert.equal(p.highest, String(HIGHEST), `height of ${p.address}`);

    // SIGTERM stops it cleanly, and the store it leaves is whole.
    const exit = await listening.proc.stop(10_000);
    assert.deepEqual(exit, { code: 0, signal: null }, listening.proc.output());
    await checkStoreIntegrity(synced(), genesis);
  });

  test("trusted checkpoint: syncs above it from pruned validators; a changed digest is refused", async () => {
    // A node we trust, at commit CHECKPOINT (inside epoch 2), exports its checkpoint.
    const trusted = join(root, "trusted");
    const at = await copyPrefix(reference, trusted, genesis, CHECKPOINT);
    assert.equal(at.highestSynced, CHECKPOINT);
    const exported = await dagsync("export", ["checkpoint", "export", "--store", trusted]);
    assert.equal(exported.code, 0, exported.output);
    const checkpoint = JSON.parse(exported.stdout) as CheckpointFile;
    const commitAt = await withStore(reference, async (s) => (await s.getCommit(CHECKPOINT))!);
    assert.equal(parseCommit(commitAt).epoch, 2, "the checkpoint commit is in epoch 2");
    assert.equal(checkpoint.index, CHECKPOINT);
    assert.equal(checkpoint.digest, toHex(sha256(commitAt)));
    assert.equal(checkpoint.epoch, 2);
    assert.equal(checkpoint.genesis_digest, toHex(sha256(genesis)));
    const cpFile = join(root, "cp.json");
    await writeFile(cpFile, exported.stdout);

    // Validators that pruned everything below the checkpoint's successor.
    const pruned = [join(root, "pruned-1"), join(root, "pruned-2")];
    for (const path of pruned)
      await withStore(path, async (s) => {
        assert.equal(await s.prune(CHECKPOINT + 1), CHECKPOINT);
        assert.equal(s.watermarks.lowestAvailable, CHECKPOINT + 1);
      });
    const servers = await Promise.all(pruned.map((p, i) => startValidator(group, `pruned-${i + 1}`, p)));
    const peers = servers.flatMap((s) => ["--peer", s.address]);

    const good = join(root, "from-checkpoint");
    const r = await dagsync("sync-cp", [
      "sync",
      "--store",
      good,
      "--genesis",
      genesisFile,
      "--checkpoint",
      cpFile,
      ...peers,
      "--exit-when-synced",
    ]);
    assert.equal(r.code, 0, `sync from the checkpoint: exit code\n${r.output}`);
    const integrity = await checkStoreIntegrity(good, genesis, {
      index: CHECKPOINT,
      digest: sha256(commitAt),
    });
    assert.equal(integrity.lowest, CHECKPOINT + 1, "lowest stored commit is the checkpoint's successor");
    assert.equal(integrity.highest, HIGHEST);
    await assertSameChain(reference, good, CHECKPOINT + 1, HIGHEST);
    await withStore(good, async (s) => {
      assert.equal(await s.getCommit(CHECKPOINT), undefined, "nothing stored at or below the checkpoint");
      assert.deepEqual(await s.getCommits(1, CHECKPOINT), []);
    });

    // The same checkpoint with one digit of its digest changed.
    const flipped = checkpoint.digest.replace(/^./, (c) => (c === "0" ? "1" : "0"));
    assert.notEqual(flipped, checkpoint.digest);
    const badFile = join(root, "cp-bad.json");
    await writeFile(badFile, JSON.stringify({ ...checkpoint, digest: flipped }, null, 2));
    const bad = join(root, "from-bad-checkpoint");
    const refused = await dagsync("sync-cp-bad", [
      "sync",
      "--store",
      bad,
      "--genesis",
      genesisFile,
      "--checkpoint",
      badFile,
      ...peers,
      "--exit-when-synced",
    ]);
    assert.notEqual(refused.code, 0, `a wrong checkpoint must fail\n${refused.output}`);
    const message = messageLines(refused.stderr);
    assert.equal(message.length, 1, `one message line:\n${refused.stderr}`);
    assert.match(message[0]!, /trusted checkpoint .*does not match/);
    assert.ok(message[0]!.includes(`commit ${CHECKPOINT}`), message[0]);
    assert.ok(!refused.stderr.includes("    at "), `no stack trace:\n${refused.stderr}`);
    const left = await checkStoreIntegrity(bad, genesis, {
      index: CHECKPOINT,
      digest: Buffer.from(flipped, "hex"),
    });
    assert.equal(left.highest, CHECKPOINT, "no commit stored past the wrong checkpoint");
    for (const s of servers) await s.proc.stop();
  });

  test("bad input: non-zero exit, one line naming the flag or file, no stack trace", async () => {
    const junk = join(root, "junk.pb");
    await writeFile(junk, Buffer.from(sha256(new TextEncoder().encode("not a genesis"))));
    const peer = ["--peer", validators[0]!.address];
    const cases: { name: string; args: string[]; names: string[]; store?: string }[] = [
      {
        name: "unknown flag",
        args: ["--store", join(root, "bad-1"), "--genesis", genesisFile, ...peer, "--fast-please"],
        names: ["--fast-please"],
        store: join(root, "bad-1"),
      },
      {
        name: "missing --genesis",
        args: ["--store", join(root, "bad-2"), ...peer],
        names: ["--genesis"],
        store: join(root, "bad-2"),
      },
      {
        name: "random bytes as genesis",
        args: ["--store", join(root, "bad-3"), "--genesis", junk, ...peer],
        names: ["--genesis", junk],
        store: join(root, "bad-3"),
      },
      {
        name: "--peer that is not HOST:PORT",
        args: ["--store", join(root, "bad-4"), "--genesis", genesisFile, "--peer", "validator-0"],
        names: ["--peer", "validator-0"],
        store: join(root, "bad-4"),
      },
      {
        name: "--store held by a running validator",
        args: ["--store", validators[0]!.store, "--genesis", genesisFile, "--peer", validators[1]!.address],
        names: [validators[0]!.store, "in use"],
      },
    ];
    const results = await Promise.all(
      cases.map((c, i) => dagsync(`bad-${i}`, ["sync", ...c.args, "--exit-when-synced"])),
    );
    cases.forEach((c, i) => {
      const r = results[i]!;
      assert.notEqual(r.code, 0, `${c.name}: exit code\n${r.output}`);
      assert.ok(!r.stderr.includes("    at "), `${c.name}: no stack trace:\n${r.stderr}`);
      const lines = messageLines(r.stderr);
      assert.equal(lines.length, 1, `${c.name}: one message line:\n${r.stderr}`);
      for (const n of c.names) assert.ok(lines[0]!.includes(n), `${c.name}: should name ${n}:\n${r.stderr}`);
      if (c.store !== undefined) assert.equal(existsSync(c.store), false, `${c.name}: created its --store`);
    });
    // The validator whose store was asked for is unharmed.
    assert.equal(validators[0]!.proc.exit, undefined, "validator-0 still running");
  });
});
