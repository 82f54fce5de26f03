/**
 * The full fault matrix (issue 15), one network per fault at the sizes; runs only with
 * DAGSYNC_NET_FULL=1 (about 10 minutes). Each scenario: four live validators, full nodes joining
 * late with one bootstrap address each, discovery on, then the fault, then NetHarness.finish (one
 * digest, no bans, clean logs, store walk). Recovery times after each heal are printed as test
 * diagnostics; BENCHMARKS.md records a run. DAGSYNC_NET_SEED replays a failing seed.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { readKeyFile } from "../../src/crypto/index.js";
import { metricSum, scrapeMetrics, sleep, waitUntil } from "../helpers/e2e-process.js";
import { dialerHandshake, freshHello, RawGossipStream, rawClient } from "../helpers/gossip-raw-client.js";
import { HandshakeFlood } from "./handshake-flood.js";
import { NetHarness } from "./harness.js";

const FULL = process.env.DAGSYNC_NET_FULL === "1";
const RECOVER_MS = 30_000;
const DEVNET = { epochs: 2, commitsPerEpoch: 200, txsPerBlock: 8, txBytes: 512, seed: 16 };

const open: NetHarness[] = [];
after(async () => {
  for (const h of open) await Promise.race([h.close(), new Promise((r) => setTimeout(r, 30_000).unref())]);
});

/** A network on its own subnet, two full nodes joined (f1 from v0, f2 from f1), then `body`. */
function scenario(
  name: string,
  subnet: string,
  body: (h: NetHarness, note: (s: string) => void) => Promise<void>,
  setup?: (h: NetHarness) => void,
): void {
  test(name, { skip: !FULL && "DAGSYNC_NET_FULL=1 runs the full matrix", timeout: 300_000 }, async (t) => {
    const h = await NetHarness.start({ subnet, devnet: DEVNET, roundMs: 400 });
    open.push(h);
    const note = (s: string) => t.diagnostic(`${name}: ${s}`);
    await h.run(async () => {
      setup?.(h);
      const started = Date.now();
      await h.addFullNode("f1", { bootstrap: ["v0"] });
      setup?.(h);
      await h.waitNearTip(["f1"], 120_000);
      await h.addFullNode("f2", { bootstrap: ["f1"] });
      setup?.(h);
      await h.waitNearTip(["f1", "f2"], 120_000);
      note(`f1 and f2 near the tip ${((Date.now() - started) / 1000).toFixed(1)} s after f1 started`);
      await body(h, note);
    });
    await h.finish({ convergeMs: 90_000 });
    note(`seed ${h.seed}: converged, no bans, stores walked`);
  });
}

