/**
 * The two Ed25519 backends must reach the same verdict on every input (DESIGN.md §2): a node on
 * `native` and a node on `noble` that judged one certifier block apart would split the chain.
 * Also the key files: round trip, mode 0600, and errors that name the file and the problem.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ed25519 } from "@noble/curves/ed25519.js";
import fc from "fast-check";
import { fromHex, toHex } from "../../src/core/bytes.js";
import { KeyFileError, readKeyFile, writeKeyFile } from "../../src/crypto/key-file.js";
import { Ed25519Signer } from "../../src/crypto/keys.js";
import { createVerifier, NativeVerifier, NobleVerifier } from "../../src/crypto/verifier.js";

const native = new NativeVerifier();
const noble = new NobleVerifier();

/** The group order L of edwards25519. */
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
/** The field prime p = 2^255 - 19. */
const P = 2n ** 255n - 19n;

/** The canonical encodings of the eight small-order points (as listed in src/crypto/verifier.ts). */
const SMALL_ORDER = [
  "0100000000000000000000000000000000000000000000000000000000000000",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0000000000000000000000000000000000000000000000000000000000000080",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
].map(fromHex);

function leToBigInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]!);
  return n;
}

function bigIntToLe(value: bigint, length = 32): Uint8Array {
  const out = new Uint8Array(length);
  let n = value;
  for (let i = 0; i < length; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  assert.equal(n, 0n, "value does not fit");
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** Both verdicts; fails the test when they differ. */
function verdict(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  const a = native.verify(publicKey, message, signature);
  const b = noble.verify(publicKey, message, signature);
  assert.equal(
    a,
    b,
    `backends disagree (native ${a}, noble ${b}) on key ${toHex(publicKey)}, signature ${toHex(signature)}`,
  );
  return a;
}

const signers = [1, 2, 3].map((i) => new Ed25519Signer(new Uint8Array(32).fill(i)));
const signer = signers[0]!;
const message = new TextEncoder().encode("dagsync/block/v1 test message");
const signature = signer.sign(message);

describe("verifier backends agree", () => {
  test("createVerifier picks the backend by name, native by default", () => {
    assert.equal(createVerifier().name, "native");
    assert.equal(createVerifier("native").name, "native");
    assert.equal(createVerifier("noble").name, "noble");
  });

  test("valid signatures verify under both", () => {
    const messages = [new Uint8Array(0), new Uint8Array([0]), message, new Uint8Array(10_000).fill(0xab)];
    for (const s of signers) for (const m of messages) assert.equal(verdict(s.publicKey, m, s.sign(m)), true);
  });

  test("a signature does not verify under another key or for another message", () => {
    assert.equal(verdict(signers[1]!.publicKey, message, signature), false);
    assert.equal(verdict(signer.publicKey, concat(message, new Uint8Array([0])), signature), false);
  });

  test("wrong-length keys are refused", () => {
    assert.equal(verdict(signer.publicKey, message, signature), true);
    for (const key of [
      new Uint8Array(0),
      signer.publicKey.subarray(0, 31),
      concat(signer.publicKey, new Uint8Array([0])),
      concat(new Uint8Array([0]), signer.publicKey),
    ])
      assert.equal(verdict(key, message, signature), false, `key of ${key.length} bytes`);
  });

  test("wrong-length signatures are refused", () => {
    for (const sig of [
      new Uint8Array(0),
      signature.subarray(0, 63),
      signature.subarray(1),
      concat(signature, new Uint8Array([0])),
      concat(signature, signature),
    ])
      assert.equal(verdict(signer.publicKey, message, sig), false, `signature of ${sig.length} bytes`);
  });

  test("a non-canonical S (S + L, S + 2L) is refused", () => {
    const s = leToBigInt(signature.subarray(32));
    assert.ok(s < L);
    for (const bumped of [s + L, s + 2n * L]) {
      const sig = concat(signature.subarray(0, 32), bigIntToLe(bumped));
      assert.notDeepEqual(sig, signature);
      assert.equal(verdict(signer.publicKey, message, sig), false);
    }
    // S = L exactly and S = 2^256 - 1 are out of range too.
    for (const bad of [L, 2n ** 256n - 1n])
      assert.equal(
        verdict(signer.publicKey, message, concat(signature.subarray(0, 32), bigIntToLe(bad))),
        false,
      );
  });

  test("the eight small-order public keys are refused, whatever the signature", () => {
    const rIdentityS0 = concat(SMALL_ORDER[0]!, new Uint8Array(32));
    const madeUp = new Uint8Array(64).fill(0x5a);
    madeUp[63] = 0x05; // keep S canonical so that only the key is at fault
    for (const key of SMALL_ORDER) {
      assert.equal(verdict(key, message, rIdentityS0), false, `key ${toHex(key)}, R = identity, S = 0`);
      assert.equal(verdict(key, new Uint8Array(0), rIdentityS0), false);
      assert.equal(verdict(key, message, madeUp), false, `key ${toHex(key)}, made-up signature`);
      assert.equal(verdict(key, message, signature), false);
      // Every small-order R with S = 0 as well.
      for (const r of SMALL_ORDER)
        assert.equal(verdict(key, message, concat(r, new Uint8Array(32))), false, `key ${toHex(key)}`);
    }
  });

  test("a small-order R is refused even when it satisfies the equation for the key's owner", () => {
    // R = identity, S = k·a satisfies [S]B = R + [k]A exactly: OpenSSL alone would accept it.
    const { scalar, pointBytes } = ed25519.utils.getExtendedPublicKey(signer.seed);
    assert.deepEqual(pointBytes, signer.publicKey);
    const r = SMALL_ORDER[0]!;
    const k = challenge(r, signer.publicKey, message);
    const sig = concat(r, bigIntToLe((k * scalar) % L));
    assert.equal(verdict(signer.publicKey, message, sig), false);
  });

  test("non-canonical point encodings (y ≥ p, or x = 0 with the sign bit) are refused as key and as R", () => {
    const encodings = [P, P + 1n, P + 2n, 2n ** 255n - 1n].map((y) => bigIntToLe(y));
    // y = 1 and y = p - 1 have x = 0: setting the sign bit gives a non-canonical encoding.
    encodings.push(fromHex("0100000000000000000000000000000000000000000000000000000000000080"));
    encodings.push(fromHex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"));
    // A valid key with y pushed past p by adding p to its low 255 bits, where that still fits.
    const yOfKey = leToBigInt(signer.publicKey) & (2n ** 255n - 1n);
    if (yOfKey + P < 2n ** 255n) encodings.push(bigIntToLe(yOfKey + P));
    for (const e of encodings) {
      assert.equal(verdict(e, message, signature), false, `key ${toHex(e)}`);
      assert.equal(
        verdict(signer.publicKey, message, concat(e, signature.subarray(32))),
        false,
        `R ${toHex(e)}`,
      );
    }
  });

  test("an R with a small-order component is refused by both (cofactorless equation)", () => {
    // R = [r]B + T with T of order 8 and S = r + k·a: the cofactored equation holds, the
    // cofactorless one that OpenSSL checks does not, so both backends must refuse it.
    const { scalar } = ed25519.utils.getExtendedPublicKey(signer.seed);
    const torsion = ed25519.Point.fromBytes(SMALL_ORDER[4]!);
    for (let i = 1n; i <= 4n; i++) {
      const r = 1_000_003n * i;
      const rBytes = ed25519.Point.BASE.multiply(r).add(torsion).toBytes();
      const k = challenge(rBytes, signer.publicKey, message);
      const sig = concat(rBytes, bigIntToLe((r + k * scalar) % L));
      assert.equal(verdict(signer.publicKey, message, sig), false);
      // Control: the same construction without the torsion part is a valid signature.
      const cleanR = ed25519.Point.BASE.multiply(r).toBytes();
      const k2 = challenge(cleanR, signer.publicKey, message);
      assert.equal(
        verdict(signer.publicKey, message, concat(cleanR, bigIntToLe((r + k2 * scalar) % L))),
        true,
      );
    }
  });

  test("a mixed-order public key (A + T) gets the same verdict from both", () => {
    const { scalar, point } = ed25519.utils.getExtendedPublicKey(signer.seed);
    const mixed = point.add(ed25519.Point.fromBytes(SMALL_ORDER[6]!)).toBytes();
    const verdicts: boolean[] = [];
    for (let i = 0; i < 24; i++) {
      const m = new Uint8Array([i, 0x42]);
      const r = 7_777_777n + BigInt(i);
      const rBytes = ed25519.Point.BASE.multiply(r).toBytes();
      const k = challenge(rBytes, mixed, m);
      verdicts.push(verdict(mixed, m, concat(rBytes, bigIntToLe((r + k * scalar) % L))));
    }
    // Cofactorless, such a signature verifies only when k ≡ 0 (mod 8): most of them fail.
    assert.ok(verdicts.filter((v) => !v).length > 12, `verdicts: ${verdicts.join(",")}`);
  });

  test("flipped bits in message, signature or key: both agree and refuse; untouched: both accept", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        fc.constantFrom("message", "signature", "key"),
        fc.nat(),
        fc.integer({ min: 0, max: signers.length - 1 }),
        (msg, where, bitSeed, who) => {
          const s = signers[who]!;
          const sig = s.sign(msg);
          assert.equal(verdict(s.publicKey, msg, sig), true);
          const target = where === "message" ? msg : where === "signature" ? sig : s.publicKey;
          const bit = bitSeed % (target.length * 8);
          const flipped = target.slice();
          flipped[bit >> 3]! ^= 1 << (bit & 7);
          const v =
            where === "message"
              ? verdict(s.publicKey, flipped, sig)
              : where === "signature"
                ? verdict(s.publicKey, msg, flipped)
                : verdict(flipped, msg, sig);
          assert.equal(v, false, `flipping bit ${bit} of the ${where} went unnoticed`);
        },
      ),
      { numRuns: 150 },
    );
  });

  test("random junk keys and signatures: both agree and refuse", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 64, maxLength: 64 }),
        fc.uint8Array({ maxLength: 64 }),
        (key, sig, msg) => {
          assert.equal(verdict(key, msg, sig), false);
          assert.equal(verdict(signer.publicKey, msg, sig), false);
          assert.equal(verdict(key, message, signature), false);
          // Junk made to pass the cheap checks: S reduced below L.
          const reduced = concat(sig.subarray(0, 32), bigIntToLe(leToBigInt(sig.subarray(32)) % L));
          assert.equal(verdict(signer.publicKey, msg, reduced), false);
          assert.equal(verdict(key, msg, reduced), false);
        },
      ),
      { numRuns: 200 },
    );
  });

  test("verify never throws on odd input types of length", () => {
    for (const v of [native, noble]) {
      assert.equal(v.verify(new Uint8Array(32), new Uint8Array(0), new Uint8Array(64)), false);
      assert.equal(v.verify(new Uint8Array(1000), message, new Uint8Array(1000)), false);
    }
  });
});

