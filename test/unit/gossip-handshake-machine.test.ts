/**
 * The handshake state machine of the live channel (src/gossip/handshake-machine.ts), both roles,
 * without gRPC: the happy path; adversarial sequences (wrong message order, junk, replayed and
 * mismatched nonces, wrong chain, unknown and blocked keys, stale and future Hellos, another
 * listener key, timeout); transitions called from the wrong state; and the stream driver.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, test } from "node:test";
import fc from "fast-check";
import { Ed25519Signer, NativeVerifier } from "../../src/crypto/index.js";
import { encodeAuth, encodeFrame, encodeHello } from "../../src/gossip/frames.js";
import { type HelloView, NonceCache, type Role, sameKey, transcript } from "../../src/gossip/handshake.js";
import {
  Handshake,
  type HandshakeContext,
  HandshakeError,
  type HandshakeErrorCode,
  type HandshakeState,
  runHandshake,
} from "../../src/gossip/handshake-machine.js";

const CHAIN = "unit-chain";
const verifier = new NativeVerifier();
const dialerKey = Ed25519Signer.generate();
const listenerKey = Ed25519Signer.generate();
const stranger = Ed25519Signer.generate();

function clock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

interface World {
  readonly clock: ReturnType<typeof clock>;
  readonly nonces: NonceCache;
  allowed: Uint8Array[];
  blocked: Uint8Array[];
}

function world(): World {
  const c = clock();
  return {
    clock: c,
    nonces: new NonceCache(15_000),
    allowed: [dialerKey.publicKey, listenerKey.publicKey],
    blocked: [],
  };
}

function hello(key: Ed25519Signer, w: World, fields: Partial<HelloView> = {}): HelloView {
  return {
    chainId: CHAIN,
    networkKey: key.publicKey,
    timestampMs: w.clock.now(),
    nonce: new Uint8Array(32).map(() => Math.floor(Math.random() * 256)),
    ...fields,
  };
}

function context(key: Ed25519Signer, w: World, expectedKey?: Uint8Array): HandshakeContext {
  return {
    chainId: CHAIN,
    signer: key,
    verifier,
    policy: () => ({
      chainId: CHAIN,
      now: w.clock.now(),
      maxAgeMs: 10_000,
      maxSkewMs: 5_000,
      isAllowed: (k) => w.allowed.some((a) => sameKey(a, k)),
      blockedUntil: (k) => (w.blocked.some((b) => sameKey(b, k)) ? w.clock.now() + 60_000 : 0),
    }),
    admitNonce: (nonce) => w.nonces.admit(nonce, w.clock.now()),
    expectedKey,
  };
}

function machine(role: Role, w: World, opts: { mine?: HelloView; expectedKey?: Uint8Array } = {}): Handshake {
  const key = role === "dialer" ? dialerKey : listenerKey;
  return new Handshake(role, opts.mine ?? hello(key, w), context(key, w, opts.expectedKey));
}

function helloFrame(h: HelloView): Uint8Array {
  return encodeHello({ ...h, timestampMs: BigInt(h.timestampMs) });
}

/** Feeds every frame to `to`; returns what it sends back. */
function feed(to: Handshake, frames: Uint8Array[]): Uint8Array[] {
  return frames.flatMap((f) => to.receive(f));
}

function failedWith(h: Handshake, code: HandshakeErrorCode, message?: RegExp | string): HandshakeError {
  const s = h.state;
  assert.equal(s.status, "failed", `expected failed ${code}, state is ${s.status}`);
  assert.ok(s.status === "failed");
  assert.ok(s.error instanceof HandshakeError);
  assert.equal(s.error.code, code, s.error.message);
  if (typeof message === "string") assert.equal(s.error.message, message);
  else if (message !== undefined) assert.match(s.error.message, message);
  return s.error;
}

function established(h: Handshake): Extract<HandshakeState, { status: "established" }> {
  const s = h.state;
  assert.equal(s.status, "established", s.status === "failed" ? s.error.message : s.status);
  return s as Extract<HandshakeState, { status: "established" }>;
}

