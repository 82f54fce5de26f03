/**
 * Load against a real server from many source addresses, for the overload test and the "load"
 * bench (issue 11). The callers run in worker threads over raw HTTP/2 and never decode what they
 * receive, so that on a 2-core machine the load generator costs far less than the server it
 * loads and the figures are the server's: FetchBlocks calls (gRPC-framed request bodies made
 * once, here), an address honouring a refusal's `retry-after-ms` hint with all its callers, as a
 * node backs off a busy peer (sync/peers.ts), and a light
 * GetCommitAvailability probe on a thread of its own whose latencies are not this process's.
 */
import { readFileSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FetchBlocksRequestSchema } from "../../src/gen/dagsync/v1/sync_pb.js";
import type { BlockRef } from "../../src/gen/dagsync/v1/types_pb.js";
import { WireFetchBlocksResponseSchema } from "../../src/gen/dagsync/wire/v1/wire_pb.js";

/** gRPC status RESOURCE_EXHAUSTED. */
export const RESOURCE_EXHAUSTED = 8;
/** gRPC status DEADLINE_EXCEEDED. */
export const DEADLINE_EXCEEDED = 4;

/** A gRPC length-prefixed frame around an encoded message. */
function grpcFrame(message: Uint8Array): Uint8Array {
  const framed = new Uint8Array(5 + message.length);
  new DataView(framed.buffer).setUint32(1, message.length);
  framed.set(message, 5);
  return framed;
}

/** FetchBlocks request bodies of `refsPerCall` consecutive refs each, ready to send. */
export function fetchBlocksBodies(refs: readonly BlockRef[], refsPerCall: number): Uint8Array[] {
  const bodies: Uint8Array[] = [];
  for (let i = 0; i + refsPerCall <= refs.length; i += refsPerCall)
    bodies.push(
      grpcFrame(
        toBinary(
          FetchBlocksRequestSchema,
          create(FetchBlocksRequestSchema, { refs: refs.slice(i, i + refsPerCall) }),
        ),
      ),
    );
  return bodies;
}

/** The blocks of a FetchBlocks response body as received (gRPC frames). */
export function decodeFetchBlocksBody(body: Uint8Array): Uint8Array[] {
  const blocks: Uint8Array[] = [];
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  for (let at = 0; at + 5 <= body.length; ) {
    const length = view.getUint32(at + 1);
    blocks.push(...fromBinary(WireFetchBlocksResponseSchema, body.subarray(at + 5, at + 5 + length)).blocks);
    at += 5 + length;
  }
  return blocks;
}

export interface BulkLoadOptions {
  readonly port: number;
  /** Source addresses in 127.0.0.0/8, one HTTP/2 connection each. */
  readonly addresses: readonly string[];
  /** Calls each address keeps in flight. */
  readonly callsPerAddress: number;
  /** Request bodies (fetchBlocksBodies); caller k of address a starts at a different one. */
  readonly bodies: readonly Uint8Array[];
  readonly durationMs: number;
  /** Each call's grpc-timeout, ms. */
  readonly deadlineMs: number;
  /** Worker threads sharing the addresses (default 1). */
  readonly threads?: number;
  /** OK answers each thread keeps whole, with the index of the body they answer (default 0). */
  readonly samplesPerThread?: number;
  /** Connection and stream receive window, bytes (default 16 MiB, as PeerClient). */
  readonly windowBytes?: number;
}

export interface CallRecord {
  /** gRPC status, or -1 when the call failed without one (a reset stream, a refused connection). */
  readonly status: number;
  readonly ms: number;
  /** Response bytes received (of OK calls: the answer). */
  readonly bytes: number;
  /** The retry-after-ms trailer as sent, or null. */
  readonly hint: string | null;
  readonly message: string;
}

export interface BulkLoadResult {
  readonly calls: CallRecord[];
  readonly samples: { readonly body: number; readonly payload: Uint8Array }[];
  readonly elapsedMs: number;
}

