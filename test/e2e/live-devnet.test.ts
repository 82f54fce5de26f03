/**
 * A live devnet, every part its own process: `dagsync devnet` generates a 4-validator, 2-epoch
 * chain; 4 `dagsync serve --live` validators keep producing rounds in real time and gossip them
 * over the authenticated live channel (wired as src/devnet/demo.ts does: --gossip-listen,
 * --network-key, --allow-key for the full node's key, --follower for its sync address); a full node
 * (`dagsync sync --network-key --gossip-listen --listen`) catches up from genesis and follows.
 *
 * The test process only observes, over gRPC: it samples the node's Admin/GetStatus against the
 * validators' GetCommitAvailability (lag), and times each new commit from its first delivery on a
 * validator's SubscribeCommits stream (a validator feeds it right after applying the commit) to
 * its delivery on the node's SubscribeCommits stream.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { PeerClient } from "../../src/client/index.js";
import { bytesEqual, parseCommit, toHex, verifyBlocksAgainstRefs } from "../../src/core/index.js";
import { writeKeyFile } from "../../src/crypto/key-file.js";
import { Ed25519Signer } from "../../src/crypto/keys.js";
import type { DevnetSummary } from "../../src/devnet/write.js";
import {
  freePort,
  metricSum,
  type Proc,
  ProcGroup,
  scrapeMetrics,
  waitServing,
  waitUntil,
} from "../helpers/e2e-process.js";

const VALIDATORS = 4;
const EPOCHS = 2;
const COMMITS_PER_EPOCH = 20;
/** Live round interval of the validators (their default); a round commits at most one leader. */
const ROUND_MS = 500;
/** How long the follow phase watches the node. */
const FOLLOW_MS = 10_000;
/** The node's highest commit stays within this many commits (2.5 s of rounds) of the most advanced validator. */
const LAG_BOUND = 5;
/** Commits the validators must add during the follow phase (≤ 20 at 500 ms rounds; ≈ 15 seen). */
const MIN_GROWTH = 10;
/** Median delay from a commit to its delivery on the node's SubscribeCommits stream. */
const P50_DELIVERY_BOUND_MS = 1_500;
/** Interval of the lag samples (the node's Admin/GetStatus against the validators' heights). */
const SAMPLE_MS = 200;

const group = new ProcGroup();
let root: string;
let summary: DevnetSummary;
let node: Proc;
/** The long-running processes: 4 validators and the full node. */
const running: Proc[] = [];
/** Setup phases and their durations, reported by the first test. */
const phases: string[] = [];
let nodeAddress: string;
let nodeMetrics: string;
let validatorClients: PeerClient[] = [];
let nodeClient: PeerClient;