describe("gossip handshake machine: both roles", () => {
  test("dialer and listener establish, each knowing the other's Hello; frames are 1 hello, then hello + auth, then auth", () => {
    const w = world();
    const d = machine("dialer", w, { expectedKey: listenerKey.publicKey });
    const l = machine("listener", w);
    assert.equal(d.state.status, "awaiting_hello");
    assert.deepEqual(l.opening(), []);
    const opening = d.opening();
    assert.equal(opening.length, 1);
    const answer = feed(l, opening);
    assert.equal(answer.length, 2, "listener answers Hello and Auth");
    assert.equal(l.state.status, "awaiting_auth");
    const last = feed(d, answer);
    assert.equal(last.length, 1, "dialer answers Auth");
    assert.equal(feed(l, last).length, 0);
    const ds = established(d);
    const ls = established(l);
    assert.ok(sameKey(ds.theirs.networkKey, listenerKey.publicKey));
    assert.ok(sameKey(ls.theirs.networkKey, dialerKey.publicKey));
    assert.deepEqual(ds.mine, ls.theirs);
    assert.deepEqual(ls.mine, ds.theirs);
  });

  test("the signatures are over T(role) of the documented transcript, dialer's Hello first", () => {
    const w = world();
    const dh = hello(dialerKey, w);
    const lh = hello(listenerKey, w);
    const d = machine("dialer", w, { mine: dh });
    const l = machine("listener", w, { mine: lh });
    const [, listenerAuth] = feed(l, d.opening());
    const [dialerAuth] = feed(d, [helloFrame(lh), listenerAuth!]);
    assert.deepEqual(listenerAuth, encodeAuth(listenerKey.sign(transcript("listener", CHAIN, dh, lh))));
    assert.deepEqual(dialerAuth, encodeAuth(dialerKey.sign(transcript("dialer", CHAIN, dh, lh))));
  });
});