const LOAD_WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const http2 = require("node:http2");
const net = require("node:net");
const { port, addresses, callsPerAddress, bodies, durationMs, deadlineMs, samples, windowBytes } = workerData;
const calls = [];
const kept = [];
let stopAt = performance.now() + durationMs;
parentPort.on("message", () => { stopAt = 0; });
function open(localAddress) {
  const session = http2.connect("http://127.0.0.1:" + port, {
    createConnection: () => net.connect({ host: "127.0.0.1", port, localAddress }),
    settings: { initialWindowSize: windowBytes },
  });
  session.on("error", () => {});
  session.once("connect", () => { try { session.setLocalWindowSize(windowBytes); } catch {} });
  return session;
}
function call(session, body, keep) {
  return new Promise((resolve) => {
    const started = performance.now();
    let status = -1, hint = null, message = "", bytes = 0;
    const chunks = keep ? [] : undefined;
    const fromHeaders = (h) => {
      if (h["grpc-status"] !== undefined) status = Number(h["grpc-status"]);
      if (h["grpc-message"] !== undefined) message = decodeURIComponent(String(h["grpc-message"]));
      if (h["retry-after-ms"] !== undefined) hint = String(h["retry-after-ms"]);
    };
    let req;
    try {
      req = session.request({
        ":method": "POST", ":path": "/dagsync.v1.StateSync/FetchBlocks",
        "content-type": "application/grpc", te: "trailers", "grpc-timeout": deadlineMs + "m",
      });
    } catch (e) {
      resolve({ status: -1, ms: 0, bytes: 0, hint: null, message: String(e), data: undefined });
      return;
    }
    req.on("response", fromHeaders);
    req.on("trailers", fromHeaders);
    req.on("data", (d) => { bytes += d.length; if (chunks) chunks.push(d); });
    req.on("error", (e) => { if (message === "") message = String(e); });
    req.on("close", () => resolve({ status, ms: performance.now() - started, bytes, hint, message,
      data: chunks && status === 0 ? Buffer.concat(chunks) : undefined }));
    req.end(body);
  });
}
(async () => {
  const sessions = addresses.map(open);
  // Like a node, an address backs off as a whole: a refusal's hint holds all its callers.
  const retryAt = addresses.map(() => 0);
  const sleep = (ms) => new Promise((s) => setTimeout(s, ms));
  await Promise.all(sessions.flatMap((session, a) => Array.from({ length: callsPerAddress }, async (_, k) => {
    let next = (a * 7919 + k * 104729) % bodies.length;
    while (performance.now() < stopAt) {
      const wait = retryAt[a] - performance.now();
      if (wait > 0) { await sleep(wait); continue; }
      const index = next;
      next = (next + 1) % bodies.length;
      const r = await call(session, bodies[index], kept.length < samples);
      if (r.data !== undefined && kept.length < samples) kept.push({ body: index, payload: new Uint8Array(r.data) });
      calls.push({ status: r.status, ms: r.ms, bytes: r.bytes, hint: r.hint, message: r.message });
      if (r.status === 8) retryAt[a] = Math.max(retryAt[a], performance.now() + Math.max(1, Number(r.hint) || 50));
      else if (r.status !== 0) await sleep(20);
    }
  })));
  for (const s of sessions) s.close();
  parentPort.postMessage({ calls, kept });
})();
`;

/** Runs the load for `durationMs` and returns every call's record. */
export async function runBulkLoad(options: BulkLoadOptions): Promise<BulkLoadResult> {
  const threads = Math.max(1, Math.min(options.threads ?? 1, options.addresses.length));
  const started = performance.now();
  const parts = await Promise.all(
    Array.from({ length: threads }, (_, t) => {
      const worker = new Worker(LOAD_WORKER, {
        eval: true,
        workerData: {
          port: options.port,
          addresses: options.addresses.filter((_, i) => i % threads === t),
          callsPerAddress: options.callsPerAddress,
          bodies: options.bodies,
          durationMs: options.durationMs,
          deadlineMs: options.deadlineMs,
          samples: options.samplesPerThread ?? 0,
          windowBytes: options.windowBytes ?? 16 * 1024 * 1024,
        },
      });
      return new Promise<{ calls: CallRecord[]; kept: BulkLoadResult["samples"] }>((resolve, reject) => {
        worker.once("message", (m) => {
          resolve(m);
          void worker.terminate();
        });
        worker.once("error", reject);
      });
    }),
  );
  return {
    calls: parts.flatMap((p) => p.calls),
    samples: parts.flatMap((p) => p.kept),
    elapsedMs: performance.now() - started,
  };
}

const LIGHT_PROBE = `
const { parentPort, workerData } = require("node:worker_threads");
const http2 = require("node:http2");
const net = require("node:net");
const { port, localAddress, everyMs } = workerData;
const session = http2.connect("http://127.0.0.1:" + port, {
  createConnection: () => net.connect({ host: "127.0.0.1", port, localAddress }),
});
session.on("error", () => {});
const results = [];
let running = true;
parentPort.on("message", () => { running = false; });
function call() {
  return new Promise((resolve) => {
    const started = performance.now();
    const req = session.request({
      ":method": "POST", ":path": "/dagsync.v1.StateSync/GetCommitAvailability",
      "content-type": "application/grpc", te: "trailers", "grpc-timeout": "5S",
    });
    let status = "none";
    req.on("response", (h) => { if (h["grpc-status"] !== undefined) status = String(h["grpc-status"]); });
    req.on("trailers", (t) => { status = String(t["grpc-status"]); });
    req.on("data", () => {});
    req.on("close", () => resolve({ status, ms: performance.now() - started }));
    req.on("error", () => {});
    req.end(Buffer.alloc(5));
  });
}
(async () => {
  while (running) {
    results.push(await call());
    await new Promise((r) => setTimeout(r, everyMs));
  }
  session.close();
  parentPort.postMessage(results);
})();
`;

export interface LightCall {
  /** grpc-status as sent ("0" for OK), or "none". */
  readonly status: string;
  readonly ms: number;
}

/**
 * GetCommitAvailability every `everyMs` from `localAddress` on a worker thread of its own;
 * the returned function stops it and gives every call's status and latency.
 */
export function startLightProbe(
  port: number,
  localAddress: string,
  everyMs: number,
): () => Promise<LightCall[]> {
  const worker = new Worker(LIGHT_PROBE, { eval: true, workerData: { port, localAddress, everyMs } });
  const done = new Promise<LightCall[]>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  return async () => {
    worker.postMessage("stop");
    const results = await done;
    await worker.terminate();
    return results;
  };
}

/** A field of /proc/PID/status in bytes (VmRSS, VmHWM; Linux). */
export function procStatusBytes(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (m === null) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** Samples a process's VmRSS every `everyMs`; stop() gives the peak, VmHWM included. */
export function rssPeak(pid: number, everyMs = 50): { stop: () => number } {
  let peak = procStatusBytes(pid, "VmRSS");
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, procStatusBytes(pid, "VmRSS"));
    } catch {
      // the process has exited
    }
  }, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      try {
        peak = Math.max(peak, procStatusBytes(pid, "VmRSS"), procStatusBytes(pid, "VmHWM"));
      } catch {
        // the process has exited
      }
      return peak;
    },
  };
}

/** The p-th percentile (0–100) of `values`, 0 when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
