/**
 * Signed node info (DESIGN.md §9): the signing payload, and every rule an exchanged entry must
 * pass, each refused with its own reason: a bad signature, a timestamp 31 s ahead or 25 h old, a
 * 300-byte address, our own key, malformed bytes. Both verifier backends give the same verdicts.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import {
  concatBytes,
  encodeRawFields,
  isHostPort,
  nodeInfoSigningMessage,
  utf8Bytes,
  validateSignedNodeInfo,
} from "../../src/core/index.js";
import { Ed25519Signer, NativeVerifier, NobleVerifier, signNodeInfo } from "../../src/crypto/index.js";
import { NodeInfoSchema, SignedNodeInfoSchema } from "../../src/gen/dagsync/v1/types_pb.js";

const CHAIN = "dagsync-test";
const NOW = 1_800_000_000_000;
const native = new NativeVerifier();
const signer = new Ed25519Signer(new Uint8Array(32).fill(7));
const other = new Ed25519Signer(new Uint8Array(32).fill(9));

function rules(extra: { ownKey?: Uint8Array } = {}) {
  return { chainId: CHAIN, verifier: native, nowMs: NOW, ...extra };
}

function signed(fields: { syncAddress?: string; gossipAddress?: string; timestampMs?: number } = {}) {
  return signNodeInfo(signer, CHAIN, {
    syncAddress: fields.syncAddress ?? "10.0.0.1:9100",
    gossipAddress: fields.gossipAddress ?? "10.0.0.1:9101",
    timestampMs: fields.timestampMs ?? NOW,
  });
}

function reasonOf(bytes: Uint8Array, extra: { ownKey?: Uint8Array } = {}): string {
  const v = validateSignedNodeInfo(bytes, rules(extra));
  return v.ok ? "ok" : v.reason;
}

describe("node info", () => {
  test("the signing payload is domain || 0x00 || chain_id || 0x00 || encoded NodeInfo", () => {
    const info = new Uint8Array([1, 2, 3]);
    assert.deepEqual(
      nodeInfoSigningMessage("c", info),
      concatBytes([utf8Bytes("dagsync/node-info/v1"), new Uint8Array([0, 0x63, 0]), info]),
    );
  });

  test("a signed info round-trips through the real schema and verifies", () => {
    const bytes = signed();
    const real = fromBinary(SignedNodeInfoSchema, bytes);
    assert.equal(real.info?.syncAddress, "10.0.0.1:9100");
    assert.equal(real.signature.length, 64);
    const v = validateSignedNodeInfo(bytes, rules());
    assert.ok(v.ok, v.ok ? "" : v.detail);
    assert.equal(v.entry.syncAddress, "10.0.0.1:9100");
    assert.equal(v.entry.gossipAddress, "10.0.0.1:9101");
    assert.equal(v.entry.timestampMs, NOW);
    assert.deepEqual(v.entry.networkKey, signer.publicKey);
    assert.deepEqual(v.entry.bytes, bytes);
    // The noble backend reaches the same verdict.
    assert.ok(validateSignedNodeInfo(bytes, { ...rules(), verifier: new NobleVerifier() }).ok);
  });

  test("a bad signature: a flipped bit, another chain, another signer", () => {
    const bytes = signed();
    const flipped = bytes.slice();
    flipped[flipped.length - 1]! ^= 1;
    assert.equal(reasonOf(flipped), "bad_signature");
    const otherChain = signNodeInfo(signer, "another-chain", { syncAddress: "a:1", timestampMs: NOW });
    assert.equal(reasonOf(otherChain), "bad_signature");
    // Info naming signer's key, signed by another key.
    const infoBytes = toBinary(
      NodeInfoSchema,
      create(NodeInfoSchema, { networkKey: signer.publicKey, syncAddress: "a:1", timestampMs: BigInt(NOW) }),
    );
    const forged = encodeRawFields([
      [1, [infoBytes]],
      [2, [other.sign(nodeInfoSigningMessage(CHAIN, infoBytes))]],
    ]);
    assert.equal(reasonOf(forged), "bad_signature");
  });

  test("timestamps: 30 s ahead and 24 h old pass; 31 s ahead and 25 h old do not", () => {
    assert.equal(reasonOf(signed({ timestampMs: NOW + 30_000 })), "ok");
    assert.equal(reasonOf(signed({ timestampMs: NOW + 31_000 })), "future_timestamp");
    assert.equal(reasonOf(signed({ timestampMs: NOW - 24 * 3600_000 })), "ok");
    assert.equal(reasonOf(signed({ timestampMs: NOW - 25 * 3600_000 })), "stale_timestamp");
  });

  test("addresses: host:port of at most 256 bytes, for both; an empty gossip address is allowed", () => {
    const long = `${"a".repeat(295)}:9100`; // 300 bytes
    assert.equal(long.length, 300);
    assert.equal(reasonOf(signed({ syncAddress: long })), "bad_address");
    assert.equal(reasonOf(signed({ gossipAddress: long })), "bad_address");
    assert.equal(reasonOf(signed({ syncAddress: `${"a".repeat(251)}:9100` })), "ok");
    assert.equal(reasonOf(signed({ gossipAddress: "" })), "ok");
    assert.equal(reasonOf(signed({ syncAddress: "" })), "bad_address");
    for (const bad of [
      "nohost",
      "host:",
      ":9100",
      "host:0",
      "host:65536",
      "http://h:1",
      "h h:1",
      "h:01",
      "[zz]:1",
    ])
      assert.equal(reasonOf(signed({ syncAddress: bad })), "bad_address", bad);
    for (const good of ["localhost:9100", "127.0.0.1:1", "[::1]:9100", "node-3.example.org:65535"])
      assert.equal(reasonOf(signed({ syncAddress: good })), "ok", good);
  });

  test("our own key is refused", () => {
    assert.equal(reasonOf(signed(), { ownKey: signer.publicKey }), "own_key");
    assert.equal(reasonOf(signed(), { ownKey: other.publicKey }), "ok");
  });

  test("malformed bytes: garbage, truncation, a short key, a short signature, a repeated field", () => {
    const bytes = signed();
    assert.equal(reasonOf(new Uint8Array([0xff, 0xff, 0xff])), "malformed");
    assert.equal(reasonOf(bytes.subarray(0, bytes.length - 5)), "malformed");
    assert.equal(reasonOf(new Uint8Array(0)), "malformed");
    const shortKey = toBinary(
      NodeInfoSchema,
      create(NodeInfoSchema, {
        networkKey: new Uint8Array(31),
        syncAddress: "a:1",
        timestampMs: BigInt(NOW),
      }),
    );
    assert.equal(
      reasonOf(
        encodeRawFields([
          [1, [shortKey]],
          [2, [new Uint8Array(64)]],
        ]),
      ),
      "malformed",
    );
    const v = validateSignedNodeInfo(bytes, rules());
    assert.ok(v.ok);
    assert.equal(
      reasonOf(
        encodeRawFields([
          [1, [v.entry.infoBytes]],
          [2, [new Uint8Array(63)]],
        ]),
      ),
      "malformed",
    );
    assert.equal(
      reasonOf(
        encodeRawFields([
          [1, [v.entry.infoBytes, v.entry.infoBytes]],
          [2, [v.entry.signature]],
        ]),
      ),
      "malformed",
    );
  });

  test("property: any bytes get a verdict, never a throw", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const v = validateSignedNodeInfo(bytes, rules());
        assert.equal(v.ok, false);
      }),
      { numRuns: 500 },
    );
  });

  test("property: a valid entry with any one byte changed is never accepted with the old signature", () => {
    const bytes = signed();
    fc.assert(
      fc.property(fc.nat(bytes.length - 1), fc.integer({ min: 1, max: 255 }), (at, delta) => {
        const changed = bytes.slice();
        changed[at] = (changed[at]! + delta) & 0xff;
        assert.equal(validateSignedNodeInfo(changed, rules()).ok, false);
      }),
      { numRuns: 300 },
    );
  });

  test("isHostPort bounds the length in UTF-8 bytes", () => {
    assert.equal(isHostPort(`${"a".repeat(254)}:1`), true);
    assert.equal(isHostPort(`${"a".repeat(255)}:1`), false);
  });
});
