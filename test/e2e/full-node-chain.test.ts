/**
 * A chain of full nodes, each syncing only from the one before it, every node a real process:
 *
 *   validators (`dagsync serve`) → A → B → C
 *
 * A syncs from genesis with `--commits-per-request 37` and serves (`sync --listen`); B starts from
 * a trusted checkpoint at commit 77 with A as its only peer and the default batch size, and serves
 * too; C starts from a checkpoint at the first commit of an epoch with B as its only peer,
 * `--commits-per-request 13` and `--exit-when-synced`. So each server holds the certifier blocks
 * of other commits than its client asks to end at, and must answer batches that end where it can
 * certify (DESIGN §3, the batch contract) — the setup of issue 10's report ("B bans A with
 * missing_quorum … and never finishes"). Every node must finish, nobody may ban anybody, and
 * every store must hold the validators' chain byte for byte over its range.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { PeerClient } from "../../src/client/index.js";
import { parseCommit, sha256 } from "../../src/core/index.js";
import type { GetStatusResponse } from "../../src/gen/dagsync/v1/admin_pb.js";
import type { CheckpointFile } from "../../src/node/checkpoint.js";
import {
  logRecords,
  metricSum,
  type Proc,
  ProcGroup,
  scrapeMetrics,
  startValidator,
  startWithMetrics,
  waitUntil,
} from "../helpers/e2e-process.js";
import { assertSameChain, checkStoreIntegrity, readGenesisBytes, withStore } from "../helpers/e2e-store.js";

const EPOCHS = 4;
const PER_EPOCH = 40;
const HIGHEST = EPOCHS * PER_EPOCH;
/** B's trusted checkpoint: inside epoch 1 (commits 41..80), as in the report. */
const B_CHECKPOINT = 77;
/** C's trusted checkpoint: the first commit of epoch 2. */
const C_CHECKPOINT = 2 * PER_EPOCH + 1;
const A_BATCH = 37;
const C_BATCH = 13;
const TIMEOUT_MS = 40_000;

const group = new ProcGroup();
let root: string;
let devnet: string;
let genesisFile: string;
let genesis: Uint8Array;
/** validator-3's store: never served, the reference chain and the checkpoints' source. */
let reference: string;
const validators: string[] = [];

const storeOf = (i: number) => join(devnet, `validator-${i}`, "store");

async function dagsync(name: string, args: readonly string[], timeoutMs = TIMEOUT_MS) {
  const p = group.cli(name, args);
  const exit = await p.wait(timeoutMs);
  return { ...exit, stdout: p.stdout(), stderr: p.stderr(), output: p.output() };
}

/** `dagsync checkpoint export --store <reference> --index N`, checked and written to a file. */
async function exportCheckpoint(index: number): Promise<string> {
  const r = await dagsync(`export-${index}`, [
    "checkpoint",
    "export",
    "--store",
    reference,
    "--index",
    String(index),
  ]);
  assert.equal(r.code, 0, r.output);
  const cp = JSON.parse(r.stdout) as CheckpointFile;
  assert.equal(cp.index, index);
  const commit = await withStore(reference, async (s) => (await s.getCommit(index))!);
  assert.equal(cp.digest, Buffer.from(sha256(commit)).toString("hex"), `checkpoint ${index} digest`);
  const file = join(root, `cp-${index}.json`);
  await writeFile(file, r.stdout);
  return file;
}

/** The indices of the commits whose certifier blocks a store holds (one per applied batch). */
async function certifiedIndices(path: string, from: number, to: number): Promise<number[]> {
  return withStore(path, async (s) => {
    const out: number[] = [];
    for (let i = from; i <= to; i++) if ((await s.getCertifiers(i)) !== undefined) out.push(i);
    return out;
  });
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), "dagsync-e2e-chain-"));
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
    "31",
  ]);
  assert.equal(gen.code, 0, `dagsync devnet failed:\n${gen.output}`);
  genesisFile = join(devnet, "genesis.pb");
  genesis = await readGenesisBytes(genesisFile);
  reference = storeOf(3);
  const started = await Promise.all(
    [0, 1, 2].map((i) => startValidator(group, `validator-${i}`, storeOf(i))),
  );
  for (const s of started) validators.push(s.address);
});

