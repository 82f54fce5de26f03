/**
 * The load bench against another build's serve command, for A/B runs (e.g. the commit before
 * admission): node --import tsx bench/load-against.ts CHECKOUT STORE REFS_STORE [SECONDS]
 * CHECKOUT is a directory holding a built dagsync (its bin/dagsync); STORE is served, REFS_STORE
 * (another store of the same chain) gives the refs.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { PeerClient } from "../src/client/index.js";
import { allRefs } from "./chain-refs.js";
import { formatLoadReport, loadBench } from "./load.js";

const [checkout, store, refsStore, seconds] = process.argv.slice(2);
if (checkout === undefined || store === undefined || refsStore === undefined) {
  console.error("usage: bench/load-against.ts CHECKOUT STORE REFS_STORE [SECONDS]");
  process.exit(2);
}
const port = 19_000 + Math.floor(Math.random() * 1000);
const r = await loadBench(
  await allRefs(refsStore),
  async () => {
    const address = `127.0.0.1:${port}`;
    const child = spawn(join(checkout, "bin/dagsync"), ["serve", "--store", store, "--listen", address], {
      stdio: ["ignore", "ignore", "inherit"],
      env: { ...process.env, DAGSYNC_LOG_LEVEL: "warn" },
    });
    const client = new PeerClient(address);
    for (let i = 0; ; i++) {
      try {
        await client.getCommitAvailability();
        break;
      } catch (e) {
        if (i > 200) throw e;
        await new Promise((res) => setTimeout(res, 100));
      }
    }
    client.close();
    return { address, child };
  },
  Number(seconds ?? 8),
);
console.log(formatLoadReport(r));
