/**
 * A full node (`dagsync sync`, a real child process) among hostile peers: real gRPC servers on
 * loopback that serve a real devnet store but each corrupt one thing (test/helpers/adversary.ts),
 * one honest peer, and one peer of another chain.
 *
 * The engine picks peers at random among those it may use, so to make every culprit certain to be
 * asked for what it corrupts, peers start dormant (advertising an empty store, like a validator
 * still restoring) and are woken one at a time: while a culprit is the only peer that can serve,
 * the node must ask it. A peer that sends invalid data is banned for it, with its verification code.
 * Stalling and refusing are not evidence (DESIGN §4 item 7): a staller's calls run into their
 * deadline and the node backs off from it (consecutive failures, never a ban), reporting itself
 * "stalled" while the staller is its only source; a height liar, which refuses a commit it
 * advertises, is asked its heights again and its heights above the refused commit are then
 * ignored for a while — again no ban. The honest peer (and the height liar, whose lie only shows
 * once the real chain is synced) wake last, and the node must then finish the chain.
 *
 * Checked over the node's own interfaces while it runs: Admin/GetStatus on --listen and the
 * Prometheus metrics on --metrics; after it stops: its LevelDB holds exactly the honest chain.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { PeerClient } from "../../src/client/index.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import type { GetStatusResponse, PeerStatus } from "../../src/gen/dagsync/v1/admin_pb.js";
import { CommitRefSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import { WireFetchBlocksResponseSchema } from "../../src/gen/dagsync/wire/v1/wire_pb.js";
import { Store } from "../../src/store/index.js";
import { type Adversary, type Corruption, startAdversary } from "../helpers/adversary.js";
import {
  ExitedError,
  freePort,
  logRecords,
  metricLabels,
  metricSum,
  type Proc,
  ProcGroup,
  scrapeMetrics,
  waitServing,
  waitUntil,
} from "../helpers/e2e-process.js";
import { splitTableKey, withRawStore } from "../helpers/raw-store.js";
import { type DevnetFixture, makeDevnet, removeDir, tempDir } from "../helpers/server.js";

const DEVNET = { validators: 4, epochs: 3, commitsPerEpoch: 200, txsPerBlock: 2, txBytes: 64, seed: 21 };
const COMMITS = DEVNET.epochs * DEVNET.commitsPerEpoch;

interface Culprit {
  readonly label: string;
  readonly corruption: Corruption;
  /**
   * The code the node must ban it with (the `reason` label of dagsync_peer_bans_total), or
   * undefined for a culprit whose fault is not evidence (stalling, refusing): never banned.
   */
  readonly ban: string | undefined;
  /** The call it must have been asked for, to be caught. */
  readonly rpc: "FetchCommits" | "FetchBlocks" | "GetCommitAvailability";
}

/** The culprits, in the order they are woken. */
const CULPRITS: readonly Culprit[] = [
  // While every commit batch is still to fetch: the staller holds FetchCommits until their
  // deadline. Not banned: it backs off, and the node says it is stalled (unreachable).
  { label: "stall-commits", corruption: "stall", ban: undefined, rpc: "FetchCommits" },
  { label: "broken-link", corruption: "broken_link", ban: "broken_link", rpc: "FetchCommits" },
  { label: "forged-votes", corruption: "forged_votes", ban: "bad_signature", rpc: "FetchCommits" },
  { label: "few-votes", corruption: "few_votes", ban: "missing_quorum", rpc: "FetchCommits" },
  { label: "wrong-epoch-votes", corruption: "wrong_epoch_votes", ban: "wrong_epoch", rpc: "FetchCommits" },
  { label: "oversized", corruption: "oversized", ban: "invalid_data", rpc: "FetchCommits" },
  // Honest commits, tampered blocks: it is asked for the blocks of the batches it verified.
  { label: "tampered-blocks", corruption: "tampered_blocks", ban: "digest_mismatch", rpc: "FetchBlocks" },
  // The blocks the tamperer left unfetched now come first: this (fresh) staller is asked
  // FetchBlocks before the first one, which is in backoff. Not banned either.
  { label: "stall-blocks", corruption: "stall", ban: undefined, rpc: "FetchBlocks" },
  // Woken with the honest peer: only it claims commits past the chain, and it refuses them.
  // Not banned: its heights above the refused commit are ignored for a while.
  { label: "height-lie", corruption: "height_lie", ban: undefined, rpc: "GetCommitAvailability" },
];

