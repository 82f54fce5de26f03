/**
 * Signatures checked off the event loop (src/crypto/verify-pool.ts, issue 16), on real worker
 * threads: both backends give the same verdict through the pool as inline, on valid, tampered
 * and malformed input; and a sync engine fed by the pool checks every certifier block and every
 * block through it and then acts on its verdicts (a pool that says "invalid" gets honest peers
 * banned, which shows the verdicts are used and not merely computed).
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { type SignatureItem, SignatureVerdicts } from "../../src/core/index.js";
import { createVerifier, Ed25519Signer, type VerifierBackend, VerifyPool } from "../../src/crypto/index.js";
import { FakeSyncNetwork } from "../helpers/sync-fake-network.js";
import { makeEngine, tempStore, testChain, withTimeout } from "../helpers/sync-harness.js";

const signers = [1, 2, 3].map((i) => new Ed25519Signer(new Uint8Array(32).fill(i)));

/** Valid, tampered and malformed items: the verdicts are a mix of true and false. */
function corpus(): SignatureItem[] {
  const items: SignatureItem[] = [];
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 400 }),
      fc.integer({ min: 0, max: 2 }),
      fc.constantFrom(
        "valid",
        "message",
        "signature",
        "key",
        "short-key",
        "long-signature",
        "high-s",
        "junk",
      ),
      (message, who, kind) => {
        const s = signers[who]!;
        const signature = s.sign(message);
        const flip = (b: Uint8Array) => {
          const c = b.slice();
          c[c.length >> 1]! ^= 0x10;
          return c;
        };
        const item: SignatureItem =
          kind === "valid"
            ? { publicKey: s.publicKey, message, signature }
            : kind === "message"
              ? {
                  publicKey: s.publicKey,
                  message: message.length > 0 ? flip(message) : new Uint8Array([1]),
                  signature,
                }
              : kind === "signature"
                ? { publicKey: s.publicKey, message, signature: flip(signature) }
                : kind === "key"
                  ? { publicKey: signers[(who + 1) % 3]!.publicKey, message, signature }
                  : kind === "short-key"
                    ? { publicKey: s.publicKey.subarray(1), message, signature }
                    : kind === "long-signature"
                      ? { publicKey: s.publicKey, message, signature: new Uint8Array([...signature, 0]) }
                      : kind === "high-s"
                        ? {
                            publicKey: s.publicKey,
                            message,
                            signature: new Uint8Array([
                              ...signature.subarray(0, 32),
                              ...new Uint8Array(32).fill(0xff),
                            ]),
                          }
                        : {
                            publicKey: new Uint8Array(32).fill(7),
                            message,
                            signature: new Uint8Array(64).fill(9),
                          };
        items.push(item);
      },
    ),
    { numRuns: 300, seed: 16 },
  );
  return items;
}

const pools: VerifyPool[] = [];
after(async () => {
  for (const p of pools) await p.close();
});

describe("verify pool", () => {
  for (const backend of ["native", "noble"] as VerifierBackend[])
    test(`${backend}: the same verdicts through 2 workers as inline, in order`, async () => {
      const items = corpus();
      const inline = createVerifier(backend);
      const expected = items.map((i) => inline.verify(i.publicKey, i.message, i.signature));
      assert.ok(expected.includes(true) && expected.includes(false), "the corpus mixes valid and invalid");
      const pool = new VerifyPool({ workers: 2, backend });
      pools.push(pool);
      assert.deepEqual(await pool.verify(items), expected);
      // Small batches (one worker) and an empty one.
      assert.deepEqual(await pool.verify(items.slice(0, 3)), expected.slice(0, 3));
      assert.deepEqual(await pool.verify([]), []);
      // Batches at once share the workers and each gets its own verdicts.
      const halves = await Promise.all([pool.verify(items.slice(0, 150)), pool.verify(items.slice(150))]);
      assert.deepEqual(halves.flat(), expected);
    });

  test("workers start as work needs them, up to the pool's size", async () => {
    const carried = corpus().filter((i) => i.publicKey.length === 32 && i.signature.length === 64);
    const expected = carried.map((i) => createVerifier("native").verify(i.publicKey, i.message, i.signature));
    const check = async (from: number, to: number) =>
      assert.deepEqual(await pool.verify(carried.slice(from, to)), expected.slice(from, to));
    const pool = new VerifyPool({ workers: 3 });
    pools.push(pool);
    assert.equal(pool.workers, 1, "one worker is ready before the first batch");
    // Small batches one after another (a certifier-only node): one worker does them all.
    for (let i = 0; i < 5; i++) await check(i, i + 3);
    assert.equal(pool.workers, 1);
    // Small batches at once queue on that worker: starting another would cost more than waiting.
    await Promise.all([check(0, 3), check(3, 6), check(6, 9)]);
    assert.equal(pool.workers, 1);
    // Unsplit batches (< 2 × 16 signatures) at once: the fourth finds 93 signatures (≥ 64)
    // waiting on the first worker and starts a second.
    await Promise.all([check(0, 31), check(31, 62), check(62, 93), check(93, 124)]);
    assert.equal(pool.workers, 2);
    // A batch big enough to split puts each part on a worker of its own: the pool fills…
    await check(0, carried.length);
    assert.equal(pool.workers, 3);
    // …and never overfills, however much work arrives at once.
    await Promise.all([check(0, 150), check(50, 200), check(0, carried.length), check(10, 60)]);
    assert.equal(pool.workers, 3);

    const wide = new VerifyPool({ workers: 6 });
    pools.push(wide);
    assert.deepEqual(await wide.verify(carried), expected);
    assert.equal(wide.workers, 6, "one big batch starts every worker (a full-signature catch-up)");
  });

  test("a worker that dies fails its batch, and the pool goes on with a fresh one", async () => {
    const pool = new VerifyPool({ workers: 1 });
    pools.push(pool);
    const items = corpus();
    const expected = items.map((i) => createVerifier("native").verify(i.publicKey, i.message, i.signature));
    const slots = (pool as unknown as { slots: { worker: { terminate(): Promise<number> } }[] }).slots;
    const dying = assert.rejects(pool.verify(items), /exited/);
    await slots[0]!.worker.terminate();
    await dying;
    assert.equal(pool.workers, 0, "a dead worker leaves the pool");
    assert.deepEqual(await pool.verify(items), expected);
    assert.equal(pool.workers, 1);

    // One of two dies: its part fails the batch, the other worker goes on, the pool refills.
    const two = new VerifyPool({ workers: 2 });
    pools.push(two);
    assert.deepEqual(await two.verify(items), expected);
    assert.equal(two.workers, 2);
    const twoSlots = (two as unknown as { slots: { worker: { terminate(): Promise<number> } }[] }).slots;
    const half = assert.rejects(two.verify(items), /exited/);
    await twoSlots[1]!.worker.terminate();
    await half;
    assert.equal(two.workers, 1);
    assert.deepEqual(await two.verify(items), expected);
    assert.equal(two.workers, 2);
  });

  test("options are checked; a closed pool refuses work", async () => {
    assert.throws(() => new VerifyPool({ workers: 0 }), /workers must be a positive integer/);
    assert.throws(() => new VerifyPool({ minSignaturesPerWorker: 0 }), /minSignaturesPerWorker/);
    assert.throws(() => new VerifyPool({ startWorkerBacklog: 0.5 }), /startWorkerBacklog/);
    const pool = new VerifyPool({ workers: 1 });
    const inFlight = assert.rejects(pool.verify(corpus()), /closed/, "a batch in flight fails, not hangs");
    await pool.close();
    await inFlight;
    await assert.rejects(pool.verify(corpus().slice(0, 1)), /closed/);
  });
});