describe("network under faults (full matrix)", () => {
  scenario(
    "links of 100–250 ms with jitter",
    "127.0.21",
    async (h, note) => {
      const ms = await h.waitNearTip(["f1", "f2"], RECOVER_MS);
      note(`followers within 2 commits of the tip (checked in ${ms} ms)`);
    },
    (h) => h.longLinks(100, 250, 30),
  );

  scenario(
    "one validator at a tenth of the others' bandwidth",
    "127.0.22",
    async (h, note) => {
      const served = h.network
        .stats()
        .filter((l) => l.dst === "f1" && l.src.startsWith("v"))
        .map((l) => `${l.src}→f1 ${(l.bytesDelivered / 1e6).toFixed(1)} MB`);
      note(`bytes served to f1: ${served.join(", ")}`);
    },
    (h) => {
      for (const n of h.network.nodes())
        for (const m of h.network.nodes())
          if (n !== m)
            h.network.setLink(n, m, { bandwidthBytesPerSec: n === "v2" || m === "v2" ? 100_000 : 1_000_000 });
    },
  );

  scenario(
    "full nodes cut off from half the validators for 30 s, then healed",
    "127.0.23",
    async (h, note) => {
      h.network.partition(["f1", "f2"], ["v2", "v3"]);
      await sleep(30_000);
      note(
        `during the partition: within 2 of the tip in ${await h.waitNearTip(["f1", "f2"], RECOVER_MS)} ms`,
      );
      h.network.heal();
      note(`after the heal: within 2 of the tip in ${await h.waitNearTip(["f1", "f2"], RECOVER_MS)} ms`);
    },
  );

  scenario("a serving full node SIGKILLed mid-catch-up and restarted", "127.0.24", async (h, note) => {
    // f3 can reach f1 only, over a 1 MB/s link, so that its catch-up takes a while.
    await h.addFullNode("f3", {
      bootstrap: ["f1"],
      beforeStart: (h) => {
        h.network.partition(["f3"], ["v0", "v1", "v2", "v3", "f2"]);
        h.network.setPair("f1", "f3", { bandwidthBytesPerSec: 1_000_000 });
      },
    });
    const before = await waitUntil(
      async () => (await h.availability("f3")).highest || false,
      "f3 applying its first commits from f1",
      30_000,
      50,
    );
    const tip = await h.tip();
    assert.ok(before < tip - 2, `f3 is mid-catch-up (${before} of ${tip}) when f1 is killed`);
    await h.crashAndRestart("f1", 2_000);
    note(`f1 killed with f3 at ${before} of ${tip}, restarted`);
    note(
      `f3 within 2 of the tip ${await h.waitNearTip(["f1", "f3"], 60_000)} ms after f1 came back (f3 still cut from every other node)`,
    );
    h.network.heal();
  });

  scenario("a validator paused with SIGSTOP for 10 s", "127.0.25", async (h, note) => {
    await h.pause("v1", 10_000);
    note(`after resume: within 2 of the tip in ${await h.waitNearTip(["f1", "f2"], RECOVER_MS)} ms`);
  });

  scenario("a validator that resets connections at random", "127.0.26", async (h, note) => {
    for (const n of h.network.nodes()) if (n !== "v3") h.network.setPair("v3", n, { resetMeanMs: 1_000 });
    await sleep(20_000);
    const resets = h.network.stats().reduce((n, l) => n + l.connectionsReset, 0);
    assert.ok(resets > 0);
    note(
      `${resets} connections reset; within 2 of the tip in ${await h.waitNearTip(["f1", "f2"], RECOVER_MS)} ms`,
    );
    for (const n of h.network.nodes()) if (n !== "v3") h.network.setPair("v3", n, { resetMeanMs: undefined });
  });

  scenario("a handshake flood on the live channel", "127.0.27", async (h, note) => {
    const v0 = h.node("v0");
    const gossip = h.devnet.summary.validators[0]!.gossipAddress;
    const rss = async () => metricSum(await scrapeMetrics(v0.metrics), "process_resident_memory_bytes");
    const rssBefore = await rss();
    const sources = Array.from({ length: 50 }, (_, i) => `127.0.28.${10 + i}`);
    const floods = (["silent", "unknown-key"] as const).map(
      (mode) =>
        new HandshakeFlood({
          target: gossip,
          chainId: h.devnet.summary.chainId,
          sources,
          streamsPerSource: 6,
          mode,
        }),
    );
    let peak = rssBefore;
    try {
      for (const f of floods) f.start();
      await sleep(1_000);
      // A committee member (v1's key) handshakes with v0 during the flood.
      const key = await readKeyFile(h.devnet.summary.validators[1]!.networkKeyFile);
      for (let round = 0; round < 3; round++) {
        const client = rawClient(gossip);
        const started = performance.now();
        try {
          const stream = new RawGossipStream(client);
          await dialerHandshake(stream, key, freshHello(h.devnet.summary.chainId, key));
          const ms = performance.now() - started;
          note(`committee handshake during the flood: ${ms.toFixed(0)} ms`);
          assert.ok(ms < 1_000, `a committee member connected in ${ms.toFixed(0)} ms`);
          stream.cancel();
        } finally {
          client.close();
        }
        peak = Math.max(peak, await rss());
        await sleep(1_000);
      }
      const [silent, unknown] = floods as [HandshakeFlood, HandshakeFlood];
      note(
        `flood: ${silent.tally.opened + unknown.tally.opened} streams from ${sources.length} addresses; ended ${JSON.stringify([...silent.tally.ended])} (silent), ${JSON.stringify([...unknown.tally.ended])} (unknown keys)`,
      );
      assert.ok(unknown.ended("PERMISSION_DENIED") > 0, "unknown keys are refused");
      note(
        `v0 RSS ${(rssBefore / 1e6).toFixed(0)} MB before, ${(peak / 1e6).toFixed(0)} MB at most during the flood`,
      );
      assert.ok(peak - rssBefore < 150e6, "memory stays bounded");
    } finally {
      for (const f of floods) f.stop();
    }
    await h.waitNearTip(["f1", "f2"], RECOVER_MS);
  });
});