/** Culprits that must end banned. */
const BANNED = CULPRITS.filter((c) => c.ban !== undefined);

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

let root: string;
let devnet: DevnetFixture;
let otherDevnet: DevnetFixture;
let honestStore: Store;
let otherStore: Store;
let keys: DevnetChain["keysByEpoch"];
const adversaries: Adversary[] = [];
const procs = new ProcGroup();

before(async () => {
  root = await tempDir("dagsync-adversarial-");
  [devnet, otherDevnet] = await Promise.all([
    makeDevnet(DEVNET),
    makeDevnet({ validators: 4, epochs: 1, commitsPerEpoch: 20, txsPerBlock: 1, txBytes: 16, seed: 22 }),
  ]);
  // The devnet's signing keys of every epoch, for the wrong-epoch votes.
  const chain = new DevnetChain(devnet.summary.options);
  for (const _ of chain.commits());
  keys = chain.keysByEpoch;
  honestStore = await Store.open(devnet.storePath(0));
  otherStore = await Store.open(otherDevnet.storePath(0));
  assert.equal(honestStore.watermarks.highestSynced, COMMITS);
});

after(async () => {
  await procs.stopAll(2_000);
  await Promise.all(adversaries.map((a) => a.stop()));
  await honestStore?.close().catch(() => {});
  await otherStore?.close().catch(() => {});
  await Promise.all([devnet?.remove(), otherDevnet?.remove(), root && removeDir(root)]);
});

/** `dagsync sync` on free ports, up and answering on --listen. */
async function startNode(
  name: string,
  store: string,
  peers: readonly string[],
  extra: readonly string[] = [],
): Promise<{ proc: Proc; listen: string; metrics: string }> {
  let last: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const listen = `127.0.0.1:${await freePort()}`;
    const metrics = `127.0.0.1:${await freePort()}`;
    const args = ["sync", "--store", store, "--genesis", devnet.summary.genesisFile];
    for (const p of peers) args.push("--peer", p);
    // The scenario is "among these peers only": the devnet committee's addresses stay out.
    args.push("--no-discovery", "--listen", listen, "--metrics", metrics, ...extra);
    const proc = procs.cli(name, args);
    try {
      await waitServing(listen, proc, 30_000);
      return { proc, listen, metrics };
    } catch (e) {
      last = e;
      await proc.stop(1_000);
      if (!(e instanceof ExitedError)) break; // a port taken meanwhile: try others
    }
  }
  throw last instanceof Error ? last : new Error(String(last));
}

/** Every key/value of a store, grouped by table (sublevel, and the blocks database), keys as hex. */
async function readTables(path: string): Promise<Map<string, Map<string, Uint8Array>>> {
  return withRawStore(path, async ({ chain, blocks }) => {
    const tables = new Map<string, Map<string, Uint8Array>>();
    const blockRows = new Map<string, Uint8Array>();
    for await (const [key, value] of blocks.iterator()) blockRows.set(hex(key), value);
    tables.set("blocks", blockRows);
    for await (const [key, value] of chain.iterator()) {
      const split = splitTableKey(key);
      assert.ok(split !== undefined, `unexpected top-level key ${hex(key)} in ${path}`);
      const t = tables.get(split.table) ?? new Map<string, Uint8Array>();
      tables.set(split.table, t);
      t.set(hex(split.key), value);
    }
    return tables;
  });
}

/**
 * The node's store holds exactly the honest chain: every table but `certifiers` is byte-equal
 * to the honest validator's (commits, blocks, committees, epoch ends, genesis and watermarks);
 * the certifier blocks the node kept (those of each batch's last commit) are among the honest ones.
 */
async function assertSameChain(nodeStore: string, honestPath: string): Promise<void> {
  const [mine, theirs] = await Promise.all([readTables(nodeStore), readTables(honestPath)]);
  assert.deepEqual(
    [...mine.keys()].sort(),
    [...theirs.keys()].sort(),
    "the node's store has the same tables as the honest one",
  );
  for (const [name, table] of theirs) {
    const got = mine.get(name)!;
    if (name === "certifiers") {
      assert.ok(got.size > 0, "the node kept certifier blocks");
      for (const [key, value] of got) {
        const honest = table.get(key);
        assert.ok(honest !== undefined, `certifiers at ${key}: the honest store has none there`);
        const honestBlocks = new Set(fromBinary(WireFetchBlocksResponseSchema, honest).blocks.map(hex));
        for (const b of fromBinary(WireFetchBlocksResponseSchema, value).blocks)
          assert.ok(honestBlocks.has(hex(b)), `certifiers at ${key}: a block the honest chain lacks`);
      }
      continue;
    }
    assert.equal(
      got.size,
      table.size,
      `table ${name}: ${got.size} entries, the honest store has ${table.size}`,
    );
    for (const [key, value] of table) {
      const mineValue = got.get(key);
      assert.ok(mineValue !== undefined, `table ${name}: key ${key} is missing`);
      assert.equal(hex(mineValue), hex(value), `table ${name}: key ${key} differs from the honest chain`);
    }
  }
}

