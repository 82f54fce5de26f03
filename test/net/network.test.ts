/**
 * Sync under network faults, run for real (issue 15): four live validators and full nodes that
 * join late with one bootstrap address each, discovery on, every link through a seeded link proxy.
 *
 * CI runs one network through every fault in turn (a few minutes at most): long, jittery links
 * from the start; a full node bootstrapped from another full node; a tenth-bandwidth validator;
 * full nodes cut off from half the validators, then healed; a serving full node SIGKILLed while
 * another catches up from it, then restarted; a validator paused with SIGSTOP; a validator whose
 * links reset at random. `DAGSYNC_NET_FULL=1` runs each fault on its own at the issue's full sizes
 * (30 s partition, 10 s pause, 100–250 ms links) and the handshake flood.
 *
 * After each fault the full nodes must be back within 2 commits of the tip within a bound; at the
 * end every node reaches one digest, none banned another, every store passes the integrity walk
 * and no process crashed or logged an error (NetHarness.finish). A failure prints the seed:
 * DAGSYNC_NET_SEED=<seed> replays the links' randomness.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { sleep, waitUntil } from "../helpers/e2e-process.js";
import { watchForHang } from "./hang-watch.js";
import { NetHarness } from "./harness.js";

const FULL = process.env.DAGSYNC_NET_FULL === "1";
/** How long a full node may take to be back within 2 commits of the tip after a heal. */
const RECOVER_MS = 40_000;

describe("network under faults (short set)", { timeout: 240_000 }, () => {
  let h: NetHarness | undefined;
  // Bounded: a cleanup that hangs must not hide the test's own result behind the file timeout.
  after(async () => {
    await Promise.race([h?.close(), new Promise((r) => setTimeout(r, 30_000).unref())]);
    // This file's process has spun in Node's exit cleanup after its test passed: the watch ends it
    // with process.exit() once the loop drains, or reports what holds it (hang-watch.ts).
    watchForHang("network.test");
  });

  test("converges through latency, a slow peer, a partition, a crash, a pause and resets", async () => {
    h = await NetHarness.start({
      subnet: "127.0.15",
      devnet: { epochs: 2, commitsPerEpoch: 150, txsPerBlock: 8, txBytes: 512, seed: 15 },
      roundMs: 400,
    });
    await h.run(async (h) => {
      // Links of 50–125 ms each way (RTT 100–250 ms) with 20 ms of jitter, set before any full node
      // exists: full nodes' links are drawn when they are added.
      h.longLinks(50, 125, 20);
      await h.addFullNode("f1", { bootstrap: ["v0"] });
      h.longLinks(50, 125, 20);
      await h.waitNearTip(["f1"], 60_000);
      // f2 knows only f1, a full node: discovery finds the validators.
      await h.addFullNode("f2", { bootstrap: ["f1"] });
      h.longLinks(50, 125, 20);
      await h.waitNearTip(["f1", "f2"], 60_000);

      // v2 at a tenth of the others' bandwidth, both ways.
      for (const n of h.network.nodes())
        if (n !== "v2") h.network.setPair("v2", n, { bandwidthBytesPerSec: 50_000 });

      // Full nodes cut off from half the validators, then healed.
      h.network.partition(["f1", "f2"], ["v2", "v3"]);
      await sleep(FULL ? 30_000 : 8_000);
      await h.waitNearTip(["f1", "f2"], RECOVER_MS); // the other half still serves
      h.network.heal();
      await h.waitNearTip(["f1", "f2"], RECOVER_MS);

      // f3 catches up from f1 alone; f1 is SIGKILLed mid-catch-up and restarted.
      // f3 reaches f1 alone, over a 1 MB/s link, so its catch-up is still running when f1 dies.
      await h.addFullNode("f3", {
        bootstrap: ["f1"],
        beforeStart: (h) => {
          h.longLinks(50, 125, 20);
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
      await h.crashAndRestart("f1", 1_000);
      h.network.heal();
      await h.waitNearTip(["f1", "f2", "f3"], RECOVER_MS);
      assert.ok((await h.availability("f3")).highest > before, "f3 went on after f1's crash");

      // A validator paused for a while, then resumed.
      await h.pause("v1", FULL ? 10_000 : 4_000);
      await h.waitNearTip(["f1", "f2", "f3"], RECOVER_MS);

      // A validator whose connections reset at random.
      for (const n of h.network.nodes()) if (n !== "v3") h.network.setPair("v3", n, { resetMeanMs: 1_500 });
      await sleep(6_000);
      await h.waitNearTip(["f1", "f2", "f3"], RECOVER_MS);
      const resets = h.network.stats().reduce((n, l) => n + l.connectionsReset, 0);
      assert.ok(resets > 0, "the resetting links reset connections");
      for (const n of h.network.nodes())
        if (n !== "v3") h.network.setPair("v3", n, { resetMeanMs: undefined });
    });
    await h.finish({ convergeMs: 60_000 });
  });
});
