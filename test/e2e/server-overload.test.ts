/**
 * A real `dagsync serve` process under bulk overload (issue 11): 24 source addresses in
 * 127.0.0.0/8 each keep 4 FetchBlocks(1000 refs) in flight for a few seconds against
 * `--max-bulk-calls 8 --max-server-inflight-mib 32`, while another address polls
 * GetCommitAvailability. The server's memory stays within its idle footprint plus the budget
 * plus an allowance (VmRSS sampled every 50 ms and VmHWM at the end, from /proc); refusals are
 * RESOURCE_EXHAUSTED at once with a numeric retry-after-ms, nothing times out, completed calls
 * carry the right blocks, and light calls keep succeeding quickly.
 *
 * OVERLOAD_UNBOUNDED=1 runs the same load against caps too high to bite (the behaviour before
 * admission) and only reports its figures, to check that the memory bound is one it would break.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { parseCommit, verifyBlocksAgainstRefs } from "../../src/core/index.js";
import type { BlockRef } from "../../src/gen/dagsync/v1/types_pb.js";
import { Store } from "../../src/store/index.js";
import {
  DEADLINE_EXCEEDED,
  decodeFetchBlocksBody,
  fetchBlocksBodies,
  percentile,
  procStatusBytes,
  RESOURCE_EXHAUSTED,
  rssPeak,
  runBulkLoad,
  startLightProbe,
} from "../helpers/bulk-load.js";
import { ProcGroup, sleep, startValidator } from "../helpers/e2e-process.js";
import { type DevnetFixture, makeDevnet } from "../helpers/server.js";
import { SourceClient } from "../helpers/source-client.js";

const MAX_BULK_CALLS = 8;
const BUDGET_MIB = 32;
const UNBOUNDED = process.env.OVERLOAD_UNBOUNDED === "1";
const LOAD_ADDRESSES = 24;
const CALLS_PER_ADDRESS = 4;
const LOAD_MS = 6_000;
const REFS_PER_CALL = 1000;
const DEADLINE_MS = 30_000;
/**
 * Room above idle RSS + budget for V8 heap growth, decoded blocks, protobuf encoding copies and
 * HTTP/2 buffers. Measured peak with the caps: idle + ≈60–90 MB; without them (OVERLOAD_UNBOUNDED)
 * the same load reaches idle + ≈350 MB or more, so the bound below fails the old behaviour.
 */
const ALLOWANCE_MB = 250;
const MB = 1024 * 1024;

const group = new ProcGroup();
let fx: DevnetFixture;
const refs: BlockRef[] = [];

before(async () => {
  // ≈13,500 blocks of ≈2.3 KB: a 1000-ref answer is ≈2.3 MB.
  fx = await makeDevnet({ epochs: 2, commitsPerEpoch: 1500, txsPerBlock: 8, txBytes: 256, seed: 12 });
  const store = await Store.open(fx.storePath(0), { mustExist: true });
  try {
    const highest = store.watermarks.highestSynced;
    for (let i = 1; i <= highest; i += 500)
      for (const c of await store.getCommits(i, Math.min(i + 499, highest)))
        refs.push(...parseCommit(c).commit.blocks);
  } finally {
    await store.close();
  }
  assert.ok(refs.length > 4 * REFS_PER_CALL, `the devnet has only ${refs.length} blocks`);
});

after(async () => {
  await group.stopAll();
  await fx?.remove();
});

