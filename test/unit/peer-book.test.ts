/**
 * The known set (DESIGN.md §9, src/discovery/peer-book.ts): a newer timestamp replaces an older
 * one, an answer of 500 entries is read up to 200 and the rest counted, bad entries are counted by
 * reason and never fatal, a committee change drops departed validators, the set stays bounded
 * without evicting committee or bootstrap entries, and failing addresses back off.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { Ed25519Signer, NativeVerifier, signNodeInfo } from "../../src/crypto/index.js";
import { PeerBook } from "../../src/discovery/index.js";

const CHAIN = "dagsync-test";
const NOW = 1_800_000_000_000;
const verifier = new NativeVerifier();
const own = new Ed25519Signer(new Uint8Array(32).fill(1));

function key(i: number): Ed25519Signer {
  const seed = new Uint8Array(32);
  new DataView(seed.buffer).setUint32(0, i + 1000);
  return new Ed25519Signer(seed);
}

const signers = Array.from({ length: 600 }, (_, i) => key(i));

function info(i: number, timestampMs = NOW, syncAddress = `10.0.${Math.floor(i / 250)}.${i % 250}:9100`) {
  return signNodeInfo(signers[i]!, CHAIN, { syncAddress, timestampMs });
}

function book(options = {}) {
  return new PeerBook({ chainId: CHAIN, verifier, ownKey: own.publicKey, options });
}

function validator(i: number) {
  return {
    networkKey: signers[i]!.publicKey,
    syncAddress: `validator-${i}:9100`,
    gossipAddress: `validator-${i}:9101`,
  };
}

describe("peer book", () => {
  test("a newer timestamp replaces an older one; an older or equal one is kept out", () => {
    const b = book();
    assert.equal(b.offer(info(0, NOW - 1000, "a:1"), NOW), "added");
    assert.equal(b.offer(info(0, NOW - 2000, "b:1"), NOW), "not_newer");
    assert.equal(b.offer(info(0, NOW - 1000, "b:1"), NOW), "not_newer");
    assert.equal(b.peers()[0]?.syncAddress, "a:1");
    assert.equal(b.offer(info(0, NOW, "c:1"), NOW), "updated");
    assert.equal(b.size, 1);
    assert.equal(b.peers()[0]?.syncAddress, "c:1");
    assert.equal(b.peers()[0]?.timestampMs, NOW);
  });

  test("500 entries in one answer: 200 considered, 300 ignored and counted", () => {
    const b = book();
    const peers = Array.from({ length: 500 }, (_, i) => info(i));
    const r = b.ingest({ self: info(599), peers }, NOW);
    assert.equal(r.added, 201); // self plus 200
    assert.equal(r.ignored, 300);
    assert.equal(b.size, 201);
    assert.equal(b.stats().ignoredOverLimit, 300);
    assert.equal(b.stats().known.exchange, 201);
  });

  test("bad entries are counted by reason and never stop the answer", () => {
    const b = book();
    const flipped = info(1).slice();
    flipped[flipped.length - 1]! ^= 1;
    const r = b.ingest(
      {
        self: undefined,
        peers: [
          info(0),
          flipped,
          info(2, NOW + 31_000),
          info(3, NOW - 25 * 3600_000),
          info(4, NOW, `${"a".repeat(295)}:9100`),
          signNodeInfo(own, CHAIN, { syncAddress: "me:1", timestampMs: NOW }),
          new Uint8Array([1, 2, 3]),
          info(5),
        ],
      },
      NOW,
    );
    assert.equal(r.added, 2);
    assert.deepEqual(r.rejected, {
      malformed: 1,
      own_key: 1,
      bad_address: 1,
      future_timestamp: 1,
      stale_timestamp: 1,
      bad_signature: 1,
    });
    assert.deepEqual(b.stats().rejected, r.rejected);
    assert.equal(b.size, 2);
  });

  test("a committee change drops departed validators and adds incoming ones", () => {
    const b = book();
    assert.ok(b.setCommittee(0, [0, 1, 2, 3].map(validator)));
    // Validator 3 is also known through exchange: it stays when it leaves the committee.
    b.offer(info(3, NOW, "v3-elsewhere:9100"), NOW);
    assert.equal(b.stats().known.committee, 4);
    assert.ok(b.setCommittee(1, [0, 1, 2, 4].map(validator)));
    const byKey = new Map(b.peers().map((p) => [p.id, p]));
    assert.equal(b.stats().known.committee, 4);
    assert.equal(b.size, 5);
    const v3 = b.peers().find((p) => p.syncAddress === "v3-elsewhere:9100");
    assert.deepEqual(v3?.sources, ["exchange"]);
    assert.ok([...byKey.values()].some((p) => p.syncAddress === "validator-4:9100"));
    assert.ok(![...byKey.values()].some((p) => p.syncAddress === "validator-3:9100"));
    // Departed 3 without exchange would be gone entirely: epoch 2 drops 2.
    b.setCommittee(2, [0, 1, 4].map(validator));
    assert.ok(!b.peers().some((p) => p.syncAddress === "validator-2:9100"));
    // An older epoch is ignored.
    assert.equal(b.setCommittee(1, [5].map(validator)), false);
    assert.equal(b.epoch, 2);
  });

  test("our own key is never a committee peer", () => {
    const b = book();
    b.setCommittee(0, [validator(0), { networkKey: own.publicKey, syncAddress: "me:1", gossipAddress: "" }]);
    assert.equal(b.size, 1);
  });

  test("bootstrap addresses have no key; malformed ones are refused", () => {
    const b = book();
    assert.deepEqual(b.addBootstrap(["seed-1:9100", "bad address", "seed-2:9100"]), ["bad address"]);
    assert.equal(b.stats().known.bootstrap, 2);
    assert.ok(b.peers().every((p) => p.networkKey === undefined && p.source === "bootstrap"));
  });

  test("pick: committee, then bootstrap, then exchange; one per address; none in backoff", () => {
    const b = book();
    b.offer(info(10, NOW, "x:1"), NOW);
    b.addBootstrap(["boot:1"]);
    b.setCommittee(0, [validator(0), validator(1)]);
    b.offer(info(11, NOW, "boot:1"), NOW); // same address as the bootstrap entry
    const order = b.pick(10, NOW).map((p) => p.syncAddress);
    assert.deepEqual(order.slice(0, 2).sort(), ["validator-0:9100", "validator-1:9100"]);
    assert.deepEqual(order.slice(2), ["boot:1", "x:1"]);
    assert.equal(b.pick(2, NOW).length, 2);
    assert.ok(b.pick(2, NOW).every((p) => p.source === "committee"));
    b.recordDialFailure("validator-0:9100", NOW);
    const picked = b.pick(10, NOW).map((p) => p.syncAddress);
    assert.ok(!picked.includes("validator-0:9100"));
    assert.ok(b.pick(10, NOW + 1_000).some((p) => p.syncAddress === "validator-0:9100"));
  });

  test("dial backoff doubles per failure up to its bound, and a success clears it", () => {
    const b = book({ dialBackoffBaseMs: 1_000, dialBackoffMaxMs: 5_000, maxDialFailures: 3 });
    b.addBootstrap(["p:1"]);
    const until = () => b.peers()[0]!.backoffUntilMs - NOW;
    b.recordDialFailure("p:1", NOW);
    assert.equal(until(), 1_000);
    assert.equal(b.isFailing("p:1"), false);
    b.recordDialFailure("p:1", NOW);
    assert.equal(until(), 2_000);
    b.recordDialFailure("p:1", NOW);
    assert.equal(until(), 4_000);
    assert.equal(b.isFailing("p:1"), true);
    b.recordDialFailure("p:1", NOW);
    assert.equal(until(), 5_000);
    assert.equal(b.peers()[0]!.consecutiveFailures, 4);
    assert.equal(b.stats().dialFailures, 4);
    assert.equal(b.pick(1, NOW + 4_999).length, 0);
    b.recordDialSuccess("p:1");
    assert.equal(b.peers()[0]!.consecutiveFailures, 0);
    assert.equal(b.pick(1, NOW).length, 1);
  });

  test("bounded: maxKnownPeers holds, committee and bootstrap are never evicted, failing and old go first", () => {
    const b = book({ maxKnownPeers: 10 });
    b.setCommittee(0, [0, 1, 2].map(validator));
    b.addBootstrap(["boot:1", "boot:2"]);
    for (let i = 100; i < 105; i++) assert.equal(b.offer(info(i, NOW - 10_000 + i), NOW), "added");
    assert.equal(b.size, 10);
    // Not newer than the oldest exchange entry, which has no failures: refused.
    assert.equal(b.offer(info(200, NOW - 50_000), NOW), "full");
    // Newer: evicts the oldest (100).
    assert.equal(b.offer(info(201, NOW), NOW), "added");
    assert.equal(b.size, 10);
    assert.ok(!b.peers().some((p) => p.syncAddress === info100Address()));
    // A failing entry goes before an older healthy one.
    const failing = b.peers().find((p) => p.source === "exchange" && p.timestampMs === NOW)!;
    b.recordDialFailure(failing.syncAddress, NOW);
    assert.equal(b.offer(info(202, NOW - 60_000), NOW), "added");
    assert.ok(!b.peers().some((p) => p.id === failing.id));
    assert.equal(b.stats().evicted, 2);
    assert.equal(b.stats().refusedFull, 1);
    // A bigger committee pushes exchange entries out, never committee or bootstrap ones.
    b.setCommittee(1, [0, 1, 2, 3, 4, 5, 6, 7, 8].map(validator));
    assert.equal(b.size, 11);
    assert.equal(b.stats().known.committee, 9);
    assert.equal(b.stats().known.bootstrap, 2);
    assert.equal(b.stats().known.exchange, 0);
  });

  test("property: whatever is offered, the set stays within maxKnownPeers and keeps every committee member", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ i: fc.nat(99), age: fc.nat(200_000), fail: fc.boolean() }), { maxLength: 80 }),
        (offers) => {
          const b = book({ maxKnownPeers: 20 });
          b.setCommittee(0, [500, 501, 502].map(validator));
          for (const o of offers) {
            b.offer(info(o.i, NOW - o.age), NOW);
            if (o.fail) b.recordDialFailure(`10.0.0.${o.i}:9100`, NOW);
            assert.ok(b.size <= 20);
            assert.equal(b.stats().known.committee, 3);
          }
        },
      ),
      { numRuns: 50 },
    );
  });

  test("signedInfos: newest first, bounded; round trip through toStored/loadStored", () => {
    const b = book();
    for (let i = 0; i < 5; i++) b.offer(info(i, NOW - i * 1000), NOW);
    b.addBootstrap(["boot:1"]);
    b.setCommittee(0, [validator(50)]);
    const shared = b.signedInfos(3);
    assert.equal(shared.length, 3);
    assert.deepEqual(shared[0], info(0, NOW));
    const reloaded = book();
    // A day and more later: stored entries load whatever their age.
    assert.equal(reloaded.loadStored(b.toStored(), NOW + 48 * 3600_000), 6);
    assert.deepEqual(
      reloaded
        .peers()
        .map((p) => p.syncAddress)
        .sort(),
      b
        .peers()
        .filter((p) => p.source !== "committee")
        .map((p) => p.syncAddress)
        .sort(),
    );
    assert.equal(reloaded.loadStored(new Uint8Array([0xff, 0xff]), NOW), 0);
  });
});

function info100Address(): string {
  return "10.0.0.100:9100";
}
