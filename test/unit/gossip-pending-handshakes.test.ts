/** The listener's bound on handshakes in progress (src/gossip/pending-handshakes.ts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { PendingHandshakes, peerHost } from "../../src/gossip/pending-handshakes.js";

test("one address is refused beyond its cap, and admitted again once one settles", () => {
  const p = new PendingHandshakes(100, 2);
  const a = p.admit("10.0.0.1", () => assert.fail("nothing is evicted below the total"));
  const b = p.admit("10.0.0.1", () => assert.fail("nothing is evicted below the total"));
  assert.ok(a.admitted && b.admitted);
  const c = p.admit("10.0.0.1", () => {});
  assert.equal(c.admitted, false);
  assert.match(!c.admitted ? c.reason : "", /from 10\.0\.0\.1 \(limit 2\)/);
  assert.ok(p.admit("10.0.0.2", () => {}).admitted, "another address is not affected");
  if (a.admitted) a.ticket.release();
  assert.ok(p.admit("10.0.0.1", () => {}).admitted, "a slot freed by a settled handshake");
});

test("at the total cap the oldest is evicted, and an evicted ticket's release changes nothing", () => {
  const p = new PendingHandshakes(3, 8);
  const evicted: string[] = [];
  const tickets = ["a", "b", "c"].map((n, i) => p.admit(`10.0.0.${i}`, () => evicted.push(n)));
  const d = p.admit("10.0.0.9", () => evicted.push("d"));
  assert.ok(d.admitted);
  assert.deepEqual(evicted, ["a"], "the oldest goes first");
  assert.equal(p.size, 3);
  const first = tickets[0]!;
  if (first.admitted) first.ticket.release(); // already gone: no double count
  assert.equal(p.size, 3);
});

test("evicting an address's own oldest handshake leaves its count right (fast-check counterexample)", () => {
  const p = new PendingHandshakes(3, 2);
  const admitted = [1, 0, 0, 1, 1].map((i) => p.admit(`10.0.0.${i}`, () => {}).admitted);
  // The 4th evicts 10.0.0.1's first; the 5th evicts 10.0.0.0's first: 10.0.0.1 holds 2, its cap.
  assert.deepEqual(admitted, [true, true, true, true, true]);
  assert.equal(p.admit("10.0.0.1", () => {}).admitted, false, "now at its cap of 2");
});

test("property: the table never exceeds its caps, whatever the order of admits and releases", () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.integer({ min: 0, max: 5 }), fc.constant(-1)), { maxLength: 300 }),
      fc.integer({ min: 1, max: 20 }),
      fc.integer({ min: 1, max: 5 }),
      (ops, maxTotal, maxPer) => {
        const p = new PendingHandshakes(maxTotal, maxPer);
        const live: { release(): void; address: string; gone: boolean }[] = [];
        for (const op of ops) {
          if (op === -1) {
            const t = live.shift();
            t?.release();
          } else {
            const address = `10.0.0.${op}`;
            const entry = { release: () => {}, address, gone: false };
            const r = p.admit(address, () => {
              entry.gone = true;
            });
            if (r.admitted) {
              entry.release = () => r.ticket.release();
              live.push(entry);
            } else
              assert.ok(
                live.filter((e) => !e.gone && e.address === address).length >= maxPer,
                `${address} refused below its cap`,
              );
          }
          const open = live.filter((e) => !e.gone);
          assert.ok(p.size <= maxTotal);
          assert.equal(p.size, open.length);
          for (let i = 0; i <= 5; i++)
            assert.ok(open.filter((e) => e.address === `10.0.0.${i}`).length <= maxPer);
        }
      },
    ),
    { numRuns: 1_000 },
  );
});

test("peerHost reads grpc-js peer strings", () => {
  assert.equal(peerHost("127.0.0.11:53422"), "127.0.0.11");
  assert.equal(peerHost("[::1]:9101"), "::1");
  assert.equal(peerHost("::ffff:10.1.2.3:9101"), "10.1.2.3");
});