describe("SignatureVerdicts", () => {
  const s = signers[0]!;
  const block = new Uint8Array([1, 2, 3]);

  test("a verdict answers only for the very bytes object and key it was computed for, once", () => {
    const verdicts = new SignatureVerdicts();
    verdicts.set(block, s.publicKey, true);
    assert.equal(
      verdicts.take(new Uint8Array([1, 2, 3]), s.publicKey),
      undefined,
      "equal bytes, another object",
    );
    assert.equal(verdicts.take(block, signers[1]!.publicKey), undefined, "another key");
    assert.equal(verdicts.take(block, s.publicKey), true);
    assert.equal(verdicts.take(block, s.publicKey), undefined, "used once");
    assert.deepEqual([verdicts.hits, verdicts.misses], [1, 3]);
  });
});

describe("the sync engine with a verify pool", () => {
  const { chain, commits } = testChain();
  const peers = { "p1:9100": {}, "p2:9100": {} };

  test("every block signature and almost every certifier goes through the pool", async () => {
    const ts = await tempStore(chain);
    const pool = new VerifyPool({ workers: 2 });
    pools.push(pool);
    let pooled = 0;
    const network = new FakeSyncNetwork(commits, chain.genesis.digest, peers);
    const engine = makeEngine(
      ts.store,
      network,
      Object.keys(peers),
      { verifyBlockSignatures: true },
      undefined,
      {
        verifySignatures: (items) => {
          pooled += items.length;
          return pool.verify(items);
        },
      },
    );
    await withTimeout(engine.run(true), 20_000, "sync with the pool");
    assert.equal(ts.store.watermarks.highestSynced, commits.length);
    const blocks = commits.reduce((n, c) => n + c.blocks.length, 0);
    assert.ok(
      pooled >= blocks,
      `${pooled} signatures through the pool for ${blocks} blocks and the certifiers`,
    );
    const preset = engine.verdicts;
    assert.ok(preset !== undefined);
    // Inline only: certifiers that arrived before their epoch's committee was verified (a batch
    // fetched ahead across an epoch change), checked at their turn; a few per epoch.
    assert.ok(preset.hits >= blocks, `${preset.hits} verdicts used for ${blocks} blocks`);
    assert.ok(preset.misses <= 8 * 3, `${preset.misses} verified inline`);
    for (const p of engine.peerStatuses()) assert.equal(p.banCount, 0, `${p.address}: ${p.lastError}`);
    await ts.cleanup();
  });

  test("the verdicts are used: a pool that says every signature is bad gets the peers banned", async () => {
    const ts = await tempStore(chain);
    const network = new FakeSyncNetwork(commits, chain.genesis.digest, peers);
    const engine = makeEngine(ts.store, network, Object.keys(peers), { maxStallMs: 1_500 }, undefined, {
      verifySignatures: async (items) => items.map(() => false),
    });
    // Every peer banned: the engine stalls and gives up after maxStallMs.
    await assert.rejects(withTimeout(engine.run(true), 10_000, "run")).finally(() => engine.stop());
    assert.equal(ts.store.watermarks.highestSynced, 0, "nothing stored");
    const banned = engine.peerStatuses().filter((p) => p.banCount > 0);
    assert.ok(
      banned.length > 0 && banned.every((p) => /bad_signature|signature/.test(p.lastError)),
      JSON.stringify(banned),
    );
    await ts.cleanup();
  });
});
