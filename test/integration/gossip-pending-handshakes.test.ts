/**
 * The listener's bound on handshakes in progress, on a real GossipNode and grpc-js server: a
 * flood of silent Connect streams from ten source addresses is cut to the per-address cap, the
 * total cap evicts the oldest, and a committee member still completes its handshake at once.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { CommitteeView } from "../../src/core/committee.js";
import type { DevnetChain } from "../../src/devnet/chain.js";
import {
  type CommitteeKeys,
  metricValue,
  type RunningGossip,
  smallChain,
  startGossip,
  waitFor,
} from "../helpers/gossip-fixture.js";
import { dialerHandshake, freshHello, RawGossipStream, rawClient } from "../helpers/gossip-raw-client.js";
import { HandshakeFlood } from "../net/handshake-flood.js";

let chain: DevnetChain;
let committee: CommitteeView;
let keys: CommitteeKeys[];
let listener: RunningGossip;
const SOURCES = Array.from({ length: 10 }, (_, i) => `127.0.18.${10 + i}`);

before(async () => {
  ({ chain, committee, keys } = smallChain(31));
  listener = await startGossip({
    chainId: chain.chainId,
    key: keys[0]!.network,
    committee,
    options: { maxPendingHandshakes: 20, maxPendingHandshakesPerAddress: 4, handshakeTimeoutMs: 4_000 },
  });
});
after(async () => listener.stop());

test("a silent flood is held to the caps, and a committee member still connects at once", async () => {
  const exhausted = () =>
    metricValue(listener.registry, "dagsync_gossip_handshakes_total", {
      role: "listener",
      result: "RESOURCE_EXHAUSTED",
    });
  const before = await exhausted();
  const flood = new HandshakeFlood({
    target: listener.address,
    chainId: chain.chainId,
    sources: SOURCES,
    streamsPerSource: 6,
    mode: "silent",
  });
  flood.start();
  try {
    // 60 streams: 2 per source over the per-address cap of 4 (20), and of the 40 admitted, 20
    // evicted by the total cap of 20. The 20 left wait for the handshake timeout.
    await waitFor(
      () => flood.ended("RESOURCE_EXHAUSTED") >= 40,
      "40 streams ended RESOURCE_EXHAUSTED",
      5_000,
    );
    assert.equal(flood.tally.opened, 60);
    assert.equal(flood.ended("RESOURCE_EXHAUSTED"), 40, "exactly the streams over the caps are ended");
    assert.equal((await exhausted()) - before, 40, "each counted");

    const started = performance.now();
    const client = rawClient(listener.address);
    try {
      const stream = new RawGossipStream(client);
      await dialerHandshake(stream, keys[1]!.network, freshHello(chain.chainId, keys[1]!.network));
      await waitFor(
        () =>
          listener.node
            .peers()
            .some((p) => p.key === Buffer.from(keys[1]!.network.publicKey).toString("hex")),
        "the committee member's session",
        1_000,
      );
      const ms = performance.now() - started;
      assert.ok(ms < 1_000, `a committee member connected in ${ms.toFixed(0)} ms during the flood`);
      stream.cancel();
    } finally {
      client.close();
    }
    // The held ones end by the handshake timeout, not before.
    await waitFor(
      () => flood.ended("UNAUTHENTICATED") + flood.ended("RESOURCE_EXHAUSTED") >= 60,
      "every flood stream ended",
      8_000,
    );
  } finally {
    flood.stop();
  }
});
