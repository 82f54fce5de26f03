/**
 * The "load" bench (issue 11): one `dagsync serve` process with its default admission limits,
 * loaded with FetchBlocks(1000 refs) callers at 1×, 4× and 20× the budget's worth, from distinct
 * source addresses in 127.0.0.0/8 (8 calls in flight each), while a light GetCommitAvailability
 * probe runs every 50 ms from an address of its own.
 *
 * "Budget's worth" is the calls the byte budget admits at once:
 * min(maxBulkCalls, maxServerInflightBytes / maxFetchResponseBytes) (16 by default). The unloaded
 * rate is the same server serving half that many callers, which are never refused; goodput at
 * each load is completed MB/s over it. Callers run on worker threads over raw HTTP/2 and decode
 * nothing (test/helpers/bulk-load.ts), so they cost far less than the server they load.
 */
import type { BlockRef } from "../src/gen/dagsync/v1/types_pb.js";
import { DEFAULT_SERVER_OPTIONS } from "../src/server/options.js";
import {
  fetchBlocksBodies,
  percentile,
  procStatusBytes,
  RESOURCE_EXHAUSTED,
  rssPeak,
  runBulkLoad,
  startLightProbe,
} from "../test/helpers/bulk-load.js";
import { type ServeProcess, stopProcesses } from "./serve-process.js";

export interface LoadPhase {
  readonly label: string;
  readonly callers: number;
  readonly mbPerSec: number;
  readonly completed: number;
  readonly refused: number;
  /** Calls that ended otherwise (deadline, reset): the collapse this admission prevents. */
  readonly failed: number;
  readonly refusedP50Ms: number;
  readonly peakRssMb: number;
  readonly lightP50Ms: number;
  readonly lightP99Ms: number;
  readonly lightCalls: number;
  readonly lightFailed: number;
}

export interface LoadReport {
  readonly budgetCallers: number;
  readonly idleRssMb: number;
  readonly budgetMb: number;
  readonly unloaded: LoadPhase;
  readonly phases: readonly LoadPhase[];
}

const CALLS_PER_ADDRESS = 8;
const REFS_PER_CALL = 1000;

/** The calls the default byte budget admits at once. */
export function budgetCallers(): number {
  const o = DEFAULT_SERVER_OPTIONS;
  return Math.min(o.maxBulkCalls, Math.floor(o.maxServerInflightBytes / o.maxFetchResponseBytes));
}

async function phase(
  label: string,
  server: { port: number; pid: number },
  bodies: readonly Uint8Array[],
  callers: number,
  seconds: number,
): Promise<LoadPhase> {
  const perAddress = Math.min(CALLS_PER_ADDRESS, callers);
  const addresses = Array.from(
    { length: Math.ceil(callers / perAddress) },
    (_, i) => `127.0.${10 + Math.floor(i / 200)}.${10 + (i % 200)}`,
  );
  const memory = rssPeak(server.pid);
  const stopProbe = startLightProbe(server.port, "127.0.9.9", 50);
  const load = await runBulkLoad({
    port: server.port,
    addresses,
    callsPerAddress: perAddress,
    bodies,
    durationMs: seconds * 1000,
    deadlineMs: 30_000,
    threads: 1,
  });
  const light = await stopProbe();
  const peak = memory.stop();
  const ok = load.calls.filter((c) => c.status === 0);
  const refused = load.calls.filter((c) => c.status === RESOURCE_EXHAUSTED);
  const lightMs = light.map((c) => c.ms);
  return {
    label,
    callers,
    mbPerSec: ok.reduce((s, c) => s + c.bytes, 0) / 1e6 / (load.elapsedMs / 1000),
    completed: ok.length,
    refused: refused.length,
    failed: load.calls.length - ok.length - refused.length,
    refusedP50Ms: percentile(
      refused.map((c) => c.ms),
      50,
    ),
    peakRssMb: peak / 1e6,
    lightP50Ms: percentile(lightMs, 50),
    lightP99Ms: percentile(lightMs, 99),
    lightCalls: light.length,
    lightFailed: light.filter((c) => c.status !== "0").length,
  };
}

/**
 * Runs the load bench against a server `start`ed on a store of `refs`' chain (the caller stops
 * it). `seconds` is each phase's length.
 */
export async function loadBench(
  refs: readonly BlockRef[],
  start: () => Promise<ServeProcess>,
  seconds: number,
): Promise<LoadReport> {
  const bodies = fetchBlocksBodies(refs, REFS_PER_CALL);
  const { address, child } = await start();
  const server = { port: Number(address.split(":")[1]), pid: child.pid ?? 0 };
  try {
    const budget = budgetCallers();
    // Warm up (LevelDB's cache, V8's code), then let the heap settle before taking the idle size.
    await phase("warm-up", server, bodies, Math.max(1, budget / 2), Math.min(2, seconds));
    await new Promise((r) => setTimeout(r, 1000));
    const idleRss = procStatusBytes(server.pid, "VmRSS");
    const unloaded = await phase("unloaded", server, bodies, Math.max(1, budget / 2), seconds);
    const phases: LoadPhase[] = [];
    for (const times of [1, 4, 20])
      phases.push(await phase(`${times}×`, server, bodies, budget * times, seconds));
    return {
      budgetCallers: budget,
      idleRssMb: idleRss / 1e6,
      budgetMb: DEFAULT_SERVER_OPTIONS.maxServerInflightBytes / 1e6,
      unloaded,
      phases,
    };
  } finally {
    await stopProcesses([child]);
  }
}

const f = (n: number, d = 1) => n.toFixed(d);

/** The section as `npm run bench` prints it. */
export function formatLoadReport(r: LoadReport): string {
  const lines = [
    `serving under load: one serve process, default limits (budget ${f(r.budgetMb, 0)} MB, ` +
      `${r.budgetCallers} calls' worth), FetchBlocks(1000 refs) callers 8 per source address, light probe every 50 ms`,
    `  unloaded (${r.unloaded.callers} callers)  ${f(r.unloaded.mbPerSec)} MB/s; light p50 ${f(r.unloaded.lightP50Ms)} ms, ` +
      `p99 ${f(r.unloaded.lightP99Ms)} ms; idle RSS ${f(r.idleRssMb, 0)} MB`,
  ];
  for (const p of r.phases)
    lines.push(
      `  ${p.label.padEnd(4)} ${String(p.callers).padStart(4)} callers  ${f(p.mbPerSec)} MB/s, goodput ${f(p.mbPerSec / r.unloaded.mbPerSec, 2)}` +
        `${p.label === "20×" ? " (target ≥ 0.8)" : ""}; completed ${p.completed}, refused ${p.refused} (p50 ${f(p.refusedP50Ms)} ms), failed ${p.failed}; ` +
        `peak RSS ${f(p.peakRssMb, 0)} MB (idle + budget ${f(r.idleRssMb + r.budgetMb, 0)}); ` +
        `light p50 ${f(p.lightP50Ms)} ms, p99 ${f(p.lightP99Ms)} ms (target < 100) of ${p.lightCalls}${p.lightFailed > 0 ? `, ${p.lightFailed} failed` : ""}`,
    );
  return lines.join("\n");
}
