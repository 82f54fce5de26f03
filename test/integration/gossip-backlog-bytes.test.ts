/**
 * The lane backlogs are bounded by bytes as well as by frames (issue 10, item 5), with real
 * GossipNodes on real grpc-js servers on loopback and a raw authenticated peer:
 * - inbound: a peer whose frames arrive faster than they are processed fills its MEMPOOL backlog
 *   up to `inboundBacklogBytes`; the rest is dropped under reason "backlog_bytes", the frame
 *   count limit never being reached;
 * - outbound: a peer that stops reading fills its outbound MEMPOOL queue up to
 *   `outboundBacklogBytes`; the rest is dropped under "outbound_backlog_bytes", and once it
 *   reads again it gets exactly what was not dropped.
 * Every frame is accounted for: delivered (or sent) plus dropped equals what was offered.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { encodeFrame } from "../../src/gossip/frames.js";
import { resolveGossipOptions } from "../../src/gossip/options.js";
import {
  hex,
  metricValue,
  type RunningGossip,
  sleep,
  smallChain,
  startGossip,
  waitFor,
  waitForAsync,
} from "../helpers/gossip-fixture.js";
import { dialerHandshake, freshHello, RawGossipStream, rawClient } from "../helpers/gossip-raw-client.js";

const KiB = 1024;
const MAX_FRAME = 16 * KiB;
const TX_BYTES = 4 * KiB;
/** A frame is the payload plus its tag and length (1 + 2 bytes for 4 KiB). */
const FRAME_BYTES = encodeFrame("transaction", new Uint8Array(TX_BYTES)).byteLength;
/** Whole frames that fit in a backlog of MAX_FRAME bytes. */
const FIT = Math.floor(MAX_FRAME / FRAME_BYTES);

const dropped = (g: RunningGossip, reason: string) =>
  metricValue(g.registry, "dagsync_gossip_frames_dropped_total", { lane: "mempool", reason });

/** Distinct transactions (dedup would hide repeats), `count` of TX_BYTES each. */
function transactions(count: number, tag: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const tx = new Uint8Array(TX_BYTES);
    tx[0] = tag;
    new DataView(tx.buffer).setUint32(1, i);
    return tx;
  });
}

describe("gossip backlogs bounded by bytes", () => {
  test("the defaults are named byte limits of at least maxFrameBytes; a smaller one is refused", () => {
    const o = resolveGossipOptions();
    for (const lane of [o.broadcast, o.mempool]) {
      assert.ok(lane.inboundBacklogBytes >= o.maxFrameBytes);
      assert.ok(lane.outboundBacklogBytes >= o.maxFrameBytes);
    }
    assert.equal(o.broadcast.inboundBacklogBytes, 16 * 1024 * 1024);
    assert.equal(o.mempool.outboundBacklogBytes, 8 * 1024 * 1024);
    assert.throws(
      () => resolveGossipOptions({ maxFrameBytes: 1024, mempool: { inboundBacklogBytes: 1023 } }),
      /mempool\.inboundBacklogBytes \(1023 bytes\) must be at least maxFrameBytes/,
    );
  });

  test(`inbound: a peer outpacing processing is held to inboundBacklogBytes (${FIT} frames of ${FRAME_BYTES} bytes), the rest dropped as backlog_bytes`, async () => {
    const { chain, committee, keys } = smallChain(41);
    const node = await startGossip({
      chainId: chain.chainId,
      key: keys[0]!.network,
      committee,
      options: {
        maxFrameBytes: MAX_FRAME,
        processBatch: 1,
        // Only the byte limit can bind: the count limit and the quota are far away.
        mempool: {
          quota: { perSecond: 1_000_000, burst: 1_000_000 },
          inboundBacklog: 100_000,
          inboundBacklogBytes: MAX_FRAME,
        },
      },
    });
    const client = rawClient(node.address);
    try {
      // Processing is slow (a synchronous listener, 5 ms a transaction, one per turn of the event
      // loop), so frames pile up: without the byte limit this backlog reaches ~40 frames.
      const delivered: string[] = [];
      node.node.onTransaction((tx) => {
        const until = performance.now() + 5;
        while (performance.now() < until);
        delivered.push(hex(tx.subarray(0, 5)));
      });
      const key = keys[1]!.network;
      const s = new RawGossipStream(client);
      await dialerHandshake(s, key, freshHello(chain.chainId, key));
      await waitFor(() => node.node.peers().length === 1, "the session to come up");
      const SENT = 300;
      for (const tx of transactions(SENT, 1)) s.send(encodeFrame("transaction", tx));
      await waitForAsync(
        async () => delivered.length + (await dropped(node, "backlog_bytes")) === SENT,
        "every frame delivered or dropped",
        20_000,
      );
      const byBytes = await dropped(node, "backlog_bytes");
      assert.ok(byBytes > 0, `some frames dropped for bytes (delivered ${delivered.length} of ${SENT})`);
      assert.equal(await dropped(node, "backlog"), 0, "the count limit was never reached");
      assert.equal(new Set(delivered).size, delivered.length, "each delivered once");
      s.cancel();
    } finally {
      client.close();
      await node.stop();
    }
  });

  test(`outbound: a peer that stops reading is held to outboundBacklogBytes; it later gets exactly what was not dropped`, async () => {
    const { chain, committee, keys } = smallChain(42);
    const node = await startGossip({
      chainId: chain.chainId,
      key: keys[0]!.network,
      committee,
      options: {
        maxFrameBytes: MAX_FRAME,
        mempool: { outboundBacklog: 100_000, outboundBacklogBytes: MAX_FRAME },
      },
    });
    const client = rawClient(node.address);
    try {
      const key = keys[1]!.network;
      const s = new RawGossipStream(client);
      await dialerHandshake(s, key, freshHello(chain.chainId, key));
      await waitFor(() => node.node.peers().length === 1, "the session to come up");
      const before = s.received.length; // the handshake frames
      // Stop reading: HTTP/2 flow control and grpc-js's write buffer fill, then the outbound queue.
      (s.call as grpc.ClientDuplexStream<Uint8Array, Uint8Array>).pause();
      const SENT = 400; // 1.6 MiB: far more than HTTP/2 flow control and grpc-js's write buffer hold
      for (const tx of transactions(SENT, 2)) node.node.publishTransaction(tx);
      const byBytes = await dropped(node, "outbound_backlog_bytes");
      assert.ok(byBytes > 0, "frames over outboundBacklogBytes are dropped");
      assert.ok(byBytes < SENT - FIT, `at least the ${FIT} frames that fit are kept (dropped ${byBytes})`);
      assert.equal(await dropped(node, "outbound_backlog"), 0, "the count limit was never reached");
      s.call.resume();
      await waitFor(() => s.received.length - before === SENT - byBytes, "the kept frames to arrive", 10_000);
      await sleep(100);
      assert.equal(s.received.length - before, SENT - byBytes, "nothing more arrives");
      assert.ok(
        s.received.slice(before).every((f) => f.kind === "transaction" && f.payload.byteLength === TX_BYTES),
      );
      s.cancel();
    } finally {
      client.close();
      await node.stop();
    }
  });
});
