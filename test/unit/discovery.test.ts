/**
 * The discovery loop (src/discovery/discovery.ts) with a fake network, clock and random: it asks
 * fresh peers once and one random known peer per round, introduces itself when it advertises (and
 * re-signs), ingests answers with their `self`, backs off failing addresses, reports each source's
 * addresses, follows committee changes, and saves and reloads the book.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { KnownPeersAnswer } from "../../src/client/peer-client.js";
import { validateSignedNodeInfo } from "../../src/core/index.js";
import { Ed25519Signer, NativeVerifier, signNodeInfo } from "../../src/crypto/index.js";
import { Discovery, PeerBook, type PeerSource } from "../../src/discovery/index.js";

const CHAIN = "dagsync-test";
const verifier = new NativeVerifier();

function key(i: number): Ed25519Signer {
  const seed = new Uint8Array(32);
  new DataView(seed.buffer).setUint32(0, i + 7000);
  return new Ed25519Signer(seed);
}

class FakeNet {
  readonly calls: { address: string; caller: Uint8Array | undefined }[] = [];
  readonly answers = new Map<string, () => KnownPeersAnswer>();
  async getKnownPeers(address: string, caller: Uint8Array | undefined): Promise<KnownPeersAnswer> {
    this.calls.push({ address, caller });
    const a = this.answers.get(address);
    if (a === undefined) throw new Error(`connect ECONNREFUSED ${address}`);
    return a();
  }
}

class MemStore {
  bytes: Uint8Array | undefined;
  saves = 0;
  async putKnownPeers(b: Uint8Array) {
    this.bytes = b;
    this.saves++;
  }
  async getKnownPeers() {
    return this.bytes;
  }
}

function setup(opts: { own?: Ed25519Signer; store?: MemStore; advertise?: boolean } = {}) {
  let now = 1_800_000_000_000;
  const net = new FakeNet();
  const changes: [PeerSource, string[]][] = [];
  const own = opts.own ?? key(999);
  const book = new PeerBook({ chainId: CHAIN, verifier, ownKey: own.publicKey });
  const d = new Discovery({
    book,
    chainId: CHAIN,
    network: net,
    store: opts.store,
    advertise: opts.advertise ? { signer: own, syncAddress: "me:9100" } : undefined,
    onPeersChanged: (s, a) => changes.push([s, a]),
    now: () => now,
    random: () => 0,
    options: { saveDebounceMs: 0 },
  });
  return { d, net, changes, book, tick: (ms: number) => (now += ms), now: () => now };
}

const info = (i: number, addr: string, ts: number) =>
  signNodeInfo(key(i), CHAIN, { syncAddress: addr, timestampMs: ts });

describe("discovery loop", () => {
  test("a single bootstrap address leads to every peer it knows, each asked once; self is ingested", async () => {
    const s = setup();
    const t = s.now();
    s.net.answers.set("boot:1", () => ({
      self: info(1, "boot:1", t),
      peers: [info(2, "v2:1", t), info(3, "v3:1", t)],
    }));
    s.net.answers.set("v2:1", () => ({
      self: info(2, "v2:1", t),
      peers: [info(3, "v3:1", t), info(4, "v4:1", t)],
    }));
    s.net.answers.set("v3:1", () => ({ self: undefined, peers: [] }));
    s.net.answers.set("v4:1", () => ({ self: undefined, peers: [] }));
    await s.d.load();
    s.d.addBootstrap(["boot:1"]);
    await s.d.round();
    assert.deepEqual(s.changes.at(-1), ["exchange", ["v2:1", "v3:1"]]);
    await s.d.round();
    await s.d.round();
    const exchange = s.changes.filter(([src]) => src === "exchange").at(-1)![1];
    assert.deepEqual(
      exchange,
      ["boot:1", "v2:1", "v3:1", "v4:1"].filter((a) => a !== "boot:1"),
    );
    // each of v2, v3, v4 asked once as fresh; the rest are random picks (random() = 0: the best)
    for (const a of ["v3:1", "v4:1"]) assert.ok(s.net.calls.some((c) => c.address === a));
    assert.equal(s.net.calls.filter((c) => c.address === "v4:1").length, 1);
    assert.deepEqual(s.book.stats().known, { committee: 0, bootstrap: 1, exchange: 4, total: 5 });
  });

  test("advertises as caller, re-signs after resignIntervalMs, and an unreachable peer backs off", async () => {
    const s = setup({ advertise: true });
    s.d.addBootstrap(["dead:1"]);
    await s.d.round();
    const c = s.net.calls[0]!.caller!;
    const v = validateSignedNodeInfo(c, {
      chainId: CHAIN,
      verifier,
      nowMs: s.now(),
      ownKey: undefined,
      maxFutureMs: 30_000,
      maxAgeMs: 86_400_000,
      maxAddressBytes: 256,
    });
    assert.ok(v.ok);
    assert.equal(v.ok && v.entry.syncAddress, "me:9100");
    assert.equal(s.d.self(), c);
    s.tick(600_000);
    assert.notDeepEqual(s.d.self(), c);
    assert.equal(s.book.peers()[0]!.consecutiveFailures, 1);
    assert.ok(s.book.peers()[0]!.backoffUntilMs > s.now() - 600_000);
    assert.equal(s.book.stats().dialFailures, 1);
  });

  test("committee change: incoming added, outgoing dropped, reported under committee", async () => {
    const s = setup();
    const v = (i: number) => ({ networkKey: key(i).publicKey, syncAddress: `v${i}:1`, gossipAddress: "" });
    s.d.setCommittee(0, [v(1), v(2), v(3)]);
    const committee = () => s.changes.filter(([src]) => src === "committee").at(-1);
    assert.deepEqual(committee(), ["committee", ["v1:1", "v2:1", "v3:1"]]);
    s.d.setCommittee(1, [v(1), v(2), v(4)]);
    assert.deepEqual(committee(), ["committee", ["v1:1", "v2:1", "v4:1"]]);
    s.d.setCommittee(0, [v(5)]); // older epoch: ignored
    assert.deepEqual(committee(), ["committee", ["v1:1", "v2:1", "v4:1"]]);
  });

  test("bad answers are counted, never fatal; a caller's info is learned", async () => {
    const s = setup();
    const t = s.now();
    s.d.addBootstrap(["b:1"]);
    s.net.answers.set("b:1", () => ({
      self: new Uint8Array([1, 2, 3]),
      peers: [info(5, `${"x".repeat(300)}:1`, t), info(6, "ok:1", t + 31_000), info(999, "own:1", t)],
    }));
    await s.d.round();
    const st = s.book.stats();
    assert.equal(st.known.exchange, 0);
    assert.ok(Object.values(st.rejected).reduce((a, b) => a + b, 0) >= 3);
    s.d.offer(info(7, "caller:1", t));
    assert.deepEqual(s.changes.at(-1), ["exchange", ["caller:1"]]);
  });

  test("the book is saved on change and a restart loads it with no bootstrap", async () => {
    const store = new MemStore();
    const s = setup({ store });
    const t = s.now();
    s.d.addBootstrap(["b:1"]);
    s.net.answers.set("b:1", () => ({ self: info(1, "b:1", t), peers: [info(2, "p2:1", t)] }));
    await s.d.round();
    await new Promise((r) => setTimeout(r, 10));
    await s.d.stop();
    assert.ok(store.saves >= 1);
    const s2 = setup({ store });
    assert.ok((await s2.d.load()) >= 2);
    const all = s2.changes.flatMap(([, a]) => a).sort();
    assert.deepEqual(all, ["b:1", "p2:1"]);
  });
});