describe("gossip handshake machine: adversarial sequences", () => {
  test("listener: any frame but a Hello first fails UNEXPECTED_FRAME, UNAUTHENTICATED", () => {
    for (const [frame, kind] of [
      [encodeAuth(new Uint8Array(64)), "auth"],
      [encodeFrame("block", new Uint8Array([1, 2])), "block"],
      [encodeFrame("transaction", new Uint8Array([3])), "transaction"],
    ] as const) {
      const l = machine("listener", world());
      assert.deepEqual(l.receive(frame), []);
      const e = failedWith(l, "UNEXPECTED_FRAME", `${kind} frame before the handshake`);
      assert.equal(e.kind, "unauthenticated");
    }
  });

  test("listener: a second Hello (or a lane frame) where the Auth belongs fails UNEXPECTED_FRAME", () => {
    const w = world();
    const l = machine("listener", w);
    feed(l, [helloFrame(hello(dialerKey, w))]);
    feed(l, [helloFrame(hello(dialerKey, w))]);
    failedWith(l, "UNEXPECTED_FRAME", "hello frame before the handshake finished");
    const l2 = machine("listener", w);
    feed(l2, [helloFrame(hello(dialerKey, w))]);
    feed(l2, [encodeFrame("block", new Uint8Array([9]))]);
    failedWith(l2, "UNEXPECTED_FRAME", "block frame before the handshake finished");
  });

  test("dialer: Auth before the listener's Hello, or a Hello where the Auth belongs, fails UNEXPECTED_FRAME", () => {
    const w = world();
    const d = machine("dialer", w);
    d.opening();
    feed(d, [encodeAuth(new Uint8Array(64))]);
    failedWith(d, "UNEXPECTED_FRAME", "listener sent auth before hello");
    const d2 = machine("dialer", w);
    feed(d2, [helloFrame(hello(listenerKey, w)), helloFrame(hello(listenerKey, w))]);
    failedWith(d2, "UNEXPECTED_FRAME", "listener sent hello before auth");
  });

  test("junk bytes and undecodable payloads fail JUNK_FRAME, BAD_HELLO, BAD_AUTH", () => {
    const w = world();
    const l = machine("listener", w);
    l.receive(new Uint8Array([0xff, 0xff, 0xff]));
    failedWith(l, "JUNK_FRAME", /^junk before the handshake: /);
    const l2 = machine("listener", w);
    l2.receive(encodeFrame("hello", new Uint8Array([0xff])));
    failedWith(l2, "BAD_HELLO", "hello does not decode");
    const l3 = machine("listener", w);
    feed(l3, [helloFrame(hello(dialerKey, w)), encodeFrame("auth", new Uint8Array([0xff]))]);
    failedWith(l3, "BAD_AUTH", "auth does not decode");
    const d = machine("dialer", w);
    d.receive(new Uint8Array([0]));
    failedWith(d, "JUNK_FRAME", "junk from listener");
  });

  test("a replayed Hello (nonce already seen) is refused by the listener, even on another stream", () => {
    const w = world();
    const replayed = helloFrame(hello(dialerKey, w));
    const first = machine("listener", w);
    assert.equal(feed(first, [replayed]).length, 2);
    w.clock.advance(1_000);
    const second = machine("listener", w);
    assert.deepEqual(second.receive(replayed), []);
    failedWith(second, "REPLAYED_NONCE", "replayed hello (nonce already seen)");
  });

  test("mismatched nonces: an Auth signed for another session never verifies, on either side", () => {
    const w = world();
    // The dialer gets a listener's Hello and Auth that were made for another dialer Hello (another nonce).
    const other = machine("listener", w);
    const stolen = feed(other, [helloFrame(hello(dialerKey, w))]);
    const d = machine("dialer", w);
    d.opening();
    feed(d, stolen);
    failedWith(d, "BAD_SIGNATURE", "bad listener transcript signature");
    // The listener gets a dialer Auth from another session with the same dialer key.
    const d1 = machine("dialer", w);
    const l1 = machine("listener", w);
    const [dialerAuth] = feed(d1, feed(l1, d1.opening()));
    const l2 = machine("listener", w);
    feed(l2, [helloFrame(hello(dialerKey, w)), dialerAuth!]);
    failedWith(l2, "BAD_SIGNATURE", "bad transcript signature");
  });

  test("a Hello of the listener with its nonce swapped (same Auth) fails the dialer's check", () => {
    const w = world();
    const d = machine("dialer", w);
    const l = machine("listener", w);
    const [lh, la] = feed(l, d.opening());
    assert.ok(lh !== undefined && la !== undefined);
    const st = l.state;
    assert.ok(st.status === "awaiting_auth");
    const swapped = helloFrame({ ...st.mine, nonce: new Uint8Array(32).fill(7) });
    feed(d, [swapped, la]);
    failedWith(d, "BAD_SIGNATURE");
  });

  test("wrong chain, unknown key and blocked key are PERMISSION_DENIED; the listener sends nothing back", () => {
    const w = world();
    const wrongChain = machine("listener", w);
    assert.deepEqual(wrongChain.receive(helloFrame(hello(dialerKey, w, { chainId: "fork" }))), []);
    const e1 = failedWith(wrongChain, "WRONG_CHAIN", `wrong chain: "fork", this node is on "${CHAIN}"`);
    assert.equal(e1.kind, "permission");
    const unknown = machine("listener", w);
    assert.deepEqual(unknown.receive(helloFrame(hello(stranger, w))), []);
    assert.equal(failedWith(unknown, "KEY_NOT_ALLOWED", /is not in the allowed set/).kind, "permission");
    w.blocked.push(dialerKey.publicKey);
    const blocked = machine("listener", w);
    blocked.receive(helloFrame(hello(dialerKey, w)));
    assert.equal(failedWith(blocked, "PEER_BLOCKED", /blocked for misbehaviour/).kind, "permission");
  });

  test("the dialer checks the listener's Hello too: wrong chain, unknown key, another key than expected", () => {
    const w = world();
    const d = machine("dialer", w);
    d.receive(helloFrame(hello(listenerKey, w, { chainId: "fork" })));
    failedWith(d, "WRONG_CHAIN", /^listener refused: wrong chain/);
    const d2 = machine("dialer", w);
    d2.receive(helloFrame(hello(stranger, w)));
    failedWith(d2, "KEY_NOT_ALLOWED", /^listener refused: network key/);
    w.allowed.push(stranger.publicKey);
    const d3 = machine("dialer", w, { expectedKey: listenerKey.publicKey });
    d3.receive(helloFrame(hello(stranger, w)));
    failedWith(d3, "WRONG_KEY", "listener has another network key");
  });

  test("stale and future Hellos, by the injected clock: UNAUTHENTICATED", () => {
    const w = world();
    const stale = hello(dialerKey, w);
    w.clock.advance(10_001);
    const l = machine("listener", w);
    l.receive(helloFrame(stale));
    assert.equal(failedWith(l, "STALE_HELLO", /stale hello: timestamp 10001 ms old/).kind, "unauthenticated");
    const l2 = machine("listener", w);
    l2.receive(helloFrame(hello(dialerKey, w, { timestampMs: w.clock.now() + 5_001 })));
    failedWith(l2, "FUTURE_HELLO", /5001 ms ahead/);
    const l3 = machine("listener", w);
    l3.receive(helloFrame(hello(dialerKey, w, { timestampMs: w.clock.now() - 9_000 })));
    assert.equal(l3.state.status, "awaiting_auth", "inside the window");
  });

  test("bad key and nonce lengths fail before anything else is checked", () => {
    const w = world();
    const l = machine("listener", w);
    l.receive(helloFrame(hello(dialerKey, w, { networkKey: new Uint8Array(31), chainId: "fork" })));
    failedWith(l, "BAD_KEY_LENGTH");
    const l2 = machine("listener", w);
    l2.receive(helloFrame(hello(dialerKey, w, { nonce: new Uint8Array(8) })));
    failedWith(l2, "BAD_NONCE_LENGTH");
  });

  test("timeout from either waiting state; role-specific message", () => {
    const w = world();
    const l = machine("listener", w);
    l.timeout(5_000);
    failedWith(l, "TIMEOUT", "handshake not finished within 5000 ms");
    const d = machine("dialer", w);
    feed(d, [helloFrame(hello(listenerKey, w))]);
    assert.equal(d.state.status, "awaiting_auth");
    d.timeout(5_000);
    failedWith(d, "TIMEOUT", "handshake timeout");
  });

  test("no sequence of arbitrary frames establishes a listener, and it fails at the first one", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { minLength: 1, maxLength: 6 }), (frames) => {
        const l = machine("listener", world());
        l.receive(frames[0]!);
        // Arbitrary bytes are at best a Hello that does not pass the checks.
        assert.equal(l.state.status, "failed");
        for (const f of frames.slice(1)) assert.throws(() => l.receive(f), { code: "WRONG_STATE" });
      }),
      { numRuns: 300 },
    );
  });

  test("a dialer given arbitrary Auth bytes after a good Hello never establishes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 80 }), (sig) => {
        const w = world();
        const d = machine("dialer", w);
        d.opening();
        d.receive(helloFrame(hello(listenerKey, w)));
        assert.deepEqual(d.receive(encodeAuth(sig)), []);
        assert.equal(d.state.status, "failed");
      }),
      { numRuns: 100 },
    );
  });
});