/** k = SHA-512(R || A || M) mod L. */
function challenge(r: Uint8Array, a: Uint8Array, m: Uint8Array): bigint {
  return leToBigInt(new Uint8Array(createHash("sha512").update(r).update(a).update(m).digest())) % L;
}

describe("key files", () => {
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "dagsync-keyfile-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Asserts that reading `path` fails with a KeyFileError naming the file and matching `why`. */
  async function rejectsWith(path: string, why: RegExp): Promise<void> {
    await assert.rejects(readKeyFile(path), (e: unknown) => {
      assert.ok(e instanceof KeyFileError, `expected a KeyFileError, got ${String(e)}`);
      assert.ok(e.message.includes(path), `"${e.message}" does not name ${path}`);
      assert.match(e.message, why);
      return true;
    });
  }

  async function writeJson(name: string, body: unknown): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, typeof body === "string" ? body : JSON.stringify(body));
    return path;
  }

  test("write then read round-trips the key", async () => {
    const original = Ed25519Signer.generate();
    const path = join(dir, "roundtrip.json");
    await writeKeyFile(path, original);
    const read = await readKeyFile(path);
    assert.deepEqual(read.seed, original.seed);
    assert.deepEqual(read.publicKey, original.publicKey);
    const sig = read.sign(message);
    assert.equal(verdict(original.publicKey, message, sig), true);
    const json = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    assert.equal(json.type, "ed25519");
    assert.equal(json.private_key, toHex(original.seed));
    assert.equal(json.public_key, toHex(original.publicKey));
  });

  test("the file is written with mode 0600, also over an existing file", async () => {
    const path = join(dir, "mode.json");
    await writeKeyFile(path, signer);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const other = join(dir, "existing.json");
    await writeFile(other, "{}");
    await chmod(other, 0o644);
    assert.equal((await stat(other)).mode & 0o777, 0o644);
    await writeKeyFile(other, signer);
    assert.equal((await stat(other)).mode & 0o777, 0o600);
    assert.deepEqual((await readKeyFile(other)).publicKey, signer.publicKey);
  });

  test("uppercase hex and a missing public_key are accepted", async () => {
    const path = await writeJson("upper.json", {
      type: "ed25519",
      private_key: toHex(signer.seed).toUpperCase(),
      public_key: toHex(signer.publicKey).toUpperCase(),
    });
    assert.deepEqual((await readKeyFile(path)).publicKey, signer.publicKey);
    const bare = await writeJson("bare.json", { type: "ed25519", private_key: toHex(signer.seed) });
    assert.deepEqual((await readKeyFile(bare)).publicKey, signer.publicKey);
  });

  test("a missing file is reported as not found", async () => {
    await rejectsWith(join(dir, "does-not-exist.json"), /not found/);
  });

  test("a file that is not JSON is reported", async () => {
    await rejectsWith(await writeJson("garbage.json", "private_key=abc"), /not JSON/);
    await rejectsWith(await writeJson("empty.json", ""), /not JSON/);
  });

  test('a wrong or missing "type" is reported', async () => {
    const good = { private_key: toHex(signer.seed), public_key: toHex(signer.publicKey) };
    await rejectsWith(await writeJson("type-rsa.json", { ...good, type: "rsa" }), /"type" must be "ed25519"/);
    await rejectsWith(await writeJson("type-missing.json", good), /"type"/);
    await rejectsWith(await writeJson("null.json", "null"), /"type"/);
    await rejectsWith(await writeJson("array.json", "[1,2]"), /"type"/);
  });

  test("a private_key that is not 64 hex digits is reported", async () => {
    const hex = toHex(signer.seed);
    const bad: unknown[] = [hex.slice(0, 62), `${hex}00`, `${hex.slice(0, 63)}g`, 42, null, ""];
    for (const [i, privateKey] of bad.entries())
      await rejectsWith(
        await writeJson(`private-${i}.json`, { type: "ed25519", private_key: privateKey }),
        /"private_key" must be 64 hex digits/,
      );
    await rejectsWith(await writeJson("private-missing.json", { type: "ed25519" }), /"private_key"/);
  });

  test("a public_key that does not match the private_key is reported", async () => {
    for (const [i, publicKey] of [toHex(signers[1]!.publicKey), "00", 7].entries())
      await rejectsWith(
        await writeJson(`public-${i}.json`, {
          type: "ed25519",
          private_key: toHex(signer.seed),
          public_key: publicKey,
        }),
        /"public_key" does not match "private_key"/,
      );
  });
});
