/**
 * The load bench against another build's serve command, for A/B runs (e.g. the commit before
 * admission): node --import tsx bench/load-against.ts CHECKOUT STORE REFS_STORE [SECONDS]
 * CHECKOUT is a directory holding a built dagsync (its bin/dagsync); STORE is served, REFS_STORE
 * (another store of the same chain) gives the refs.
 */
import { join } from "node:path";
import { allRefs } from "./chain-refs.js";
import { formatLoadReport, loadBench } from "./load.js";
import { startServeProcess } from "./serve-process.js";

const [checkout, store, refsStore, seconds] = process.argv.slice(2);
if (checkout === undefined || store === undefined || refsStore === undefined) {
  console.error("usage: bench/load-against.ts CHECKOUT STORE REFS_STORE [SECONDS]");
  process.exit(2);
}
const r = await loadBench(
  await allRefs(refsStore),
  () => startServeProcess(join(checkout, "bin/dagsync"), store),
  Number(seconds ?? 8),
);
console.log(formatLoadReport(r));