/** A base port with `count` consecutive ports free on 127.0.0.1, below the ephemeral range. */
async function freePortRange(count: number): Promise<number> {
  const canBind = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + 2 * Math.floor(Math.random() * 6_000);
    let ok = true;
    for (let p = base; p < base + count && ok; p++) ok = await canBind(p);
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

/** Runs a CLI command to completion; fails with its output unless it exits 0. */
async function cli(name: string, args: readonly string[]): Promise<string> {
  const p = group.cli(name, args);
  const exit = await p.wait(60_000);
  assert.equal(exit.code, 0, `${name} failed\n${p.output()}`);
  return p.stdout();
}

/** The most advanced validator's highest commit (validators that do not answer are skipped). */
async function validatorsHighest(): Promise<number> {
  const answers = await Promise.allSettled(validatorClients.map((c) => c.getCommitAvailability()));
  const heights = answers.flatMap((a) => (a.status === "fulfilled" ? [a.value.highest] : []));
  assert.ok(heights.length > 0, "no validator answers GetCommitAvailability");
  return Math.max(...heights);
}

async function nodeHighest(): Promise<number> {
  return Number((await nodeClient.getStatus()).highestSyncedCommit);
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

before(async () => {
  let mark = performance.now();
  const phase = (name: string) => {
    phases.push(`${name} ${((performance.now() - mark) / 1000).toFixed(1)} s`);
    mark = performance.now();
  };
  root = await mkdtemp(join(tmpdir(), "dagsync-live-devnet-"));
  const base = await freePortRange(2 * VALIDATORS);
  const dir = join(root, "devnet");
  const nodeKeyFile = join(root, "fullnode-network.key");
  // The full node's network key, admitted by the validators' gossip ports (as demo.ts makes it).
  const nodeSigner = Ed25519Signer.generate();
  await writeKeyFile(nodeKeyFile, nodeSigner);
  const nodeKey = toHex(nodeSigner.publicKey);
  await cli("devnet", [
    "devnet",
    ...["--out", dir, "--validators", String(VALIDATORS), "--epochs", String(EPOCHS)],
    ...["--commits-per-epoch", String(COMMITS_PER_EPOCH), "--txs-per-block", "4", "--tx-bytes", "128"],
    ...["--base-port", String(base), "--seed", "23"],
  ]);
  phase("devnet");
  summary = JSON.parse(await readFile(join(dir, "devnet.json"), "utf8")) as DevnetSummary;
  assert.equal(summary.validators.length, VALIDATORS);
  assert.equal(summary.commits, EPOCHS * COMMITS_PER_EPOCH);

  const [listenPort, gossipPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
  nodeAddress = `127.0.0.1:${listenPort}`;
  nodeMetrics = `127.0.0.1:${metricsPort}`;

  const validators = summary.validators.map((v) =>
    group.cli(
      `validator-${v.index}`,
      [
        "serve",
        ...["--store", v.store, "--listen", v.syncAddress],
        ...["--gossip-listen", v.gossipAddress, "--network-key", v.networkKeyFile, "--allow-key", nodeKey],
        ...["--live", dir, "--index", String(v.index), "--round-ms", String(ROUND_MS)],
        ...["--follower", nodeAddress],
      ],
      { DAGSYNC_LOG_LEVEL: "warn" },
    ),
  );
  running.push(...validators);
  await Promise.all(summary.validators.map((v, i) => waitServing(v.syncAddress, validators[i]!, 45_000)));
  phase("validators up");
  validatorClients = summary.validators.map(
    (v) => new PeerClient(v.syncAddress, { smallCallTimeoutMs: 2_000 }),
  );

  node = group.cli(
    "full-node",
    [
      "sync",
      ...["--store", join(root, "fullnode"), "--genesis", summary.genesisFile],
      ...summary.validators.flatMap((v) => ["--peer", v.syncAddress]),
      ...["--listen", nodeAddress, "--metrics", nodeMetrics],
      ...["--network-key", nodeKeyFile, "--gossip-listen", `127.0.0.1:${gossipPort}`],
    ],
    { DAGSYNC_LOG_LEVEL: "warn" },
  );
  running.push(node);
  await waitServing(nodeAddress, node, 45_000);
  phase("full node up");
  nodeClient = new PeerClient(nodeAddress, { smallCallTimeoutMs: 2_000 });
});

after(async () => {
  for (const c of validatorClients) c.close();
  nodeClient?.close();
  // The node first, so that its gossip streams are gone when the validators drain.
  await node?.stop();
  await group.stopAll();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

/** Adds the tail of every process's stderr to a failure. */
async function withOutput<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    const tail = (p: Proc) =>
      `--- ${p.name} (${p.exit === undefined ? "running" : `exited ${JSON.stringify(p.exit)}`}) stderr ---\n${p.stderr().slice(-2_000)}`;
    if (e instanceof Error) e.message = `${e.message}\n${running.map(tail).join("\n")}`;
    throw e;
  }
}

describe("live devnet: 4 validator processes and a full node process", () => {
  test("the full node catches up from genesis past the generated chain", async (t) => {
    t.diagnostic(`setup: ${phases.join(", ")}`);
    await withOutput(async () => {
      const target = await validatorsHighest();
      assert.ok(target >= EPOCHS * COMMITS_PER_EPOCH, `validators at ${target}`);
      const reached = await waitUntil(
        async () => {
          const h = await nodeHighest();
          return h >= target ? h : undefined;
        },
        `the full node to reach commit ${target}`,
        30_000,
        SAMPLE_MS,
      );
      assert.ok(reached >= target);
      const s = await nodeClient.getStatus();
      assert.equal(s.chainId, summary.chainId);
      assert.equal(Buffer.from(s.genesisDigest).toString("hex"), summary.genesisDigest);
      assert.equal(s.role, "full");
      assert.equal(s.lowestAvailableCommit, 1n, "synced from genesis");
      assert.equal(s.epoch, BigInt(EPOCHS), "past both generated epochs, in the live one");
      assert.deepEqual(
        s.peers.map((p) => p.address).sort(),
        summary.validators.map((v) => v.syncAddress).sort(),
      );
    });
  });

  test(`following for ${FOLLOW_MS / 1000} s: lag ≤ ${LAG_BOUND} commits, the chain grows, SubscribeCommits p50 ≤ ${P50_DELIVERY_BOUND_MS} ms`, async (t) => {
    await withOutput(async () => {
      const ac = new AbortController();
      // Commit time: when the first validator's own SubscribeCommits stream delivers the commit to
      // this process (a validator feeds its stream right after applying). Only commits made after
      // every stream is open are timed.
      const committed = new Map<number, number>();
      const delivered = new Map<number, number>();
      const streamErrors: unknown[] = [];
      const follow = async (
        client: PeerClient,
        from: number,
        onSubDag: (
          index: number,
          at: number,
          blocks: Uint8Array[],
          refs: ReturnType<typeof parseCommit>,
        ) => void,
      ) => {
        try {
          for await (const m of client.subscribeCommits(from, ac.signal)) {
            const at = performance.now();
            const entry = parseCommit(m.commit);
            onSubDag(entry.index, at, m.blocks, entry);
          }
        } catch (e) {
          if (!ac.signal.aborted) streamErrors.push(e);
        }
      };
      const startHighest = await validatorsHighest();
      const timedFrom = startHighest + 1;
      const validatorStreams = validatorClients.map((c) =>
        follow(c, timedFrom, (index, at) => {
          if (!committed.has(index)) committed.set(index, at);
        }),
      );
      // The node's stream starts where the node is, and must be contiguous from there.
      const from = (await nodeHighest()) + 1;
      const streamed: number[] = [];
      const nodeStream = follow(nodeClient, from, (index, at, blocks, entry) => {
        delivered.set(index, at);
        streamed.push(index);
        const checked = verifyBlocksAgainstRefs(entry.commit.blocks, blocks);
        if (checked.error !== undefined)
          streamErrors.push(new Error(`sub-DAG ${index}: ${checked.error.message}`));
      });

      // Lag samples: the node's Admin/GetStatus and every validator's availability, asked together.
      const lags: number[] = [];
      let tip = startHighest;
      let stop = false;
      const sampler = (async () => {
        while (!stop) {
          const started = performance.now();
          const [highest, mine] = await Promise.all([
            validatorsHighest().catch(() => undefined),
            nodeHighest().catch(() => undefined),
          ]);
          if (highest !== undefined) tip = Math.max(tip, highest);
          if (highest !== undefined && mine !== undefined) lags.push(highest - mine);
          await new Promise((r) => setTimeout(r, Math.max(0, SAMPLE_MS - (performance.now() - started))));
        }
      })();

      await new Promise((r) => setTimeout(r, FOLLOW_MS));
      stop = true;
      await sampler;
      const last = tip;
      // The last commits reach the node's stream too.
      await waitUntil(
        () => delivered.has(last) || streamErrors.length > 0,
        `commit ${last} on the node's SubscribeCommits stream`,
        10_000,
      ).catch(() => undefined);
      ac.abort();
      await Promise.all([nodeStream, ...validatorStreams]);

      const latencies = [...committed.entries()]
        .filter(([i]) => delivered.has(i))
        .map(([i, at]) => delivered.get(i)! - at)
        .sort((a, b) => a - b);
      const sortedLags = [...lags].sort((a, b) => a - b);
      const growth = tip - startHighest;
      const p50 = percentile(latencies, 0.5);
      const report =
        `validators ${startHighest} → ${tip} (+${growth}) in ${FOLLOW_MS / 1000} s; ` +
        `node lag over ${lags.length} samples: p50 ${percentile(sortedLags, 0.5)}, max ${sortedLags.at(-1)} (bound ${LAG_BOUND}); ` +
        `node streamed ${streamed.length} sub-DAGs; delivery after commit over ${latencies.length}: ` +
        `p50 ${Math.round(p50)} ms, p90 ${Math.round(percentile(latencies, 0.9))} ms, max ${Math.round(latencies.at(-1) ?? Number.NaN)} ms ` +
        `(bound p50 ${P50_DELIVERY_BOUND_MS} ms)`;
      t.diagnostic(report);

      assert.deepEqual(streamErrors.map(String), [], "a SubscribeCommits stream failed");
      assert.ok(growth >= MIN_GROWTH, `the chain grew by ${growth} commits, < ${MIN_GROWTH}: ${report}`);
      assert.ok(lags.length >= FOLLOW_MS / SAMPLE_MS / 4, `only ${lags.length} lag samples: ${report}`);
      assert.ok(
        sortedLags.at(-1)! <= LAG_BOUND,
        `the node fell ${sortedLags.at(-1)} commits behind (bound ${LAG_BOUND}): ${report}`,
      );
      assert.deepEqual(
        streamed,
        Array.from({ length: streamed.length }, (_, i) => from + i),
        "the node's SubscribeCommits stream has a gap or a duplicate",
      );
      assert.ok((streamed.at(-1) ?? 0) >= last, `the node's stream stopped at ${streamed.at(-1)} of ${last}`);
      assert.ok(latencies.length >= MIN_GROWTH, `only ${latencies.length} commits timed: ${report}`);
      assert.ok(p50 <= P50_DELIVERY_BOUND_MS, `median delivery ${Math.round(p50)} ms: ${report}`);
    });
  });

  test("the node holds each validator's chain, and live blocks reached it over the gossip channel", async (t) => {
    await withOutput(async () => {
      const h = await nodeHighest();
      // The last 10 commits both hold, byte for byte, for every validator (they differ in height).
      for (const [v, client] of validatorClients.entries()) {
        const end = Math.min(h, (await client.getCommitAvailability()).highest);
        const start = Math.max(1, end - 9);
        const [mine, theirs] = await Promise.all([
          nodeClient.fetchCommits(start, end),
          client.fetchCommits(start, end),
        ]);
        assert.equal(mine.commits.length, end - start + 1, `node: commits ${start}..${end}`);
        assert.equal(theirs.commits.length, end - start + 1, `validator ${v}: commits ${start}..${end}`);
        mine.commits.forEach((c, i) => {
          assert.ok(bytesEqual(c, theirs.commits[i]!), `commit ${start + i} differs from validator ${v}'s`);
        });
      }
      const metrics = await scrapeMetrics(nodeMetrics);
      const peers = metricSum(metrics, "dagsync_gossip_peers");
      const blocks = metricSum(metrics, "dagsync_gossip_items_delivered_total", { lane: "broadcast" });
      t.diagnostic(`node: ${peers} gossip sessions, ${blocks} blocks received on the BROADCAST lane`);
      // It dials every validator; one may be between reconnects.
      assert.ok(peers >= VALIDATORS - 1, `the node has ${peers} gossip sessions of ${VALIDATORS}`);
      assert.ok(blocks > 0, "no block arrived over the gossip BROADCAST lane");
      // Every process is still running.
      for (const p of running) assert.equal(p.exit, undefined, `${p.name} exited`);
    });
  });
});
