/**
 * HTTP hosts for archive tests: nginx from Debian (a real static server, as operators would use),
 * and a small Node server that serves a directory with faults on purpose — a 404, a body cut short,
 * a flipped byte, a slow body, a manifest that lies — and records every request with its Range.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { join, normalize } from "node:path";
import { freePort, waitUntil } from "./e2e-process.js";

export const NGINX = "/usr/sbin/nginx";

export interface Host {
  /** Base URL of the archive, e.g. http://127.0.0.1:PORT/archive */
  readonly url: string;
  /** Paths requested so far (relative to the archive root), with their Range header if any. */
  requests(): Promise<{ path: string; range: string | undefined }[]>;
  stop(): Promise<void>;
}

/** nginx serving `root` at /archive on a free loopback port (runs as root when we are root). */
export async function startNginx(root: string, work: string): Promise<Host> {
  await mkdir(join(work, "logs"), { recursive: true });
  const port = await freePort();
  const accessLog = join(work, "logs", "access.log");
  const conf = join(work, "nginx.conf");
  await writeFile(
    conf,
    [
      process.getuid?.() === 0 ? "user root;" : "",
      "worker_processes 1;",
      "daemon off;",
      `pid ${join(work, "nginx.pid")};`,
      `error_log ${join(work, "logs", "error.log")} warn;`,
      "events { worker_connections 256; }",
      "http {",
      `  access_log ${accessLog} combined;`,
      `  client_body_temp_path ${join(work, "tmp")};`,
      `  proxy_temp_path ${join(work, "tmp")};`,
      `  fastcgi_temp_path ${join(work, "tmp")};`,
      `  uwsgi_temp_path ${join(work, "tmp")};`,
      `  scgi_temp_path ${join(work, "tmp")};`,
      "  types { application/json json; }",
      "  default_type application/octet-stream;",
      "  sendfile on;",
      `  server { listen 127.0.0.1:${port}; location /archive/ { alias ${root}/; } }`,
      "}",
    ].join("\n"),
  );
  await mkdir(join(work, "tmp"), { recursive: true });
  const proc: ChildProcess = spawn(NGINX, ["-p", work, "-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const url = `http://127.0.0.1:${port}/archive`;
  await waitUntil(
    async () => {
      if (proc.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
      const res = await fetch(`${url}/`).catch(() => undefined);
      return res !== undefined;
    },
    "nginx to answer",
    10_000,
  );
  return {
    url,
    async requests() {
      if (!existsSync(accessLog)) return [];
      const lines = (await readFile(accessLog, "utf8")).split("\n").filter((l) => l !== "");
      return lines.flatMap((l) => {
        const m = /"GET \/archive\/(\S*) HTTP/.exec(l);
        return m === null ? [] : [{ path: m[1]!, range: undefined }];
      });
    },
    async stop() {
      if (proc.exitCode === null) {
        proc.kill("SIGQUIT");
        await new Promise((r) => proc.once("exit", r));
      }
    },
  };
}

export interface Faults {
  /** Answer 404 for these paths. */
  readonly missing?: readonly string[];
  /** Close the connection after this many body bytes of these paths (every time, or `times` times). */
  readonly cut?: { readonly path: string; readonly afterBytes: number; readonly times?: number };
  /** Flip the byte at this offset of this path's body. */
  readonly flip?: { readonly path: string; readonly at: number };
  /** Send bodies at most this fast, bytes per second. */
  readonly bytesPerSecond?: number;
  /** Replace manifest.json's text. */
  readonly manifest?: (text: string) => string;
}

/** A Node HTTP server of `root` at /archive with `faults`; Range requests are honoured. */
export async function startFaultServer(
  root: string,
  faults: Faults = {},
): Promise<Host & { faults: Faults }> {
  const log: { path: string; range: string | undefined }[] = [];
  let cutsLeft = faults.cut?.times ?? Number.POSITIVE_INFINITY;
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (!url.pathname.startsWith("/archive/")) {
      res.writeHead(404).end();
      return;
    }
    const path = decodeURIComponent(url.pathname.slice("/archive/".length));
    log.push({ path, range: req.headers.range });
    const file = normalize(join(root, path));
    if (!file.startsWith(root) || faults.missing?.includes(path)) {
      res.writeHead(404).end("not found");
      return;
    }
    let body: Buffer;
    try {
      if (!(await stat(file)).isFile()) throw new Error("not a file");
      body = await readFile(file);
    } catch {
      res.writeHead(404).end("not found");
      return;
    }
    if (path === "manifest.json" && faults.manifest !== undefined)
      body = Buffer.from(faults.manifest(body.toString("utf8")));
    if (faults.flip?.path === path && faults.flip.at < body.length) {
      body = Buffer.from(body);
      body[faults.flip.at] = body[faults.flip.at]! ^ 0xff;
    }
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (range !== null) {
      start = Number(range[1]);
      if (start >= body.length) {
        res.writeHead(416, { "content-range": `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, {
        "content-length": body.length - start,
        "content-range": `bytes ${start}-${body.length - 1}/${body.length}`,
      });
    } else res.writeHead(200, { "content-length": body.length });
    let part = body.subarray(start);
    if (faults.cut?.path === path && cutsLeft > 0) {
      cutsLeft--;
      const keep = Math.max(0, faults.cut.afterBytes - start);
      res.write(part.subarray(0, keep), () => res.destroy());
      return;
    }
    const rate = faults.bytesPerSecond;
    if (rate === undefined) {
      res.end(part);
      return;
    }
    const step = Math.max(1, Math.floor(rate / 20));
    const timer = setInterval(() => {
      if (part.length === 0 || res.destroyed) {
        clearInterval(timer);
        res.end();
        return;
      }
      res.write(part.subarray(0, step));
      part = part.subarray(step);
    }, 50);
    res.on("close", () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/archive`,
    faults,
    async requests() {
      return log.slice();
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
