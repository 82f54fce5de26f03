/**
 * A node never waits silently (issue 10, DESIGN §4 item 7), every node a real process: when no
 * peer can serve the next commit, `dagsync sync` says why — Admin/GetStatus sync_state "stalled"
 * with a stall_reason, the metric dagsync_sync_stalled{reason} at 1, one warning line per reason
 * (not one per tick) — keeps retrying without banning anyone, and with `--exit-when-synced` gives
 * up after `--max-stall` with exit code 1 and one stderr line naming the reason. Cases: the only
 * peer is unreachable (a closed port); the only peer serves another chain (off_chain); both at once
 * (the most actionable reason, unreachable, is reported).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { PeerClient } from "../../src/client/index.js";
import type { GetStatusResponse } from "../../src/gen/dagsync/v1/admin_pb.js";
import {
  freePort,
  logRecords,
  metricSum,
  type Proc,
  ProcGroup,
  scrapeMetrics,
  sleep,
  startValidator,
  startWithMetrics,
  waitUntil,
} from "../helpers/e2e-process.js";
import { type DevnetFixture, makeDevnet, removeDir, tempDir } from "../helpers/server.js";

const DEVNET = { validators: 4, epochs: 1, commitsPerEpoch: 10, txsPerBlock: 1, txBytes: 16 };

const group = new ProcGroup();
let root: string;
let ours: DevnetFixture;
let theirs: DevnetFixture;
/** A validator of another chain (another seed, so another genesis), serving. */
let otherChain: string;
/** An address nothing listens on: a loopback address of its own, on a port that was free. */
let closed: string;

before(async () => {
  root = await tempDir("dagsync-e2e-stall-");
  [ours, theirs] = await Promise.all([
    makeDevnet({ ...DEVNET, seed: 41 }),
    makeDevnet({ ...DEVNET, seed: 42 }),
  ]);
  otherChain = (await startValidator(group, "other-chain", theirs.storePath(0))).address;
  closed = `127.0.0.12:${await freePort()}`;
});

after(async () => {
  await group.stopAll(2_000);
  await Promise.all([ours?.remove(), theirs?.remove(), root && removeDir(root)]);
});

/** `dagsync sync` of our chain from these peers only, with --exit-when-synced, serving on free ports. */
async function startStalling(name: string, peers: readonly string[], maxStall: string) {
  const spawnedAt = performance.now();
  const node = await startWithMetrics(group, name, (listen, metrics) => [
    "sync",
    "--store",
    join(root, name),
    "--genesis",
    ours.summary.genesisFile,
    ...peers.flatMap((p) => ["--peer", p]),
    "--no-discovery",
    "--exit-when-synced",
    "--max-stall",
    maxStall,
    "--listen",
    listen,
    "--metrics",
    metrics,
  ]);
  return { ...node, spawnedAt, servingAt: performance.now() };
}

/** The stderr lines that are not pino JSON log records. */
const messageLines = (stderr: string) =>
  stderr.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("{"));

const stallWarnings = (p: Proc) =>
  logRecords(p.stderr()).filter((r) => typeof r.msg === "string" && r.msg.startsWith("sync stalled"));

/**
 * Waits for the node to give up, and checks how: exit code 1 no sooner than `maxStallS` after it
 * was spawned and within `slackS` more once it was serving (its engine starts with its server),
 * one stderr line naming the reason, the log's one stall warning, and no ban.
 */
