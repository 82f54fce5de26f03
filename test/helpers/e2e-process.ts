/**
 * Helpers for the multi-process end-to-end tests: free ports, the `dagsync` CLI and tsx scripts as
 * real child processes (output collected, killed in `after`), waits on a server coming up, Admin
 * status and Prometheus scrapes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { type Availability, PeerClient } from "../../src/client/index.js";

/** The repository root: children run from here (bin/dagsync.js, `--import tsx`). */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** A port that was free a moment ago (listen on port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` (sync or async) until it returns a value other than undefined/false. */
export async function waitUntil<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = 30_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError === undefined ? "" : ` (last error: ${String(lastError)})`}`,
      );
    await sleep(intervalMs);
  }
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A child process with its output collected. */
export class Proc {
  private out = "";
  private err = "";
  readonly exited: Promise<Exit>;
  private exitValue: Exit | undefined;
  private readonly listeners = new Set<() => void>();

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      this.out += chunk;
      for (const l of [...this.listeners]) l();
    });
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      this.err += chunk;
    });
    this.exited = new Promise<Exit>((resolve) => {
      child.once("error", () => {
        this.exitValue ??= { code: -1, signal: null };
        resolve(this.exitValue);
      });
      child.once("close", (code, signal) => {
        this.exitValue = { code, signal };
        for (const l of [...this.listeners]) l();
        resolve(this.exitValue);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The exit status once the child has exited (and its pipes closed), else undefined. */
  get exit(): Exit | undefined {
    return this.exitValue;
  }

  stdout(): string {
    return this.out;
  }

  stderr(): string {
    return this.err;
  }

  /** Both streams, for failure messages. */
  output(): string {
    return `--- ${this.name} stdout ---\n${this.out}\n--- ${this.name} stderr ---\n${this.err}`;
  }

  /** Complete stdout lines. */
  lines(): string[] {
    return this.out.split("\n").slice(0, -1);
  }

  /** Sends a signal if the child is still running (never to anything but this child). */
  signal(sig: NodeJS.Signals): void {
    if (this.exitValue === undefined && this.child.exitCode === null && this.child.signalCode === null)
      this.child.kill(sig);
  }

  /** Resolves with the exit status; SIGKILLs and rejects after `timeoutMs`. */
  async wait(timeoutMs: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.signal("SIGKILL");
        reject(new Error(`${this.name} did not exit within ${timeoutMs} ms\n${this.output()}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the child is gone. */
  async stop(graceMs = 8_000): Promise<Exit> {
    if (this.exitValue !== undefined) return this.exitValue;
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Every child a test file starts, so that `after` can stop them all. */
export class ProcGroup {
  private readonly procs = new Set<Proc>();

  add(p: Proc): Proc {
    this.procs.add(p);
    return p;
  }

  /** `node bin/dagsync.js ...args` from the repository root. */
  cli(name: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Proc {
    return this.add(
      new Proc(
        name,
        spawn(process.execPath, ["bin/dagsync.js", ...args], {
          cwd: ROOT,
          env: { ...process.env, ...env },
          stdio: ["ignore", "pipe", "pipe"],
        }),
      ),
    );
  }

  /** `node --import tsx <script> ...args` from the repository root. */
  tsx(name: string, script: string, args: readonly string[]): Proc {
    return this.add(
      new Proc(
        name,
        spawn(process.execPath, ["--import", "tsx", script, ...args], {
          cwd: ROOT,
          env: process.env,
          stdio: ["ignore", "pipe", "pipe"],
        }),
      ),
    );
  }

  /** Stops every child still running: SIGTERM, then SIGKILL. */
  async stopAll(graceMs = 5_000): Promise<void> {
    await Promise.all([...this.procs].map((p) => p.stop(graceMs)));
  }
}

/** Polls GetCommitAvailability until the server at `address` answers; fails early if `proc` exits. */
export async function waitServing(address: string, proc?: Proc, timeoutMs = 30_000): Promise<Availability> {
  const client = new PeerClient(address, { smallCallTimeoutMs: 1_000 });
  try {
    return await waitUntil(
      async () => {
        if (proc?.exit !== undefined)
          throw new ExitedError(`${proc.name} exited (${JSON.stringify(proc.exit)}) before serving`);
        try {
          return await client.getCommitAvailability();
        } catch {
          return undefined;
        }
      },
      `a server on ${address}`,
      timeoutMs,
      100,
    );
  } catch (e) {
    if (e instanceof ExitedError || proc?.exit !== undefined) throw new ExitedError((e as Error).message);
    throw new Error(`${(e as Error).message}${proc === undefined ? "" : `\n${proc.output()}`}`);
  } finally {
    client.close();
  }
}

export class ExitedError extends Error {
  override readonly name = "ExitedError";
}

/**
 * Starts a server process on a free port and waits until it answers; a start that fails because
 * the port was taken meanwhile is retried on another port.
 */
export async function startOnFreePort(
  start: (port: number) => Proc,
  attempts = 3,
): Promise<{ proc: Proc; port: number; address: string }> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    const port = await freePort();
    const proc = start(port);
    const address = `127.0.0.1:${port}`;
    try {
      await waitServing(address, proc);
      return { proc, port, address };
    } catch (e) {
      last = e;
      await proc.stop(1_000);
      if (!(e instanceof ExitedError)) break;
    }
  }
  throw last instanceof Error ? last : new Error(String(last));
}

/**
 * A node that serves on two free ports (`--listen` and `--metrics`, for `dagsync sync` or
 * `dagsync serve`), up and answering on the first: `args(listen, metrics)` gives its command line
 * (after `bin/dagsync.js`). A start that fails because a port was taken meanwhile is retried.
 */
export async function startWithMetrics(
  group: ProcGroup,
  name: string,
  args: (listen: string, metrics: string) => readonly string[],
  attempts = 3,
): Promise<{ proc: Proc; listen: string; metrics: string }> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    const listen = `127.0.0.1:${await freePort()}`;
    const metrics = `127.0.0.1:${await freePort()}`;
    const proc = group.cli(name, args(listen, metrics));
    try {
      await waitServing(listen, proc);
      return { proc, listen, metrics };
    } catch (e) {
      last = e;
      await proc.stop(1_000);
      if (!(e instanceof ExitedError)) break;
    }
  }
  throw last instanceof Error ? last : new Error(String(last));
}

/** `dagsync serve --store STORE --listen 127.0.0.1:PORT [--metrics ...]`, up and answering. */
export async function startValidator(
  group: ProcGroup,
  name: string,
  store: string,
  extra: readonly string[] = [],
): Promise<{ proc: Proc; port: number; address: string }> {
  return startOnFreePort((port) =>
    group.cli(name, ["serve", "--store", store, "--listen", `127.0.0.1:${port}`, ...extra]),
  );
}

/** GET http://ADDRESS/metrics as text. */
export async function scrapeMetrics(address: string): Promise<string> {
  const res = await fetch(`http://${address}/metrics`);
  if (!res.ok) throw new Error(`GET /metrics on ${address}: HTTP ${res.status}`);
  return res.text();
}

/**
 * Sum of the samples of metric `name` whose labels include every label in `labels`
 * (Prometheus text format, label values without escapes).
 */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) have.set(l[1]!, l[2]!);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) sum += Number(m[3]);
  }
  return sum;
}

/** The label values of `label` across the samples of metric `name`. */
export function metricLabels(text: string, name: string, label: string, where: Record<string, string> = {}) {
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const have = new Map<string, string>();
    for (const l of line.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) have.set(l[1]!, l[2]!);
    if (Object.entries(where).every(([k, v]) => have.get(k) === v) && have.has(label))
      out.add(have.get(label)!);
  }
  return out;
}

/** Lines of a pino JSON log (stderr), parsed; other lines are skipped. */
export function logRecords(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not JSON: skip
    }
  }
  return out;
}