function peerOf(status: GetStatusResponse, address: string): PeerStatus {
  const p = status.peers.find((x) => x.address === address);
  assert.ok(p !== undefined, `GetStatus lists no peer ${address}: ${status.peers.map((x) => x.address)}`);
  return p;
}

describe("a full node among hostile peers", () => {
  test("bans each peer that sends invalid data (GetStatus and metrics), backs off from stallers and doubts a height liar without banning them, ignores another chain, and stores only the honest chain", async () => {
    const started = performance.now();
    const culprits = await Promise.all(
      CULPRITS.map(async (c) => {
        const a = await startAdversary({ store: honestStore, corruption: c.corruption, dormant: true, keys });
        adversaries.push(a);
        return { ...c, adversary: a };
      }),
    );
    const honest = await startAdversary({ store: honestStore, corruption: "none", dormant: true });
    const other = await startAdversary({ store: otherStore, corruption: "none" });
    adversaries.push(honest, other);
    const byAddress = new Map<string, string>([
      [honest.address, "honest"],
      [other.address, "other-genesis"],
      ...culprits.map((c) => [c.adversary.address, c.label] as [string, string]),
    ]);
    const name = (address: string) => byAddress.get(address) ?? address;

    const nodeStore = join(root, "node-store");
    const node = await startNode("sync-node", nodeStore, [
      honest.address,
      ...culprits.map((c) => c.adversary.address),
      other.address,
    ]);
    const client = new PeerClient(node.listen, { smallCallTimeoutMs: 5_000 });
    try {
      const status = () => client.getStatus();
      const describeStatus = (s: GetStatusResponse) =>
        `highest ${s.highestSyncedCommit}, state ${s.syncState}, peers:\n${s.peers
          .map(
            (p) =>
              `  ${name(p.address)}: highest ${p.highest} banned ${p.banned} (${p.banCount}) offChain ${p.offChain} ${p.lastError}`,
          )
          .join("\n")}`;
      /** Makes the node ask every peer for its height now (a PushCommit hint; never trusted). */
      const hint = () =>
        client.pushCommit(create(CommitRefSchema, { index: 1n, digest: honestStore.genesis.digest }), 1);
      const waitStatus = async (
        what: string,
        check: (s: GetStatusResponse) => boolean,
        timeoutMs = 20_000,
      ) => {
        let last: GetStatusResponse | undefined;
        try {
          return await waitUntil(
            async () => {
              if (node.proc.exit !== undefined) throw new ExitedError("the node exited");
              last = await status();
              return check(last) ? last : undefined;
            },
            what,
            timeoutMs,
            100,
          );
        } catch (e) {
          throw new Error(
            `${(e as Error).message}\n${last === undefined ? "" : describeStatus(last)}\n${node.proc.output().slice(-6000)}`,
          );
        }
      };

      // Nothing to fetch yet: every peer of this chain advertises an empty store; the other
      // chain's peer is recognized by its genesis and marked off-chain.
      const first = await waitStatus("the first height round", (s) => peerOf(s, other.address).offChain);
      assert.equal(first.highestSyncedCommit, 0n);
      assert.equal(peerOf(first, honest.address).offChain, false);

      // One culprit at a time: while it is the only peer that can serve, the node must ask it.
      for (const c of culprits.filter((x) => x.corruption !== "height_lie")) {
        const before = await status();
        c.adversary.activate();
        await hint();
        let s: GetStatusResponse;
        if (c.ban !== undefined) {
          s = await waitStatus(`${c.label} to be banned`, (x) => peerOf(x, c.adversary.address).banned);
          const p = peerOf(s, c.adversary.address);
          assert.ok(p.banCount >= 1 && p.bannedUntilMs > BigInt(Date.now()), `${c.label}: ${p.lastError}`);
          const text = await scrapeMetrics(node.metrics);
          assert.ok(
            metricSum(text, "dagsync_peer_bans_total", { peer: c.adversary.address, reason: c.ban }) >= 1,
            `${c.label}: banned for ${c.ban}, metrics say ${[
              ...metricLabels(text, "dagsync_peer_bans_total", "reason", { peer: c.adversary.address }),
            ]}`,
          );
        } else {
          // A staller: its held call runs into its deadline, and the node backs off from it.
          s = await waitStatus(`${c.label}'s ${c.rpc} to run into its deadline`, (x) => {
            const p = peerOf(x, c.adversary.address);
            return p.consecutiveFailures >= 1 && new RegExp(`${c.rpc}: .*deadline`).test(p.lastError);
          });
          await waitUntil(
            () => c.adversary.stats.stallsCancelled >= 1,
            `the node to give up on ${c.label}'s call`,
          );
          const p = peerOf(s, c.adversary.address);
          assert.deepEqual(
            { banned: p.banned, banCount: p.banCount, offChain: p.offChain },
            { banned: false, banCount: 0, offChain: false },
            `${c.label}: stalling is not evidence (${p.lastError})`,
          );
          const text = await scrapeMetrics(node.metrics);
          assert.equal(metricSum(text, "dagsync_peer_bans_total", { peer: c.adversary.address }), 0);
          assert.ok(
            metricSum(text, "dagsync_peer_errors_total", { peer: c.adversary.address, kind: "deadline" }) >=
              1,
            `${c.label}: a deadline counted`,
          );
          if (c.rpc === "FetchCommits") {
            // Its only source stalls: the node says so (Admin, metric), and is not "synced".
            const stalled = await waitStatus(
              "the node to report itself stalled (unreachable)",
              (x) => x.syncState === "stalled",
            );
            assert.match(stalled.stallReason, /^unreachable: no peer can serve commit 1 \(/);
            assert.ok(stalled.stallReason.includes(c.adversary.address), stalled.stallReason);
            assert.ok(stalled.stalledSinceMs > 0n && stalled.stalledSinceMs <= BigInt(Date.now()));
            const m = await scrapeMetrics(node.metrics);
            assert.equal(metricSum(m, "dagsync_sync_stalled", { reason: "unreachable" }), 1);
            assert.equal(metricSum(m, "dagsync_sync_stalled"), 1, "one stall reason at a time");
          }
        }
        assert.ok(c.adversary.stats.calls[c.rpc] > 0, `${c.label} was asked ${c.rpc}`);
        assert.ok(c.adversary.stats.corrupted > 0, `${c.label} served something corrupt`);
        // Nobody else was banned meanwhile, and nothing went backwards.
        for (const q of s.peers)
          if (q.address !== c.adversary.address)
            assert.equal(
              q.banned,
              peerOf(before, q.address).banned,
              `${name(q.address)} while testing ${c.label}`,
            );
        assert.ok(s.highestSyncedCommit >= before.highestSyncedCommit);
        assert.ok(s.highestSyncedCommit < BigInt(COMMITS), "culprits alone cannot complete the chain");
      }

      // The honest peer and the height liar wake: the node completes the chain from them; the
      // liar refuses the commit past the chain's end that it advertises, is asked its heights
      // again, and its heights above that commit are then ignored (no ban).
      // The honest peer wakes first and must be used; then the liar. (Woken together, which of the
      // two serves the rest depended on backoffs and timing: on a busy machine the liar, which
      // serves real commits too, sometimes served it all.)
      const liar = culprits.find((c) => c.corruption === "height_lie")!.adversary;
      honest.activate();
      await hint();
      await waitStatus(
        "the node to fetch from the honest peer",
        () => honest.stats.calls.FetchCommits + honest.stats.calls.FetchBlocks > 0,
      );
      liar.activate();
      await hint();
      const refused = new RegExp(
        `^refused commit ${COMMITS + 1}, which it advertises \\(1\\.\\.${COMMITS + 500}\\)`,
      );
      const done = await waitStatus(
        "the node to sync the whole chain and doubt the height liar",
        (s) =>
          s.highestSyncedCommit === BigInt(COMMITS) &&
          s.syncState === "synced" &&
          refused.test(peerOf(s, liar.address).lastError),
        40_000,
      );

      // Admin/GetStatus: the culprits that sent invalid data banned; the stallers and the liar
      // not (backed off / doubted); the honest peer untouched; the other chain off-chain only.
      assert.equal(done.highestVerifiedCommit, BigInt(COMMITS));
      assert.equal(done.targetCommit, BigInt(COMMITS), "the liar's claim above the chain is ignored");
      assert.equal(done.epoch, BigInt(honestStore.watermarks.epoch));
      assert.equal(done.role, "full");
      assert.equal(done.stallReason, "", "no stall reason once synced");
      assert.equal(done.stalledSinceMs, 0n);
      for (const c of culprits) {
        const p = peerOf(done, c.adversary.address);
        assert.equal(p.banned, c.ban !== undefined, `${c.label} banned: ${describeStatus(done)}`);
        if (c.ban === undefined) assert.equal(p.banCount, 0, `${c.label} was never banned`);
        assert.equal(p.offChain, false, c.label);
        assert.ok(p.lastError.length > 0, `${c.label} has a last error`);
      }
      for (const staller of culprits.filter((c) => c.corruption === "stall")) {
        // No fetch of theirs ever succeeded: the failure streak is still on.
        const p = peerOf(done, staller.adversary.address);
        assert.ok(
          p.consecutiveFailures >= 1,
          `${staller.label}: ${p.consecutiveFailures} consecutive failures`,
        );
        assert.match(p.lastError, /deadline/, staller.label);
        assert.equal(p.highest, BigInt(COMMITS), `${staller.label}'s heights are still believed`);
      }
      const l = peerOf(done, liar.address);
      assert.equal(l.highest, BigInt(COMMITS), "the liar's heights above the refused commit are ignored");
      assert.ok(liar.stats.calls.FetchCommits > 0, "the liar was asked for what it claims");
      const h = peerOf(done, honest.address);
      assert.deepEqual(
        { banned: h.banned, banCount: h.banCount, offChain: h.offChain, highest: h.highest },
        { banned: false, banCount: 0, offChain: false, highest: BigInt(COMMITS) },
        `the honest peer (last error: ${h.lastError})`,
      );
      const o = peerOf(done, other.address);
      assert.equal(o.offChain, true, "the other chain's peer is off-chain");
      assert.equal(o.banned, false, "off-chain is not a ban");
      assert.equal(o.banCount, 0);
      assert.match(o.lastError, /another chain/);
      assert.equal(other.stats.calls.FetchCommits + other.stats.calls.FetchBlocks, 0, "never asked for data");
      assert.ok(other.stats.calls.GetCommitAvailability >= 1);
      // The honest peer served part of the chain (the liar and the block staller serve real commits
      // too, so which serves what varies).
      assert.ok(
        honest.stats.calls.FetchCommits + honest.stats.calls.FetchBlocks > 0,
        `honest served: ${JSON.stringify(honest.stats.calls)}`,
      );

      // Prometheus: a ban per culprit that sent invalid data, under its verification code; none
      // for the others; no stall any more.
      const text = await scrapeMetrics(node.metrics);
      assert.equal(metricSum(text, "dagsync_highest_synced_commit"), COMMITS);
      assert.equal(metricSum(text, "dagsync_commits_applied_total"), COMMITS);
      assert.equal(metricSum(text, "dagsync_banned_peers"), BANNED.length);
      assert.equal(metricSum(text, "dagsync_sync_stalled"), 0, "not stalled once synced");
      assert.equal(
        metricSum(text, "dagsync_off_chain_peers"),
        1,
        "the other-genesis peer is counted off-chain",
      );
      for (const c of culprits) {
        const reasons = metricLabels(text, "dagsync_peer_bans_total", "reason", {
          peer: c.adversary.address,
        });
        if (c.ban === undefined)
          assert.equal(
            metricSum(text, "dagsync_peer_bans_total", { peer: c.adversary.address }),
            0,
            `${c.label}: never banned, metrics say ${[...reasons]}`,
          );
        else
          assert.ok(
            metricSum(text, "dagsync_peer_bans_total", { peer: c.adversary.address, reason: c.ban }) >= 1,
            `${c.label}: banned for ${c.ban}, metrics say ${[...reasons]}`,
          );
      }
      assert.equal(metricSum(text, "dagsync_peer_bans_total", { peer: honest.address }), 0);
      assert.equal(metricSum(text, "dagsync_peer_bans_total", { peer: other.address }), 0);
      for (const staller of culprits.filter((c) => c.corruption === "stall")) {
        const deadlines = metricSum(text, "dagsync_peer_errors_total", {
          peer: staller.adversary.address,
          kind: "deadline",
        });
        assert.ok(deadlines >= 1, `${staller.label}: ${deadlines} calls ran into their deadline`);
        assert.ok(
          staller.adversary.stats.stallsCancelled >= 1,
          `${staller.label}: the node gave up on held calls`,
        );
      }
      assert.ok(
        metricSum(text, "dagsync_peer_errors_total", { peer: liar.address, kind: "unavailable_range" }) >= 1,
        "the liar's refusal is counted",
      );
      assert.equal(
        metricSum(text, "dagsync_peer_errors_total", { peer: honest.address, kind: "invalid_data" }),
        0,
      );

      // SIGTERM: a clean stop, then the store is compared with the honest one byte for byte.
      node.proc.signal("SIGTERM");
      const exit = await node.proc.wait(15_000);
      assert.equal(exit.code, 0, node.proc.output().slice(-4000));
      const log = node.proc.stderr();
      for (const c of culprits)
        assert.equal(
          log.includes(`banned peer ${c.adversary.address}`),
          c.ban !== undefined,
          `the log names the ban of ${c.label}, and only of those banned`,
        );
      const doubts = logRecords(log).filter(
        (r) => r.peer === liar.address && typeof r.msg === "string" && refused.test(r.msg),
      );
      assert.ok(doubts.length >= 1, "the log names the liar's refusal");
      await assertSameChain(nodeStore, devnet.storePath(1));
      console.log(`adversarial run: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    } finally {
      client.close();
    }
  });

  test("all at once: with every culprit and the honest peer usable from the start, --exit-when-synced ends with the honest chain", async () => {
    const started = performance.now();
    const culprits = await Promise.all(
      CULPRITS.filter((c) => c.label !== "stall-blocks").map(async (c) => {
        const a = await startAdversary({ store: honestStore, corruption: c.corruption, keys });
        adversaries.push(a);
        return { ...c, adversary: a };
      }),
    );
    const honest = await startAdversary({ store: honestStore, corruption: "none" });
    const other = await startAdversary({ store: otherStore, corruption: "none" });
    adversaries.push(honest, other);
    const nodeStore = join(root, "chaos-store");
    const node = await startNode(
      "chaos-node",
      nodeStore,
      [other.address, ...culprits.map((c) => c.adversary.address), honest.address],
      ["--exit-when-synced"],
    );
    const exit = await node.proc.wait(60_000);
    assert.equal(exit.code, 0, node.proc.output().slice(-6000));
    await assertSameChain(nodeStore, devnet.storePath(1));

    // Who was banned, and why, from the node's log (it has exited: no status to ask).
    const bans = new Map<string, Set<string>>();
    for (const r of logRecords(node.proc.stderr()))
      if (typeof r.msg === "string" && r.msg.startsWith("banned peer ")) {
        const peer = String(r.peer);
        if (!bans.has(peer)) bans.set(peer, new Set());
        bans.get(peer)!.add(String(r.code));
      }
    assert.equal(bans.has(honest.address), false, "the honest peer is never banned");
    assert.equal(bans.has(other.address), false, "the other chain's peer is not banned, just unused");
    assert.equal(other.stats.calls.FetchCommits + other.stats.calls.FetchBlocks, 0);
    for (const c of culprits) {
      const codes = bans.get(c.adversary.address);
      if (c.ban === undefined) {
        // Stalling and refusing are not evidence: never a ban, whatever the node asked them.
        assert.equal(codes, undefined, `${c.label} must not be banned (banned for ${[...(codes ?? [])]})`);
        continue;
      }
      if (codes !== undefined) assert.deepEqual([...codes], [c.ban], `${c.label} banned for ${c.ban}`);
      // A corrupt response is judged before the range it serves can be applied, so the node
      // cannot finish without having banned whoever sent one.
      if (c.adversary.stats.corrupted > 0)
        assert.ok(
          codes !== undefined,
          `${c.label} served ${c.adversary.stats.corrupted} corrupt responses and was not banned`,
        );
    }
    assert.equal(
      logRecords(node.proc.stderr()).filter(
        (r) => typeof r.msg === "string" && r.msg.startsWith("sync stalled"),
      ).length,
      0,
      "never stalled: the honest peer could always serve",
    );
    const exercised = culprits.filter((c) => c.adversary.stats.corrupted > 0).map((c) => c.label);
    console.log(
      `all-at-once run: ${((performance.now() - started) / 1000).toFixed(1)} s; culprits that served corrupt data: ${exercised.join(", ")}; banned: ${[...bans.keys()].length}`,
    );
  });
});
