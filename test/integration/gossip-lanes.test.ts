/**
 * Lanes, dedup and relay of the live channel (DESIGN.md §5), with real GossipNodes on real
 * grpc-js servers on loopback:
 * - a MEMPOOL flood at 10× the receiver's quota (from a peer in its own process) does not delay
 *   BROADCAST beyond a stated bound, nothing crashes, and the receiver drops (and counts) the excess;
 * - in a 4-node full mesh every item is delivered exactly once per node, and the relay and
 *   dedup counters add up to what "relay to every peer except the sender" implies.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { describe, type TestContext, test } from "node:test";
import type { Ed25519Signer } from "../../src/crypto/index.js";
import { Proc, ProcGroup, ROOT, waitUntil } from "../helpers/e2e-process.js";
import {
  BlockSupply,
  hex,
  metricValue,
  percentile,
  type RunningGossip,
  sleep,
  smallChain,
  startGossip,
  waitFor,
  waitForAsync,
} from "../helpers/gossip-fixture.js";

const sha256hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Stops every node (in reverse order), whatever happened. */
async function stopAll(nodes: RunningGossip[]): Promise<void> {
  for (const n of [...nodes].reverse()) await n.stop().catch(() => {});
}

describe("gossip lanes", () => {
  const BLOCKS = 200;
  const INTERVAL_MS = 5; // 200 blocks/s for 1 s: within the default BROADCAST quota (200/s, burst 400)
  const MEMPOOL_QUOTA = 100; // per second, per peer, at the receiver
  const FLOOD_PER_SECOND = 10 * MEMPOOL_QUOTA;
  const ATTEMPTS = 3;

  test(`BROADCAST p99 under a 10× MEMPOOL flood ≤ max(3 × baseline p99, baseline p99 + 50 ms), nothing crashes, drops counted`, async (t: TestContext) => {
    const { chain, committee, keys } = smallChain(31);
    const supply = new BlockSupply(chain);
    const chainId = chain.chainId;
    const nodes: RunningGossip[] = [];
    const procs = new ProcGroup();
    try {
      // B receives; A sends blocks; the flooder (validator 2, its own process) floods B's MEMPOOL.
      const b = await startGossip({
        chainId,
        key: keys[0]!.network,
        committee,
        options: { mempool: { quota: { perSecond: MEMPOOL_QUOTA, burst: MEMPOOL_QUOTA } } },
      });
      nodes.push(b);
      const a = await startGossip({ chainId, key: keys[1]!.network, committee, listen: false });
      nodes.push(a);
      a.node.dial(b.address, keys[0]!.network.publicKey);
      const flooder = procs.add(
        new Proc(
          "flooder",
          spawn(
            process.execPath,
            [
              "--import",
              "tsx",
              "test/helpers/gossip-flooder.ts",
              b.address,
              chainId,
              Buffer.from(keys[2]!.network.seed).toString("hex"),
              String(FLOOD_PER_SECOND),
            ],
            { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] },
          ),
        ),
      );
      /** Sends a command to the flooder and waits for its `count`-th `ack` line. */
      const command = async (cmd: string, ack: string, count: number) => {
        flooder.child.stdin?.write(`${cmd}\n`);
        await waitUntil(
          () => {
            if (flooder.exit !== undefined) throw new Error(`the flooder exited\n${flooder.output()}`);
            return flooder.lines().filter((l) => l === ack).length >= count;
          },
          `the flooder to answer ${ack}`,
          30_000,
          10,
        );
      };
      await command("", "ready", 1);
      await waitFor(
        () => b.node.peers().length === 2 && a.node.peers().length === 1,
        "A and the flooder connected to B",
      );

      const arrivals = new Map<string, number>();
      b.node.onBlock((entry) => {
        arrivals.set(hex(entry.digest), performance.now());
      });
      const mempool = (name: string, labels: Record<string, string> = {}) =>
        metricValue(b.registry, name, { lane: "mempool", ...labels });

      /** Publishes `n` new blocks from A at a steady rate; the delivery latency of each at B, ms. */
      const phase = async (n: number, what: string): Promise<number[]> => {
        const list = supply.take(n);
        const sent = new Map<string, number>();
        const start = performance.now();
        for (let i = 0; i < list.length; i++) {
          const wait = start + i * INTERVAL_MS - performance.now();
          if (wait > 0) await sleep(wait);
          const bytes = list[i]!;
          sent.set(sha256hex(bytes), performance.now());
          a.node.publishBlock(bytes);
        }
        await waitFor(
          () => [...sent.keys()].every((d) => arrivals.has(d)),
          `all ${list.length} blocks of the ${what} phase at B`,
          20_000,
        );
        return [...sent].map(([d, at]) => arrivals.get(d)! - at);
      };

      let floods = 0;
      const startFlood = () => command("flood", "flooding", ++floods);
      const stopFlood = () => command("pause", "paused", floods);
      /** Waits until B receives no more MEMPOOL frames (what was sent is through). */
      const floodDrained = async () => {
        let last = -1;
        await waitForAsync(
          async () => {
            const now = await mempool("dagsync_gossip_frames_received_total");
            const stable = now === last;
            last = now;
            if (!stable) await sleep(50);
            return stable;
          },
          "the flood to drain",
          10_000,
        );
      };

      // Warm up (JIT) every path the measurement takes, blocks and flood together, unmeasured.
      await startFlood();
      await waitForAsync(
        async () => (await mempool("dagsync_gossip_frames_received_total")) >= FLOOD_PER_SECOND / 4,
        "the warm-up flood",
        20_000,
      );
      await phase(BLOCKS, "warm-up");
      await stopFlood();
      await floodDrained();

      // A loaded machine can stall this process for tens of ms at any moment, in either phase;
      // a real lane problem (blocks queued behind transactions) fails every attempt.
      const report: string[] = [];
      let passed = false;
      let floodReceived = 0;
      let floodDropped = 0;
      for (let attempt = 1; attempt <= ATTEMPTS && !passed; attempt++) {
        const baseline = await phase(BLOCKS, "baseline");
        const recv0 = await mempool("dagsync_gossip_frames_received_total");
        const drop0 = await mempool("dagsync_gossip_frames_dropped_total", { reason: "quota" });
        await startFlood();
        // The flood is established: over quota at B, and a quarter second of it received.
        await waitForAsync(
          async () =>
            (await mempool("dagsync_gossip_frames_dropped_total", { reason: "quota" })) > drop0 &&
            (await mempool("dagsync_gossip_frames_received_total")) >= recv0 + FLOOD_PER_SECOND / 4,
          "the flood to exceed B's MEMPOOL quota",
          20_000,
        );
        const flooded = await phase(BLOCKS, "flood");
        await stopFlood();
        await floodDrained();
        floodReceived += (await mempool("dagsync_gossip_frames_received_total")) - recv0;
        floodDropped += (await mempool("dagsync_gossip_frames_dropped_total", { reason: "quota" })) - drop0;

        const baseP99 = percentile(baseline, 99);
        const floodP99 = percentile(flooded, 99);
        const bound = Math.max(3 * baseP99, baseP99 + 50);
        passed = floodP99 <= bound;
        report.push(
          `attempt ${attempt}: baseline p50 ${percentile(baseline, 50).toFixed(2)} p99 ${baseP99.toFixed(2)} ms; ` +
            `flood p50 ${percentile(flooded, 50).toFixed(2)} p99 ${floodP99.toFixed(2)} ms; ` +
            `bound ${bound.toFixed(2)} ms: ${passed ? "pass" : "FAIL"}`,
        );
      }
      report.push(
        `MEMPOOL at B during the floods: ${floodReceived} received, ${floodDropped} dropped over quota`,
      );
      t.diagnostic(report.join("; "));

      assert.ok(passed, `BROADCAST p99 under flood above the bound in every attempt:\n${report.join("\n")}`);
      // The flood really was over quota at B: most of it is dropped and counted.
      assert.ok(floodDropped > 0, "MEMPOOL quota drops counted during the flood");
      assert.ok(
        floodDropped >= floodReceived / 2,
        `only ${floodDropped} of ${floodReceived} MEMPOOL frames dropped: the flood was not ≥ 2× quota at B`,
      );
      // BROADCAST lost nothing, and nothing crashed or disconnected.
      assert.equal(
        await metricValue(b.registry, "dagsync_gossip_frames_dropped_total", { lane: "broadcast" }),
        0,
      );
      assert.equal(b.node.peers().length, 2, "B still has both sessions");
      assert.equal(a.node.peers().length, 1);
      assert.equal(flooder.exit, undefined, `the flooder's session ended\n${flooder.output()}`);
      assert.deepEqual(b.node.blockedPeers(), [], "a flood within the rules is not misbehaviour");
      assert.ok(
        (await mempool("dagsync_gossip_items_delivered_total")) > 0,
        "transactions within quota are still delivered",
      );
      flooder.child.stdin?.write("exit\n");
      const exit = await flooder.wait(10_000);
      assert.equal(exit.code, 0, `flooder exit ${JSON.stringify(exit)}\n${flooder.output()}`);
    } finally {
      await procs.stopAll();
      await stopAll(nodes);
    }
  });

  test("4-node full mesh: every item delivered exactly once per node; relay and dedup counters consistent", async () => {
    const { chain, committee, keys } = smallChain(32);
    const supply = new BlockSupply(chain);
    const chainId = chain.chainId;
    const N = 4;
    const BLOCKS_EACH = 10;
    const TXS_EACH = 25;
    const nodes: RunningGossip[] = [];
    try {
      const signers: Ed25519Signer[] = keys.map((k) => k.network);
      for (const key of signers) nodes.push(await startGossip({ chainId, key, committee }));
      // Each pair once: the node whose key sorts lower dials (as `dagsync serve` does).
      for (let i = 0; i < N; i++)
        for (let j = 0; j < N; j++)
          if (hex(signers[i]!.publicKey) < hex(signers[j]!.publicKey))
            nodes[i]!.node.dial(nodes[j]!.address, signers[j]!.publicKey);
      await waitFor(() => nodes.every((n) => n.node.peers().length === N - 1), "a full mesh");

      // Deliveries per digest per node.
      const counts = nodes.map(() => new Map<string, number>());
      nodes.forEach((n, i) => {
        const bump = (d: string) => counts[i]!.set(d, (counts[i]!.get(d) ?? 0) + 1);
        n.node.onBlock((b) => bump(`b${hex(b.digest)}`));
        n.node.onTransaction((tx) => bump(`t${sha256hex(tx)}`));
      });

      const origin = new Map<string, number>();
      const injected = nodes.map(() => ({
        blocks: supply.take(BLOCKS_EACH),
        txs: Array.from({ length: TXS_EACH }, () => new Uint8Array(randomBytes(40))),
      }));
      injected.forEach((items, i) => {
        for (const b of items.blocks) origin.set(`b${sha256hex(b)}`, i);
        for (const tx of items.txs) origin.set(`t${sha256hex(tx)}`, i);
      });
      const ITEMS = N * (BLOCKS_EACH + TXS_EACH);
      assert.equal(origin.size, ITEMS, "the injected items are distinct");
      injected.forEach((items, i) => {
        for (const b of items.blocks) nodes[i]!.node.publishBlock(b);
        for (const tx of items.txs) nodes[i]!.node.publishTransaction(tx);
      });

      // In a full mesh of N, relaying to every peer except the sender puts exactly
      // (N-1) + (N-1)(N-2) frames of each item on the wire: the origin sends to its N-1 peers,
      // and each other node relays once, on first sight, to its N-2 peers other than the sender.
      const sum = async (name: string, labels: Record<string, string> = {}) => {
        let s = 0;
        for (const n of nodes) s += await metricValue(n.registry, name, labels);
        return s;
      };
      const perItemFrames = N - 1 + (N - 1) * (N - 2);
      await waitForAsync(
        async () => (await sum("dagsync_gossip_frames_received_total")) >= ITEMS * perItemFrames,
        `${ITEMS * perItemFrames} frames received across the mesh`,
        20_000,
      );
      await waitFor(
        () => counts.every((c) => c.size === ITEMS - ITEMS / N),
        "every node to deliver every other node's items",
      );

      // Exactly once per node, never at the origin.
      for (let i = 0; i < N; i++)
        for (const [digest, from] of origin) {
          const got = counts[i]!.get(digest) ?? 0;
          assert.equal(got, from === i ? 0 : 1, `node ${i}: ${digest.slice(0, 12)} (from node ${from})`);
        }

      // Counters: nothing dropped; received = delivered + duplicates everywhere; totals as above.
      assert.equal(await sum("dagsync_gossip_frames_dropped_total"), 0, "no drops");
      for (const [i, n] of nodes.entries())
        for (const lane of ["broadcast", "mempool"]) {
          const m = (name: string) => metricValue(n.registry, name, { lane });
          const received = await m("dagsync_gossip_frames_received_total");
          const delivered = await m("dagsync_gossip_items_delivered_total");
          const duplicates = await m("dagsync_gossip_duplicates_total");
          const relayed = await m("dagsync_gossip_frames_relayed_total");
          const foreign = (N - 1) * (lane === "broadcast" ? BLOCKS_EACH : TXS_EACH);
          assert.equal(
            received,
            delivered + duplicates,
            `node ${i} ${lane}: received = delivered + duplicates`,
          );
          assert.equal(delivered, foreign, `node ${i} ${lane}: delivers each foreign item once`);
          assert.equal(
            relayed,
            foreign * (N - 2),
            `node ${i} ${lane}: relays each foreign item to N-2 peers`,
          );
        }
      assert.equal(await sum("dagsync_gossip_frames_received_total"), ITEMS * perItemFrames);
      assert.equal(await sum("dagsync_gossip_items_delivered_total"), ITEMS * (N - 1));
      assert.equal(await sum("dagsync_gossip_duplicates_total"), ITEMS * (perItemFrames - (N - 1)));
      // And nothing more arrives later (no echo loop).
      await sleep(200);
      assert.equal(
        await sum("dagsync_gossip_frames_received_total"),
        ITEMS * perItemFrames,
        "no late frames",
      );
      assert.ok(
        nodes.every((n) => n.node.peers().length === N - 1),
        "the mesh is intact",
      );
    } finally {
      await stopAll(nodes);
    }
  });
});