describe("gossip handshake machine: transitions check the state they leave", () => {
  test("wrong-state calls throw WRONG_STATE and leave the state alone", () => {
    const w = world();
    const l = machine("listener", w);
    assert.throws(() => l.receiveAuth(new Uint8Array()), { code: "WRONG_STATE" });
    assert.equal(l.state.status, "awaiting_hello");
    feed(l, [helloFrame(hello(dialerKey, w))]);
    assert.throws(() => l.opening(), { code: "WRONG_STATE" });
    assert.throws(() => l.receiveHello(new Uint8Array()), { code: "WRONG_STATE" });
    assert.equal(l.state.status, "awaiting_auth");
    l.timeout(1);
    assert.throws(() => l.timeout(1), { code: "WRONG_STATE" });
    assert.throws(() => l.streamClosed("x"), { code: "WRONG_STATE" });
    assert.throws(() => l.receive(new Uint8Array([1])), { code: "WRONG_STATE" });
    failedWith(l, "TIMEOUT");
  });

  test("established is final", () => {
    const w = world();
    const d = machine("dialer", w);
    const l = machine("listener", w);
    feed(l, feed(d, feed(l, d.opening())));
    established(l);
    assert.throws(() => l.receive(helloFrame(hello(dialerKey, w))), { code: "WRONG_STATE" });
    assert.throws(() => l.fail(new HandshakeError("TIMEOUT", "x")), { code: "WRONG_STATE" });
    established(l);
  });
});

