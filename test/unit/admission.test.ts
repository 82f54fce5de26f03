/** Server-wide bulk admission (src/server/admission.ts): caps, byte budget, fair shares, hints. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { BulkAdmission, type BulkAdmissionOptions, type BulkTicket } from "../../src/server/admission.js";

const MiB = 1024 * 1024;
const OPTIONS: BulkAdmissionOptions = {
  maxBulkCalls: 8,
  maxServerInflightBytes: 32 * MiB,
  contentionWindowMs: 1_000,
  minRetryAfterMs: 10,
  maxRetryAfterMs: 2_000,
};

function clock() {
  let t = 0;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

function take(a: BulkAdmission, peer: string, bytes = MiB): BulkTicket {
  const r = a.acquire(peer, bytes);
  assert.ok(r.ok, `${peer} refused: ${JSON.stringify(r)}`);
  return r.ticket;
}

describe("bulk admission", () => {
  test("one address alone may use the whole cap; then it is refused at once with a hint", () => {
    const c = clock();
    const a = new BulkAdmission(OPTIONS, c.now);
    const tickets = Array.from({ length: 8 }, () => take(a, "10.0.0.1"));
    const r = a.acquire("10.0.0.1", MiB);
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.ok(r.reason === "calls" || r.reason === "share");
      assert.ok(r.retryAfterMs >= 10 && r.retryAfterMs <= 2_000);
    }
    for (const t of tickets) t.release();
    assert.equal(a.inflightCalls, 0);
    assert.equal(a.inflightBytes, 0);
  });

  test("the byte budget binds before the call cap; a resized ticket gives bytes back", () => {
    const a = new BulkAdmission(OPTIONS, clock().now);
    const big = Array.from({ length: 4 }, () => take(a, "10.0.0.1", 8 * MiB));
    const r = a.acquire("10.0.0.1", 8 * MiB);
    assert.ok(!r.ok && r.reason !== undefined);
    big[0]!.resize(1 * MiB);
    assert.equal(a.inflightBytes, 25 * MiB);
    take(a, "10.0.0.1", 7 * MiB);
    assert.equal(a.inflightBytes, 32 * MiB);
  });

  test("fair: a newcomer refused once shrinks the holder's share; the holder is refused until it is under it", () => {
    const c = clock();
    const a = new BulkAdmission(OPTIONS, c.now);
    const mine = Array.from({ length: 8 }, () => take(a, "10.0.0.1"));
    const refused = a.acquire("10.0.0.2", MiB);
    assert.ok(!refused.ok, "the server is full");
    // Two contenders now: 4 calls each. The holder gets nothing more until it is under 4…
    for (let k = 0; k < 4; k++) {
      mine.pop()!.release();
      const again = a.acquire("10.0.0.1", MiB);
      assert.ok(!again.ok && again.reason === "share", `holder at ${7 - k} calls is over its share`);
    }
    // …and the freed calls go to the newcomer.
    for (let k = 0; k < 4; k++) take(a, "10.0.0.2");
    assert.equal(a.inflightCalls, 8);
    // After the contention window, with the newcomer gone, the holder has it all again.
    for (const t of mine) t.release();
    c.advance(1_001);
    assert.equal(a.inflightCalls, 4);
  });

  test("in turn: a freed call is kept for the address in line, not taken back by the one that freed it", () => {
    const c = clock();
    const a = new BulkAdmission({ ...OPTIONS, maxBulkCalls: 4 }, c.now);
    const held = [take(a, "10.0.0.1"), take(a, "10.0.0.2"), take(a, "10.0.0.3"), take(a, "10.0.0.4")];
    const late = a.acquire("10.0.0.9", MiB);
    assert.ok(!late.ok && late.reason === "calls");
    held[0]!.release();
    const again = a.acquire("10.0.0.1", MiB);
    assert.ok(!again.ok && again.reason === "turn", "the call just freed is 10.0.0.9's");
    take(a, "10.0.0.9");
    // Its turn lapses if it stops asking: after the window, anyone may take a freed call.
    const b = a.acquire("10.0.0.8", MiB);
    assert.ok(!b.ok);
    held[1]!.release();
    assert.ok(!a.acquire("10.0.0.2", MiB).ok, "10.0.0.8 is in line");
    c.advance(1_001);
    take(a, "10.0.0.2");
  });

  test("release and resize are idempotent and never drive counts below zero", () => {
    const a = new BulkAdmission(OPTIONS, clock().now);
    const t = take(a, "10.0.0.1", 4 * MiB);
    t.resize(5 * MiB); // growing is ignored
    t.resize(MiB);
    t.release();
    t.release();
    t.resize(0);
    assert.equal(a.inflightCalls, 0);
    assert.equal(a.inflightBytes, 0);
  });

  test("property: whatever the interleaving, caps hold and everything returns to zero", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            peer: fc.integer({ min: 1, max: 20 }),
            bytes: fc.integer({ min: 1, max: 8 * MiB }),
            op: fc.constantFrom("acquire", "release", "resize", "tick"),
          }),
          { maxLength: 300 },
        ),
        (ops) => {
          const c = clock();
          const a = new BulkAdmission(OPTIONS, c.now);
          const held: BulkTicket[] = [];
          for (const o of ops) {
            if (o.op === "acquire") {
              const r = a.acquire(`10.0.0.${o.peer}`, o.bytes);
              if (r.ok) held.push(r.ticket);
            } else if (o.op === "release") held.splice(o.peer % (held.length || 1), 1)[0]?.release();
            else if (o.op === "resize") held[o.peer % (held.length || 1)]?.resize(o.bytes / 2);
            else c.advance(o.bytes % 2_000);
            assert.ok(a.inflightCalls <= OPTIONS.maxBulkCalls);
            // One call may exceed the byte budget alone (it is never refused for bytes when idle).
            assert.ok(a.inflightBytes <= OPTIONS.maxServerInflightBytes || a.inflightCalls === 1);
          }
          for (const t of held) t.release();
          assert.equal(a.inflightCalls, 0);
          assert.equal(a.inflightBytes, 0);
        },
      ),
    );
  });
});