async function assertGaveUp(
  node: { proc: Proc; spawnedAt: number; servingAt: number },
  maxStallS: number,
  reason: string,
  slackS = 6,
): Promise<string> {
  const p = node.proc;
  const exit = await p.wait((maxStallS + slackS + 10) * 1000);
  const now = performance.now();
  const elapsed = (now - node.spawnedAt) / 1000;
  assert.deepEqual(exit, { code: 1, signal: null }, p.output());
  assert.ok(elapsed >= maxStallS, `${p.name} gave up after ${elapsed.toFixed(1)} s, before --max-stall`);
  const serving = (now - node.servingAt) / 1000;
  assert.ok(serving <= maxStallS + slackS, `${p.name} gave up only ${serving.toFixed(1)} s after it was up`);
  const lines = messageLines(p.stderr());
  assert.equal(lines.length, 1, `one message line:\n${p.stderr()}`);
  const line = lines[0]!;
  const m =
    /^dagsync: gave up after (\d+) s without a source \(([a-z_]+)\): no peer can serve commit 1 \(/.exec(
      line,
    );
  assert.ok(m !== null, line);
  assert.equal(m[2], reason, line);
  assert.ok(Number(m[1]) >= maxStallS && Number(m[1]) <= maxStallS + slackS, line);
  assert.ok(!p.stderr().includes("    at "), `no stack trace:\n${p.stderr()}`);
  const warnings = stallWarnings(p);
  assert.equal(warnings.length, 1, `one stall warning:\n${p.stderr()}`);
  assert.equal(warnings[0]!.reason, reason);
  assert.ok(!p.stderr().includes("banned peer"), `no ban:\n${p.stderr()}`);
  console.log(`${p.name}: exit 1 after ${elapsed.toFixed(1)} s (${serving.toFixed(1)} s once up): ${line}`);
  return line;
}

describe("dagsync sync when no peer can serve", { timeout: 60_000 }, () => {
  test("unreachable: stalled in Admin/GetStatus and metrics, one warning, no ban; --max-stall 3s exits 1 naming the reason", async () => {
    // Two nodes at once: one that gives up after 3 s, one watched over 10 s before it gives up.
    const [quick, watched] = await Promise.all([
      startStalling("unreachable-3s", [closed], "3s"),
      startStalling("unreachable-10s", [closed], "10s"),
    ]);
    const client = new PeerClient(watched.listen, { smallCallTimeoutMs: 2_000 });
    try {
      let last: GetStatusResponse | undefined;
      const stalled = await waitUntil(
        async () => {
          last = await client.getStatus();
          return last.syncState === "stalled" ? last : undefined;
        },
        "the node to report itself stalled",
        10_000,
        100,
      ).catch((e: Error) => {
        throw new Error(`${e.message}\n${JSON.stringify(last?.syncState)}\n${watched.proc.output()}`);
      });
      assert.match(stalled.stallReason, /^unreachable: no peer can serve commit 1 \(unreachable: /);
      assert.ok(stalled.stallReason.includes(closed), stalled.stallReason);
      assert.ok(
        stalled.stalledSinceMs > 0n && stalled.stalledSinceMs <= BigInt(Date.now()),
        "stalled_since_ms",
      );
      assert.equal(stalled.highestSyncedCommit, 0n);
      const peer = stalled.peers.find((p) => p.address === closed);
      assert.ok(peer !== undefined, `GetStatus lists ${closed}`);
      assert.deepEqual(
        { banned: peer.banned, banCount: peer.banCount, offChain: peer.offChain },
        { banned: false, banCount: 0, offChain: false },
        `an unreachable peer is not banned (${peer.lastError})`,
      );
      assert.ok(peer.consecutiveFailures >= 1, `consecutive failures: ${peer.consecutiveFailures}`);
      assert.ok(peer.lastError.length > 0, "the peer's last error");

      const text = await scrapeMetrics(watched.metrics);
      assert.equal(metricSum(text, "dagsync_sync_stalled", { reason: "unreachable" }), 1);
      assert.equal(metricSum(text, "dagsync_sync_stalled"), 1, "one reason at a time");
      assert.equal(metricSum(text, "dagsync_peer_bans_total"), 0);
      assert.equal(metricSum(text, "dagsync_banned_peers"), 0);

      // Meanwhile the first one gave up, 3 s into its stall.
      await assertGaveUp(quick, 3, "unreachable");

      // Some seconds later (several ticks and height rounds): still stalled, since the same time,
      // still retrying the peer, still one warning.
      await sleep(5_500);
      assert.equal(
        watched.proc.exit,
        undefined,
        `still running before --max-stall\n${watched.proc.output()}`,
      );
      const later = await client.getStatus();
      assert.equal(later.syncState, "stalled");
      assert.equal(later.stalledSinceMs, stalled.stalledSinceMs, "the stall is the same one");
      const laterPeer = later.peers.find((p) => p.address === closed)!;
      assert.ok(
        laterPeer.consecutiveFailures > peer.consecutiveFailures,
        `the node keeps retrying: ${peer.consecutiveFailures} → ${laterPeer.consecutiveFailures} failures`,
      );
      assert.equal(laterPeer.banCount, 0);
      assert.equal(
        stallWarnings(watched.proc).length,
        1,
        `one warning, not one per tick:\n${watched.proc.stderr()}`,
      );
      const line = await assertGaveUp(watched, 10, "unreachable");
      assert.ok(line.includes(closed), line);
    } finally {
      client.close();
    }
  });

  test("off_chain: only a peer of another chain → exits 1 with reason off_chain; with an unreachable one too → unreachable", async () => {
    const [offChain, both] = await Promise.all([
      startStalling("off-chain-3s", [otherChain], "3s"),
      startStalling("both-3s", [otherChain, closed], "3s"),
    ]);
    const line = await assertGaveUp(offChain, 3, "off_chain");
    assert.ok(line.includes(otherChain), line);
    assert.ok(
      logRecords(offChain.proc.stderr()).some(
        (r) => r.peer === otherChain && r.msg === "peer serves another chain (genesis differs): never used",
      ),
      offChain.proc.stderr(),
    );
    const mixed = await assertGaveUp(both, 3, "unreachable");
    assert.ok(mixed.includes(closed) && mixed.includes(otherChain), `both peers named: ${mixed}`);
  });
});
