/**
 * The lanes of the live channel (src/gossip/lanes.ts) driven by a fake clock: per-peer, per-lane
 * GCRA quotas refill with the injected `now()` only; backlogs bound frames and bytes; the
 * scheduler drains BROADCAST of every peer before MEMPOOL, a batch per turn. And the dialer's
 * reconnect delays (src/gossip/dialer.ts).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Registry } from "prom-client";
import { reconnectDelayMs } from "../../src/gossip/dialer.js";
import { encodeFrame, type Lane, parseFrame } from "../../src/gossip/frames.js";
import { type InboundItem, InboundScheduler, LaneQueues, Lanes } from "../../src/gossip/lanes.js";
import { GossipMetrics } from "../../src/gossip/metrics.js";
import { resolveGossipOptions } from "../../src/gossip/options.js";

function clock(start = 0) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

const frame = (n = 16) => {
  const bytes = encodeFrame("block", new Uint8Array(n));
  return { bytes, raw: parseFrame(bytes) };
};

interface MetricValue {
  readonly value: number;
  readonly labels: Record<string, string | number>;
  readonly metricName?: string;
}

async function values(registry: Registry, name: string): Promise<MetricValue[]> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  return (metric?.values ?? []) as MetricValue[];
}

async function dropped(registry: Registry, lane: Lane, reason: string): Promise<number> {
  const all = await values(registry, "dagsync_gossip_frames_dropped_total");
  return all.find((v) => v.labels.lane === lane && v.labels.reason === reason)?.value ?? 0;
}

describe("gossip lanes with a fake clock", () => {
  test("the quota allows the burst, then drops until the fake clock moves; nothing refills by itself", async () => {
    const c = clock(1_000);
    const registry = new Registry();
    const o = resolveGossipOptions({ broadcast: { quota: { perSecond: 10, burst: 3 } } });
    const lanes = new Lanes(o, new GossipMetrics(registry), c.now);
    const q = new LaneQueues();
    const f = frame();
    const admit = () => lanes.admitInbound("peer", q, "broadcast", f.raw, f.bytes.byteLength);
    assert.deepEqual([admit(), admit(), admit()], [true, true, true], "burst of 3");
    assert.equal(admit(), false, "over the quota");
    // Real time passes; the fake clock does not: still over the quota.
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(admit(), false, "the lanes read the injected clock, not the real one");
    c.advance(99);
    assert.equal(admit(), false, "one interval is 100 ms");
    c.advance(1);
    assert.equal(admit(), true, "one more after 100 ms");
    assert.equal(admit(), false);
    c.advance(1_000);
    assert.deepEqual(
      [admit(), admit(), admit(), admit()],
      [true, true, true, false],
      "full burst again, no more",
    );
    assert.equal(await dropped(registry, "broadcast", "quota"), 5);
    assert.equal(q.inbound.broadcast.length, 7);
    assert.equal(q.inboundBytes.broadcast, 7 * f.bytes.byteLength);
    assert.equal(q.inbound.broadcast.at(-1)?.at, 2_100, "queued items are stamped by the injected clock");
  });

  test("quotas are per peer and per lane: one flood does not take another's", () => {
    const c = clock();
    const o = resolveGossipOptions({
      broadcast: { quota: { perSecond: 1, burst: 1 } },
      mempool: { quota: { perSecond: 1, burst: 1 } },
    });
    const lanes = new Lanes(o, undefined, c.now);
    const f = frame();
    const q = new LaneQueues();
    assert.equal(lanes.admitInbound("a", q, "broadcast", f.raw, f.bytes.byteLength), true);
    assert.equal(lanes.admitInbound("a", q, "broadcast", f.raw, f.bytes.byteLength), false);
    assert.equal(lanes.admitInbound("a", q, "mempool", f.raw, f.bytes.byteLength), true, "other lane");
    assert.equal(
      lanes.admitInbound("b", new LaneQueues(), "broadcast", f.raw, f.bytes.byteLength),
      true,
      "other peer",
    );
  });

  test("processing waits are measured by the injected clock", async () => {
    const c = clock(5_000);
    const registry = new Registry();
    const lanes = new Lanes(resolveGossipOptions(), new GossipMetrics(registry), c.now);
    const q = new LaneQueues();
    const f = frame();
    lanes.admitInbound("p", q, "mempool", f.raw, f.bytes.byteLength);
    c.advance(250);
    lanes.observeWait("mempool", q.nextInbound("mempool")!);
    const h = await values(registry, "dagsync_gossip_queue_seconds");
    const sum = h.find((v) => v.metricName?.endsWith("_sum") && v.labels.lane === "mempool");
    assert.equal(sum?.value, 0.25);
  });

  test("inbound and outbound backlogs bound frames and bytes, each counted under its reason", async () => {
    const registry = new Registry();
    const o = resolveGossipOptions({
      maxFrameBytes: 1_000,
      mempool: {
        quota: { perSecond: 1e6, burst: 1e6 },
        inboundBacklog: 2,
        inboundBacklogBytes: 1_000,
        outboundBacklog: 2,
        outboundBacklogBytes: 1_000,
      },
    });
    const lanes = new Lanes(o, new GossipMetrics(registry), clock().now);
    const q = new LaneQueues();
    const small = frame(10);
    const big = frame(900);
    assert.equal(lanes.admitInbound("p", q, "mempool", big.raw, big.bytes.byteLength), true);
    assert.equal(lanes.admitInbound("p", q, "mempool", big.raw, big.bytes.byteLength), false, "bytes");
    assert.equal(lanes.admitInbound("p", q, "mempool", small.raw, small.bytes.byteLength), true);
    assert.equal(lanes.admitInbound("p", q, "mempool", small.raw, small.bytes.byteLength), false, "frames");
    assert.equal(await dropped(registry, "mempool", "backlog_bytes"), 1);
    assert.equal(await dropped(registry, "mempool", "backlog"), 1);
    assert.equal(lanes.enqueueOutbound(q, "mempool", big.bytes), true);
    assert.equal(lanes.enqueueOutbound(q, "mempool", big.bytes), false);
    assert.equal(lanes.enqueueOutbound(q, "mempool", small.bytes), true);
    assert.equal(lanes.enqueueOutbound(q, "mempool", small.bytes), false);
    assert.equal(await dropped(registry, "mempool", "outbound_backlog_bytes"), 1);
    assert.equal(await dropped(registry, "mempool", "outbound_backlog"), 1);
    // Sending frees the backlog, BROADCAST first.
    assert.equal(lanes.enqueueOutbound(q, "broadcast", small.bytes), true);
    assert.equal(q.nextOutbound(), small.bytes);
    assert.equal(q.outboundBytes.broadcast, 0);
    assert.equal(q.nextOutbound(), big.bytes);
    assert.equal(q.outboundBytes.mempool, small.bytes.byteLength);
  });
});

describe("gossip inbound scheduler", () => {
  test("BROADCAST of every peer before any MEMPOOL, `batch` per turn, until drained", () => {
    const turns: (() => void)[] = [];
    const peers = ["a", "b"].map((name) => ({ name, queues: new LaneQueues(), closed: false }));
    const item = (tag: number): InboundItem => ({ payload: new Uint8Array([tag]), frameBytes: 1, at: 0 });
    for (const p of peers) {
      p.queues.inbound.mempool.push(item(1), item(2));
      p.queues.inbound.broadcast.push(item(3));
    }
    const handled: string[] = [];
    const s = new InboundScheduler(
      () => peers,
      3,
      (p, lane, it) => handled.push(`${p.name}:${lane}:${it.payload[0]}`),
      (run) => turns.push(run),
    );
    s.schedule();
    s.schedule();
    assert.equal(turns.length, 1, "one turn at a time");
    turns.shift()!();
    assert.deepEqual(handled, ["a:broadcast:3", "b:broadcast:3", "a:mempool:1"]);
    assert.equal(turns.length, 1, "more left: another turn");
    turns.shift()!();
    assert.deepEqual(handled.slice(3), ["a:mempool:2", "b:mempool:1", "b:mempool:2"]);
    assert.equal(turns.length, 0);
  });
});

describe("dialer reconnect delays", () => {
  const o = { reconnectBaseMs: 500, reconnectMaxMs: 15_000 };
  test("at once first, then exponential with jitter in [0.5, 1), capped", () => {
    assert.equal(
      reconnectDelayMs(0, o, () => 0.99),
      0,
    );
    assert.equal(
      reconnectDelayMs(1, o, () => 0),
      500,
    );
    assert.equal(
      reconnectDelayMs(1, o, () => 1),
      1_000,
    );
    assert.equal(
      reconnectDelayMs(3, o, () => 1),
      4_000,
    );
    assert.equal(
      reconnectDelayMs(10, o, () => 1),
      15_000,
    );
    assert.equal(
      reconnectDelayMs(100, o, () => 0),
      7_500,
    );
  });
});
