import { PeerClient } from "../src/client/index.js";
for (const a of ["bad host:1", "[::1:9100", "a:99999"]) {
  try { const c = new PeerClient(a); const p = c.getCommitAvailability({ signal: AbortSignal.timeout(500) }); console.log(a, "no sync throw"); await p.catch((e) => console.log("  async:", String(e).slice(0, 100))); }
  catch (e) { console.log(a, "SYNC THROW:", String(e).slice(0, 100)); }
}
