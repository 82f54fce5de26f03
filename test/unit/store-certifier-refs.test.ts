/**
 * CertifierRefs (src/store/certifiers.ts): which certifier entries are remembered while they hold
 * bytes, when they are rewritten as keys, its bound, and that pruned entries are never rewritten.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { DevnetChain } from "../../src/devnet/chain.js";
import {
  CertifierRefs,
  certifierKey,
  decodeCertifiers,
  encodeCertifiers,
  keyId,
} from "../../src/store/certifiers.js";

const chain = new DevnetChain({
  validators: 4,
  epochs: 1,
  commitsPerEpoch: 8,
  txsPerBlock: 1,
  txBytes: 32,
  seed: 5,
});
const commits = [...chain.commits()];
const certs = commits[0]!.certifierBlocks;
const ids = (bytes: readonly Uint8Array[]) => new Set(bytes.map((b) => keyId(certifierKey(b)!)));

test("slots: keys where stored, bytes otherwise; only entries with bytes are remembered", () => {
  const refs = new CertifierRefs(4);
  const all = refs.slotsFor(1, certs, ids(certs));
  assert.ok(all.every((s) => s.bytes === undefined && s.key !== undefined));
  assert.equal(refs.size, 0);
  const some = refs.slotsFor(2, certs, ids(certs.slice(0, 2)));
  assert.deepEqual(
    some.map((s) => s.bytes === undefined),
    [true, true, false, false],
  );
  assert.equal(refs.size, 1);
  // The round trip through the stored encoding keeps order and kind.
  assert.deepEqual(
    decodeCertifiers(encodeCertifiers(some)).map((s) => s.bytes === undefined),
    [true, true, false, false],
  );
});

test("resolve rewrites remembered entries as their blocks are stored, and then forgets them", () => {
  const refs = new CertifierRefs(4);
  refs.slotsFor(7, certs, new Set());
  assert.deepEqual(refs.resolve(new Set()), []);
  const first = refs.resolve(ids(certs.slice(0, 3)));
  assert.equal(first.length, 1);
  assert.equal(first[0]!.index, 7);
  assert.equal(first[0]!.slots.filter((s) => s.bytes !== undefined).length, 1);
  assert.equal(refs.size, 1, "one block still only as bytes");
  const second = refs.resolve(ids(certs.slice(3)));
  assert.ok(second[0]!.slots.every((s) => s.bytes === undefined));
  assert.equal(refs.size, 0);
});

test("bounded: past the limit the oldest is forgotten; pruned entries are never rewritten", () => {
  const refs = new CertifierRefs(2);
  for (const i of [1, 2, 3]) refs.slotsFor(i, certs, new Set());
  assert.equal(refs.size, 2);
  refs.forgetBelow(3);
  assert.deepEqual(
    refs.resolve(ids(certs)).map((r) => r.index),
    [3],
  );
  const none = new CertifierRefs(0);
  none.slotsFor(1, certs, new Set());
  assert.equal(none.size, 0);
});

test("a certifier that does not parse is kept as bytes and never remembered", () => {
  const refs = new CertifierRefs(4);
  const slots = refs.slotsFor(1, [new Uint8Array([1, 2, 3])], new Set());
  assert.equal(slots[0]!.key, undefined);
  assert.equal(refs.size, 0);
  assert.deepEqual([...decodeCertifiers(encodeCertifiers(slots))[0]!.bytes!], [1, 2, 3]);
});