/** CPU time of a process (user + system), ms. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

test("a serve process under bulk overload from 24 addresses holds its memory and light calls", async (t) => {
  const caps = UNBOUNDED
    ? ["--max-bulk-calls", "100000", "--max-server-inflight-mib", "65536"]
    : ["--max-bulk-calls", String(MAX_BULK_CALLS), "--max-server-inflight-mib", String(BUDGET_MIB)];
  const { proc, port } = await startValidator(group, "serve", fx.storePath(0), caps);
  const pid = proc.pid!;

  // Idle footprint: a few warm-up light calls, then the settled RSS.
  const warm = new SourceClient(port, "127.0.0.60");
  for (let i = 0; i < 5; i++) await warm.getCommitAvailability();
  warm.close();
  await sleep(300);
  const idleRss = procStatusBytes(pid, "VmRSS");

  const bodies = fetchBlocksBodies(refs, REFS_PER_CALL);
  const memory = rssPeak(pid);
  const stopLightProbe = startLightProbe(port, "127.0.0.50", 100);
  const cpu0 = cpuMs(pid);
  const load = await runBulkLoad({
    port,
    addresses: Array.from({ length: LOAD_ADDRESSES }, (_, i) => `127.0.0.${11 + i}`),
    callsPerAddress: CALLS_PER_ADDRESS,
    bodies,
    durationMs: LOAD_MS,
    deadlineMs: DEADLINE_MS,
    samplesPerThread: 6,
  });
  const lightCalls = await stopLightProbe();
  const peakRss = memory.stop();

  const byStatus = new Map<number, number>();
  for (const c of load.calls) byStatus.set(c.status, (byStatus.get(c.status) ?? 0) + 1);
  const ok = load.calls.filter((c) => c.status === 0);
  const refused = load.calls.filter((c) => c.status === RESOURCE_EXHAUSTED);
  const lightLatencies = lightCalls.map((c) => c.ms);
  const bound = idleRss + BUDGET_MIB * MB + ALLOWANCE_MB * 1e6;
  const okMB = ok.reduce((s, c) => s + c.bytes, 0) / 1e6;
  t.diagnostic(
    `${UNBOUNDED ? "UNBOUNDED " : ""}load ${Math.round(load.elapsedMs)} ms: ` +
      `${[...byStatus].map(([k, v]) => `status ${k}: ${v}`).join(", ")}; ${okMB.toFixed(0)} MB served ` +
      `(${((okMB * 1000) / load.elapsedMs).toFixed(1)} MB/s), server CPU ${cpuMs(pid) - cpu0} ms`,
  );
  t.diagnostic(
    `RSS idle ${(idleRss / 1e6).toFixed(1)} MB, peak ${(peakRss / 1e6).toFixed(1)} MB ` +
      `(+${((peakRss - idleRss) / 1e6).toFixed(1)} MB; bound ${(bound / 1e6).toFixed(1)} MB)`,
  );
  t.diagnostic(
    `light calls ${lightCalls.length}: p50 ${percentile(lightLatencies, 50).toFixed(1)} ms, ` +
      `p99 ${percentile(lightLatencies, 99).toFixed(1)} ms; refused p50/p99 ${percentile(
        refused.map((c) => c.ms),
        50,
      ).toFixed(1)}/${percentile(
        refused.map((c) => c.ms),
        99,
      ).toFixed(1)} ms, median hint ${percentile(
        refused.map((c) => Number(c.hint)),
        50,
      )} ms; OK p50 ${percentile(
        ok.map((c) => c.ms),
        50,
      ).toFixed(0)} ms`,
  );
  if (UNBOUNDED) return;

  assert.ok(peakRss < bound, "the server's memory passed idle + budget + allowance");
  assert.equal(byStatus.get(DEADLINE_EXCEEDED) ?? 0, 0, "no call may time out");
  for (const c of load.calls)
    assert.ok(
      c.status === 0 || c.status === RESOURCE_EXHAUSTED,
      `unexpected status ${c.status}: ${c.message}`,
    );
  assert.ok(refused.length > 0, "the load should be refused in part");
  for (const c of refused) {
    assert.match(c.message, /server busy/);
    assert.match(c.hint ?? "", /^\d+$/, "retry-after-ms must be numeric");
  }
  // A refusal is decided before any block is read: it is quick even while the server is saturated.
  assert.ok(
    percentile(
      refused.map((c) => c.ms),
      50,
    ) < 250,
    "refusals are not quick",
  );
  assert.ok(ok.length > 0, "some calls must complete");
  assert.ok(load.samples.length > 0, "no completed answer was kept to check");
  for (const sample of load.samples) {
    const chunk = refs.slice(sample.body * REFS_PER_CALL, (sample.body + 1) * REFS_PER_CALL);
    const checked = verifyBlocksAgainstRefs(chunk, decodeFetchBlocksBody(sample.payload));
    assert.equal(checked.error, undefined, checked.error?.message);
    assert.ok(checked.blocks.length > 0, "a completed call carries blocks");
  }
  assert.ok(lightCalls.length >= 20, `only ${lightCalls.length} light calls`);
  for (const c of lightCalls) assert.equal(c.status, "0", `a light call ended with grpc-status ${c.status}`);
  // p99 < 100 ms is the bench's target (BENCHMARKS.md); here, on a shared CI core, a bound that
  // the unbounded server breaks (seconds) and the admitted one keeps with room.
  assert.ok(percentile(lightLatencies, 99) < 1_000, "light calls stay quick");
});
