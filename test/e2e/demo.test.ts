/**
 * `npm start` (dagsync demo) as a newcomer runs it, on a small devnet: it generates the chain,
 * starts four validator processes, catches up with a summary line, follows the live chain with
 * `live:` lines, and on Ctrl-C stops everything it started.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parseManifest } from "../../src/archive/index.js";
import { PeerClient } from "../../src/client/index.js";
import { freePort, ProcGroup, waitUntil } from "../helpers/e2e-process.js";

const group = new ProcGroup();
let root: string | undefined;
after(async () => {
  await group.stopAll();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

/** A base port with 8 consecutive free ports (validator i: sync base+2i, gossip base+2i+1). */
async function freeBase(): Promise<number> {
  for (;;) {
    const base = 20_000 + Math.floor(Math.random() * 10_000) * 2;
    const free = await Promise.all(
      Array.from(
        { length: 8 },
        (_, k) =>
          new Promise<boolean>((resolve) => {
            const s = createServer()
              .once("error", () => resolve(false))
              .listen(base + k, "127.0.0.1", () => s.close(() => resolve(true)));
          }),
      ),
    );
    if (free.every(Boolean)) return base;
  }
}

test("demo: catches up with a summary, follows live within a few commits, and Ctrl-C stops every process", async () => {
  root = await mkdtemp(join(tmpdir(), "dagsync-demo-"));
  const devnetDir = join(root, "devnet");
  const base = await freeBase();
  const listen = `127.0.0.1:${await freePort()}`;
  const demo = group.cli("demo", [
    "demo",
    "--dir",
    join(root, "devnet"),
    "--epochs",
    "2",
    "--commits-per-epoch",
    "60",
    "--base-port",
    String(base),
    "--listen",
    listen,
    "--round-ms",
    "250",
  ]);
  const summary = await waitUntil(
    () => demo.lines().find((l) => l.startsWith("caught up:")),
    "the catch-up summary",
    90_000,
  ).catch((e: Error) => assert.fail(`${e.message}\n${demo.output()}`));
  const m = /caught up: (\d+) commits, (\d+) blocks, [\d.]+ MB in [\d.]+ s — (\d+) commits\/s/.exec(summary);
  assert.ok(m !== null, summary);
  assert.ok(Number(m[1]) >= 120, `at least the generated chain: ${summary}`);
  assert.match(summary, /every commit certified by its epoch's committee, every block checked by digest/);

  const live = await waitUntil(
    () => {
      const lines = demo.lines().filter((l) => l.startsWith("live:"));
      return lines.length >= 3 ? lines : undefined;
    },
    "three live lines",
    30_000,
  ).catch((e: Error) => assert.fail(`${e.message}\n${demo.output()}`));
  const tips = live.map((l) => {
    const t = /validators at commit (\d+), full node at (\d+) \(lag (\d+)\)/.exec(l);
    assert.ok(t !== null, l);
    return { validators: Number(t[1]), node: Number(t[2]), lag: Number(t[3]) };
  });
  assert.ok(tips.at(-1)!.validators > tips[0]!.validators, `the chain keeps growing: ${live.join("\n")}`);
  for (const t of tips.slice(1))
    assert.ok(t.lag <= 5, `the node follows within 5 commits: ${live.join("\n")}`);
  assert.match(live.at(-1)!, /gossip peers [1-4]/);
  // Given one validator's address, the full node found the other three (the committee's).
  assert.match(live.at(-1)!, /sync peers committee 4\/4/);

  // Validator 0 keeps an archive of the chain (serve --archive-out): a manifest whose chunks
  // cover the generated chain from commit 1.
  const archived = await waitUntil(
    async () => {
      const text = await readFile(join(devnetDir, "archive", "manifest.json"), "utf8").catch(() => undefined);
      const m = text === undefined ? undefined : parseManifest(text);
      return m !== undefined && (m.chunks.at(-1)?.last ?? 0) >= 120 ? m : undefined;
    },
    "validator 0's archive",
    30_000,
  );
  assert.equal(archived.chunks[0]?.first, 1);

  // The full node serves what it follows.
  const client = new PeerClient(listen);
  try {
    const status = await client.getStatus();
    assert.ok(Number(status.highestSyncedCommit) >= tips[0]!.node);
  } finally {
    client.close();
  }

  demo.signal("SIGINT");
  const exit = await demo.wait(30_000);
  assert.equal(exit.code, 0, demo.output());
  // Every validator process is gone: their ports are free again.
  const validator = new PeerClient(`127.0.0.1:${base}`, { smallCallTimeoutMs: 500 });
  try {
    await assert.rejects(validator.getCommitAvailability(), "validator 0 no longer answers");
  } finally {
    validator.close();
  }
});
