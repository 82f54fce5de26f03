/**
 * A MEMPOOL flooder in its own process, so that its sending cost does not land on the event loop
 * of the nodes a test measures: it completes the gossip handshake as a committee member, then
 * sends distinct transaction frames at a steady rate while told to.
 *
 *   node --import tsx test/helpers/gossip-flooder.ts ADDRESS CHAIN_ID NETWORK_SEED_HEX PER_SECOND
 *
 * stdin commands, one per line: `flood`, `pause`, `exit`. stdout lines: `ready` after the
 * handshake, `flooding`, `paused`, and `sent N` after each pause. It exits 2 if the listener ends
 * the stream, 1 on any other failure.
 */
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { Ed25519Signer } from "../../src/crypto/index.js";
import { encodeFrame } from "../../src/gossip/frames.js";
import { dialerHandshake, freshHello, RawGossipStream, rawClient } from "./gossip-raw-client.js";

const [address, chainId, seedHex, rateArg] = process.argv.slice(2);
if (address === undefined || chainId === undefined || seedHex === undefined || rateArg === undefined) {
  console.error("usage: gossip-flooder.ts ADDRESS CHAIN_ID NETWORK_SEED_HEX PER_SECOND");
  process.exit(1);
}
const perSecond = Number(rateArg);
const key = new Ed25519Signer(new Uint8Array(Buffer.from(seedHex, "hex")));
const client = rawClient(address);
const stream = new RawGossipStream(client);
let leaving = false;
stream.ended.then((s) => {
  if (leaving) process.exit(0);
  console.log(`ended ${s.codeName} ${s.details}`);
  process.exit(2);
});
await dialerHandshake(stream, key, freshHello(chainId, key));
console.log("ready");

const filler = new Uint8Array(randomBytes(56));
let counter = 0;
let sent = 0;
let timer: NodeJS.Timeout | undefined;

function flood(): void {
  if (timer !== undefined) return;
  const start = performance.now();
  let done = 0;
  timer = setInterval(() => {
    const due = Math.floor(((performance.now() - start) / 1000) * perSecond);
    const n = Math.min(due - done, perSecond / 10); // a stalled loop sends at most 100 ms worth
    for (let i = 0; i < n; i++) {
      const tx = new Uint8Array(64);
      new DataView(tx.buffer).setFloat64(0, counter++);
      tx.set(filler, 8);
      stream.send(encodeFrame("transaction", tx));
    }
    sent += n;
    done = Math.max(done + n, due - perSecond / 10);
  }, 10);
  console.log("flooding");
}

function pause(): void {
  clearInterval(timer);
  timer = undefined;
  console.log("paused");
  console.log(`sent ${sent}`);
}

for await (const line of createInterface({ input: process.stdin })) {
  if (line === "flood") flood();
  else if (line === "pause") pause();
  else if (line === "exit") break;
}
clearInterval(timer);
leaving = true;
stream.cancel();
client.close();
