/**
 * `dagsync serve` processes for the benches: started from a given command (bin/dagsync of this
 * checkout or another, for A/B runs), ready once they answer GetCommitAvailability, and stopped
 * with SIGTERM (they drain, then exit).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { PeerClient } from "../src/client/index.js";

export interface ServeProcess {
  /** "HOST:PORT" (HOST 127.0.0.1 unless another loopback address was asked for) */
  readonly address: string;
  readonly child: ChildProcess;
}

export async function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, host, () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a !== null ? a.port : 0));
    });
  });
}

/**
 * Starts `cli serve` on `store` at a free port of `host` (a loopback address) and waits until it
 * answers.
 */
export async function startServeProcess(
  cli: string,
  store: string,
  host = "127.0.0.1",
): Promise<ServeProcess> {
  const port = await freePort(host);
  const address = `${host}:${port}`;
  const child = spawn(cli, ["serve", "--store", store, "--listen", address], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, DAGSYNC_LOG_LEVEL: "warn" },
  });
  const client = new PeerClient(address);
  try {
    for (let i = 0; ; i++) {
      try {
        await client.getCommitAvailability();
        return { address, child };
      } catch (e) {
        if (i > 200) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    client.close();
  }
}

/** SIGTERM to each process still running, and waits for all of them to exit. */
export async function stopProcesses(children: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null) return resolve();
          c.once("exit", () => resolve());
          c.kill("SIGTERM");
        }),
    ),
  );
}
