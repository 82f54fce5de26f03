/** Prometheus exposition on `GET /metrics` of a small HTTP server. */
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";

export async function startMetricsServer(
  registry: Registry,
  listen: string,
): Promise<{ port: number; close: () => Promise<void> }> {
  const m = /^(.*):(\d+)$/.exec(listen);
  if (m === null) throw new Error(`--metrics ${listen}: expected HOST:PORT`);
  const server: Server = createServer((req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end("try /metrics\n");
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
      (e: unknown) => res.writeHead(500).end(String(e)),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        new Error(
          e.code === "EADDRINUSE"
            ? `--metrics ${listen}: the port is already in use`
            : `--metrics ${listen}: ${e.message}`,
        ),
      ),
    );
    server.listen(Number(m[2]), m[1], () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === "object" && address !== null ? address.port : 0,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