/** A fake stream end: `written` holds what was written; `peer` is fed to the other end. */
class FakeStream extends EventEmitter {
  readonly written: Uint8Array[] = [];
  peer: FakeStream | undefined;
  write(frame: Uint8Array): boolean {
    this.written.push(frame);
    const peer = this.peer;
    if (peer !== undefined) queueMicrotask(() => peer.emit("data", frame));
    return true;
  }
}

describe("runHandshake: the driver both roles use", () => {
  test("two ends over fake streams settle established, once each, and stop listening to data", async () => {
    const w = world();
    const a = new FakeStream();
    const b = new FakeStream();
    a.peer = b;
    b.peer = a;
    const settled: string[] = [];
    const done = Promise.all([
      new Promise<void>((resolve) =>
        runHandshake(machine("listener", w), b, 1_000, (s) => {
          settled.push(`listener ${s.status}`);
          resolve();
        }),
      ),
      new Promise<void>((resolve) =>
        runHandshake(machine("dialer", w), a, 1_000, (s) => {
          settled.push(`dialer ${s.status}`);
          resolve();
        }),
      ),
    ]);
    await done;
    assert.deepEqual(settled.sort(), ["dialer established", "listener established"]);
    assert.equal(a.listenerCount("data"), 0);
    assert.equal(b.listenerCount("data"), 0);
    assert.equal(a.written.length, 2, "dialer wrote Hello and Auth");
    assert.equal(b.written.length, 2, "listener wrote Hello and Auth");
  });

  test("a silent peer: the timeout fails the handshake", async () => {
    const s = new FakeStream();
    const state = await new Promise<HandshakeState>((resolve) =>
      runHandshake(machine("listener", world()), s, 20, resolve),
    );
    assert.equal(state.status, "failed");
    assert.ok(state.status === "failed" && state.error.code === "TIMEOUT");
  });

  test("abort takes the failing edge once; dispose settles nothing", async () => {
    const s = new FakeStream();
    const states: HandshakeState[] = [];
    const run = runHandshake(machine("dialer", world()), s, 1_000, (st) => states.push(st));
    run.abort((h) => h.streamClosed("stream ended during the handshake"));
    run.abort((h) => h.streamClosed("again"));
    assert.equal(states.length, 1);
    assert.ok(states[0]?.status === "failed" && states[0].error.code === "STREAM_CLOSED");
    assert.equal(states[0].error.message, "stream ended during the handshake");
    const s2 = new FakeStream();
    const run2 = runHandshake(machine("listener", world()), s2, 10, () =>
      assert.fail("settled after dispose"),
    );
    run2.dispose();
    s2.emit("data", new Uint8Array([1]));
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(run2.handshake.state.status, "awaiting_hello");
  });
});
