/** Connection caps of the sync server (src/server/session-limit.ts), with real HTTP/2 sessions. */
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { DevnetChain } from "../../src/devnet/chain.js";
import type { Store } from "../../src/store/index.js";
import { buildStore, type RunningServer, removeDir, startServer, tempDir } from "../helpers/server.js";

let dir: string;
let store: Store;
let srv: RunningServer;

/** An HTTP/2 session from `localAddress`; resolves "open" after a ping succeeds, or "closed". */
function session(localAddress: string): Promise<{ state: "open" | "closed"; close(): void }> {
  return new Promise((resolve) => {
    const s = http2.connect(`http://127.0.0.1:${srv.port}`, {
      createConnection: () => net.connect({ host: "127.0.0.1", port: srv.port, localAddress }),
    });
    const close = () => s.destroy();
    s.on("error", () => {});
    s.once("close", () => resolve({ state: "closed", close }));
    s.once("connect", () => {
      // The server may close it right after the handshake: a ping tells.
      setTimeout(() => {
        if (s.closed || s.destroyed) return;
        s.ping((err) => resolve({ state: err === null ? "open" : "closed", close }));
      }, 100);
    });
  });
}

describe("server connection caps", () => {
  before(async () => {
    dir = await tempDir("dagsync-sessions-");
    ({ store } = await buildStore(
      `${dir}/store`,
      new DevnetChain({ validators: 4, epochs: 1, commitsPerEpoch: 5, txsPerBlock: 1, txBytes: 8, seed: 3 }),
    ));
    srv = await startServer(store, { options: { maxSessionsPerPeer: 2, maxSessions: 3 } });
  });
  after(async () => {
    await srv.stop();
    await store.close();
    await removeDir(dir);
  });

  test("per address: the third session from one address is closed; another address still connects; the server cap holds", async () => {
    const a1 = await session("127.0.0.21");
    const a2 = await session("127.0.0.21");
    const a3 = await session("127.0.0.21");
    assert.deepEqual([a1.state, a2.state, a3.state], ["open", "open", "closed"]);
    const b1 = await session("127.0.0.22");
    assert.equal(b1.state, "open", "another address is under its own cap");
    const c1 = await session("127.0.0.23");
    assert.equal(c1.state, "closed", "the server-wide cap of 3 sessions holds");
    assert.equal(srv.server.sessions.sessions, 3);
    assert.ok(srv.server.sessions.refused >= 2);
    for (const s of [a1, a2, b1]) s.close();
    // Closed sessions free their places.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(srv.server.sessions.sessions, 0);
    const again = await session("127.0.0.21");
    assert.equal(again.state, "open");
    again.close();
  });
});