after(async () => {
  await group.stopAll();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

describe("a chain of full nodes", { timeout: 90_000 }, () => {
  test("validators → A → B → C, each syncing only from the one before it, B and C from checkpoints: all finish, nobody bans anybody, every store equals the validators'", async () => {
    const t0 = performance.now();
    // One at a time: an export holds the reference store's lock.
    const cpB = await exportCheckpoint(B_CHECKPOINT);
    const cpC = await exportCheckpoint(C_CHECKPOINT);
    const [storeA, storeB, storeC] = [join(root, "full-a"), join(root, "full-b"), join(root, "full-c")];

    // A: from genesis, from the validators, 37 commits a request; it serves what it syncs.
    const a = await startWithMetrics(group, "node-a", (listen, metrics) => [
      "sync",
      "--store",
      storeA,
      "--genesis",
      genesisFile,
      ...validators.flatMap((v) => ["--peer", v]),
      "--no-discovery",
      "--commits-per-request",
      String(A_BATCH),
      "--listen",
      listen,
      "--metrics",
      metrics,
    ]);
    // B: from commit 77, A its only peer (started while A may still be catching up).
    const b = await startWithMetrics(group, "node-b", (listen, metrics) => [
      "sync",
      "--store",
      storeB,
      "--genesis",
      genesisFile,
      "--checkpoint",
      cpB,
      "--peer",
      a.listen,
      "--no-discovery",
      "--listen",
      listen,
      "--metrics",
      metrics,
    ]);

    const clients = [new PeerClient(a.listen), new PeerClient(b.listen)];
    try {
      const synced = async (name: string, node: { proc: Proc }, client: PeerClient) => {
        let last: GetStatusResponse | undefined;
        try {
          return await waitUntil(
            async () => {
              if (node.proc.exit !== undefined) throw new Error(`${name} exited`);
              last = await client.getStatus();
              return last.highestSyncedCommit === BigInt(HIGHEST) && last.syncState === "synced"
                ? last
                : undefined;
            },
            `${name} to sync to ${HIGHEST}`,
            TIMEOUT_MS,
            100,
          );
        } catch (e) {
          const peers = last?.peers.map(
            (p) => `${p.address} banned ${p.banned} (${p.banCount}) ${p.lastError}`,
          );
          throw new Error(
            `${(e as Error).message}\nlast status: highest ${last?.highestSyncedCommit} state ${last?.syncState} ${last?.stallReason}\n${peers?.join("\n")}\n${node.proc.output().slice(-6000)}`,
          );
        }
      };
      const [statusA, statusB] = await Promise.all([
        synced("A", a, clients[0]!),
        synced("B", b, clients[1]!),
      ]);
      assert.equal(
        statusB.lowestAvailableCommit,
        BigInt(B_CHECKPOINT + 1),
        "B holds nothing below its checkpoint",
      );

      // C: from the first commit of epoch 2, B its only peer, 13 commits a request; exits once synced.
      const c = await dagsync("node-c", [
        "sync",
        "--store",
        storeC,
        "--genesis",
        genesisFile,
        "--checkpoint",
        cpC,
        "--peer",
        b.listen,
        "--no-discovery",
        "--commits-per-request",
        String(C_BATCH),
        "--exit-when-synced",
        "--max-stall",
        "20s",
      ]);
      assert.equal(c.code, 0, `C's exit code\n${c.output}\n${b.proc.output().slice(-4000)}`);
      const done = logRecords(c.stderr).find((l) => l.msg === "synced: every commit and block verified");
      assert.ok(done !== undefined, `C's final summary line\n${c.output}`);
      assert.equal(done.highest, HIGHEST);
      assert.equal(done.commits, HIGHEST - C_CHECKPOINT);

      // Nobody banned anybody: Admin/GetStatus of A and B (their peers' ban counts), their
      // metrics, and C's log.
      const expectPeers: [string, GetStatusResponse, string[]][] = [
        ["A", statusA, validators],
        ["B", statusB, [a.listen]],
      ];
      for (const [name, s, peers] of expectPeers) {
        assert.deepEqual(s.peers.map((p) => p.address).sort(), [...peers].sort(), `${name}'s peers`);
        for (const p of s.peers)
          assert.deepEqual(
            { banned: p.banned, banCount: p.banCount, offChain: p.offChain, highest: p.highest },
            { banned: false, banCount: 0, offChain: false, highest: BigInt(HIGHEST) },
            `${name}'s peer ${p.address} (last error: ${p.lastError})`,
          );
        assert.equal(s.stallReason, "", `${name} is not stalled`);
      }
      for (const [name, node] of [
        ["A", a],
        ["B", b],
      ] as const) {
        const text = await scrapeMetrics(node.metrics);
        assert.equal(metricSum(text, "dagsync_peer_bans_total"), 0, `${name}: bans counted`);
        assert.equal(metricSum(text, "dagsync_banned_peers"), 0, `${name}: banned peers`);
        assert.equal(metricSum(text, "dagsync_peer_errors_total", { kind: "invalid_data" }), 0, name);
        assert.equal(metricSum(text, "dagsync_sync_stalled"), 0, `${name}: not stalled`);
        assert.equal(metricSum(text, "dagsync_highest_synced_commit"), HIGHEST, name);
      }
      for (const [name, stderr] of [
        ["A", a.proc.stderr()],
        ["B", b.proc.stderr()],
        ["C", c.stderr],
      ] as const) {
        assert.ok(!stderr.includes("banned peer"), `${name} banned a peer:\n${stderr.slice(-4000)}`);
        assert.ok(!stderr.includes("sync stalled"), `${name} stalled:\n${stderr.slice(-4000)}`);
      }

      // A clean stop, then the stores (no process holds them any more).
      for (const node of [b, a]) {
        const exit = await node.proc.stop(10_000);
        assert.deepEqual(exit, { code: 0, signal: null }, node.proc.output().slice(-4000));
      }
    } finally {
      for (const client of clients) client.close();
    }

    const anchor = async (index: number) => ({
      index,
      digest: await withStore(reference, async (s) => sha256((await s.getCommit(index))!)),
    });
    await assertSameChain(reference, storeA, 1, HIGHEST);
    await assertSameChain(reference, storeB, B_CHECKPOINT + 1, HIGHEST);
    await assertSameChain(reference, storeC, C_CHECKPOINT + 1, HIGHEST);
    const intA = await checkStoreIntegrity(storeA, genesis);
    assert.deepEqual([intA.lowest, intA.highest, intA.epoch], [1, HIGHEST, EPOCHS]);
    const intB = await checkStoreIntegrity(storeB, genesis, await anchor(B_CHECKPOINT));
    const intC = await checkStoreIntegrity(storeC, genesis, await anchor(C_CHECKPOINT));
    assert.deepEqual([intB.lowest, intB.highest, intB.epoch], [B_CHECKPOINT + 1, HIGHEST, EPOCHS]);
    assert.deepEqual([intC.lowest, intC.highest, intC.epoch], [C_CHECKPOINT + 1, HIGHEST, EPOCHS]);
    const epochOf = await withStore(
      reference,
      async (s) => parseCommit((await s.getCommit(C_CHECKPOINT))!).epoch,
    );
    assert.equal(epochOf, 2, "C's checkpoint is in epoch 2");

    // The batch contract, as the stores show it: each node kept the certifier blocks of the last
    // commit of every batch it applied, and a server ends a batch only where it holds them. So
    // what B holds, A held; what C holds, B held. A's batches (37 a request from the validators,
    // which certify every commit) end at 37, not where C's requests (13) would.
    const [certA, certB, certC] = await Promise.all([
      certifiedIndices(storeA, 1, HIGHEST),
      certifiedIndices(storeB, B_CHECKPOINT + 1, HIGHEST),
      certifiedIndices(storeC, C_CHECKPOINT + 1, HIGHEST),
    ]);
    console.log(`certifiers held: A ${certA.join(",")}; B ${certB.join(",")}; C ${certC.join(",")}`);
    assert.ok(certA.includes(A_BATCH), `A's first batch ends at ${A_BATCH}: ${certA}`);
    assert.ok(certA.length < HIGHEST / 2, `A holds certifiers of its batches only: ${certA}`);
    for (const i of certB) assert.ok(certA.includes(i), `B holds certifiers of ${i}, which A never held`);
    for (const i of certC) assert.ok(certB.includes(i), `C holds certifiers of ${i}, which B never held`);
    // C's first request, C_CHECKPOINT+1 .. +C_BATCH, ends at the highest commit in it that B can
    // certify, or, when B certifies none there, past its end at the first one B can.
    const [start, end] = [C_CHECKPOINT + 1, C_CHECKPOINT + C_BATCH];
    const within = certB.filter((i) => i >= start && i <= end);
    const expected = within.length > 0 ? within.at(-1) : certB.find((i) => i > end);
    assert.equal(certC[0], expected, `C's first batch (asked ${start}..${end}) ends where B can certify`);
    assert.ok(
      certC.some((i) => (i - C_CHECKPOINT) % C_BATCH !== 0),
      `some batch of C ended elsewhere than its request's end: ${certC}`,
    );
    console.log(`full-node chain: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  });
});
