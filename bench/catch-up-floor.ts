/**
 * The catch-up floor (a child process of bench/run.ts): what fetching and storing the chain's
 * blocks costs on this machine before any of the sync engine's work.
 *
 * It does the part of a catch-up that no implementation can skip, with the node's own parts and
 * defaults: PeerClient FetchBlocks calls of 1000 refs (`blocksPerRequest`) to the same serving
 * processes, each block's SHA-256 checked against its ref, and sequential LevelDB batches of
 * ≤ `maxApplyBatchBytes` under the store's block keys. It keeps 4 requests in flight, not the
 * node's 12 (`maxConcurrentRequests`): 4 made the floor ≈10 % faster here, while the node ran
 * the same with 4 or 12 (BENCHMARKS.md), so the floor takes the faster. It skips
 * everything else a node must do: fetching and verifying commits and their certifiers, the
 * chain database, watermarks, the in-order apply and the memory budget. So a catch-up can only
 * be slower; the bench prints the ratio, which says how much the engine costs on top.
 *
 *   node --import tsx bench/catch-up-floor.ts REFS_STORE PEER [PEER…]
 *
 * REFS_STORE is a store of the same chain that no server holds open (its commits give the refs).
 * Prints one JSON line: { blocks, bytes, seconds, cpuSeconds }.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Level } from "level";
import { PeerClient } from "../src/client/index.js";
import { bytesEqual, sha256 } from "../src/core/index.js";
import { blockKey } from "../src/store/keys.js";
import { DEFAULT_SYNC_OPTIONS } from "../src/sync/options.js";
import { allRefs, fetchEveryBlock } from "./chain-refs.js";

/** FetchBlocks calls in flight (module comment). */
const REQUESTS_IN_FLIGHT = 4;

const [refsStore, ...peers] = process.argv.slice(2);
if (refsStore === undefined || peers.length === 0) {
  process.stderr.write("usage: catch-up-floor.ts REFS_STORE PEER [PEER…]\n");
  process.exit(2);
}

async function main(): Promise<void> {
  const refs = await allRefs(refsStore!);
  const { blocksPerRequest, maxApplyBatchBytes } = DEFAULT_SYNC_OPTIONS;
  const clients = peers.map((p) => new PeerClient(p));
  for (const c of clients) await c.getCommitAvailability(); // connections up before the clock starts
  const dir = await mkdtemp(join(tmpdir(), "dagsync-floor-"));
  const db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: "view", valueEncoding: "view" });
  await db.open();

  const cpuAtStart = process.cpuUsage();
  const started = performance.now();
  let blocks = 0;
  // One writer, as in the node: batches are written one after another.
  let pending: { type: "put"; key: Uint8Array; value: Uint8Array }[] = [];
  let pendingBytes = 0;
  let writing = Promise.resolve();
  let queuedBatches = 0;
  const flush = () => {
    const ops = pending;
    pending = [];
    pendingBytes = 0;
    queuedBatches++;
    writing = writing.then(async () => {
      await db.batch(ops);
      queuedBatches--;
    });
  };
  const bytes = await fetchEveryBlock(refs, {
    workers: REQUESTS_IN_FLIGHT,
    refsPerCall: blocksPerRequest,
    clientFor: (worker, chunk) => clients[(worker + chunk) % clients.length]!,
    onResponse: async (answered, res) => {
      res.blocks.forEach((block, k) => {
        const ref = answered[k]!;
        if (!bytesEqual(sha256(block), ref.digest)) throw new Error(`block ${k} does not match its ref`);
        pending.push({ type: "put", key: blockKey(ref), value: block });
        pendingBytes += block.length;
      });
      blocks += res.blocks.length;
      if (pendingBytes >= maxApplyBatchBytes) flush();
      // Fetching runs ahead of the writer by at most 32 batches (64 MiB), as the node's budget allows.
      if (queuedBatches > 32) await writing;
    },
  });
  flush();
  await writing;
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuAtStart);
  for (const c of clients) c.close();
  await db.close();
  await rm(dir, { recursive: true, force: true });
  process.stdout.write(
    `${JSON.stringify({ blocks, bytes, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`,
  );
}

await main();
