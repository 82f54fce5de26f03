/**
 * Certifier blocks kept as keys into blocks/ (src/store/certifiers.ts, issue 16), on a real
 * LevelDB: every commit's certifiers read back byte for byte whatever way they were written (in
 * one apply with the blocks that hold them, one commit per apply so that a later apply turns
 * bytes into keys, with no room to remember, and values of stores written before keys), the
 * chain database shrinks, pruning never brings an entry back, and a missing block is a corrupt
 * store, not a wrong answer.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { parseSignedBlock } from "../../src/core/index.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import { WireFetchBlocksResponseSchema } from "../../src/gen/dagsync/wire/v1/wire_pb.js";
import { decodeCertifiers } from "../../src/store/certifiers.js";
import {
  type ApplyUnit,
  blockKey,
  indexKey,
  Store,
  StoreError,
  type StoreLimits,
} from "../../src/store/index.js";
import { splitTableKey, withRawStore } from "../helpers/raw-store.js";

const chain = new DevnetChain({
  validators: 4,
  epochs: 2,
  commitsPerEpoch: 40,
  txsPerBlock: 4,
  txBytes: 256,
  seed: 16,
});
const all = [...chain.commits()];
const genesis = chain.genesis.bytes;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const refOf = (bytes: Uint8Array) => {
  const b = parseSignedBlock(bytes);
  return { round: b.round, author: b.author, digest: b.digest };
};

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function fresh(limits?: Partial<StoreLimits>): Promise<Store> {
  const dir = await mkdtemp(join(tmpdir(), "dagsync-certifiers-"));
  dirs.push(dir);
  return Store.open(join(dir, "store"), { genesis, limits });
}

/** Applies the chain `perApply` commits at a time. */
async function applyAll(store: Store, perApply: number, units: readonly ApplyUnit[] = all): Promise<void> {
  for (let i = 0; i < units.length; i += perApply) await store.apply(units.slice(i, i + perApply));
}

async function assertCertifiersExact(store: Store): Promise<void> {
  for (const c of all)
    assert.deepEqual(
      ((await store.getCertifiers(c.index)) ?? []).map(hex),
      c.certifierBlocks.map(hex),
      `certifiers of commit ${c.index}`,
    );
}

/** How the certifier entries are kept: slots by key and by bytes, and the table's value bytes. */
async function certifierLayout(path: string) {
  let byKey = 0;
  let byBytes = 0;
  let valueBytes = 0;
  await withRawStore(path, async ({ chain }) => {
    for await (const [key, value] of chain.iterator()) {
      if (splitTableKey(key)?.table !== "certifiers") continue;
      valueBytes += value.length;
      for (const s of decodeCertifiers(value))
        if (s.bytes === undefined) byKey++;
        else byBytes++;
    }
  });
  return { byKey, byBytes, valueBytes };
}

/** Certifier blocks that are never stored in blocks/ (the vote round that closes an epoch). */
const neverStored = (() => {
  const stored = new Set(all.flatMap((c) => c.blocks.map((b) => hex(blockKey(b.ref)))));
  let n = 0;
  for (const c of all)
    for (const b of c.certifierBlocks) {
      const { round, author, digest } = refOf(b);
      if (!stored.has(hex(blockKey({ round, author, digest })))) n++;
    }
  return n;
})();

describe("certifiers by key into blocks/", () => {
  test("in one apply with their blocks: keys, the same bytes back, a far smaller chain database", async () => {
    const store = await fresh();
    await applyAll(store, all.length);
    await assertCertifiersExact(store);
    await store.close();
    const layout = await certifierLayout(store.path);
    assert.equal(layout.byBytes, neverStored, "bytes only where blocks/ does not hold the block");
    assert.ok(layout.byKey > 0.9 * (layout.byKey + layout.byBytes), JSON.stringify(layout));
    const reopened = await Store.open(store.path);
    await assertCertifiersExact(reopened);
    await reopened.close();
  });

  test("one commit per apply: bytes first, keys once a later apply stores the blocks", async () => {
    const kept = await fresh();
    await applyAll(kept, 1);
    await assertCertifiersExact(kept);
    await kept.close();
    const bytesOnly = await fresh({ pendingCertifierEntries: 0 });
    await applyAll(bytesOnly, 1);
    await assertCertifiersExact(bytesOnly);
    await bytesOnly.close();

    const a = await certifierLayout(kept.path);
    const b = await certifierLayout(bytesOnly.path);
    assert.equal(a.byBytes, neverStored, `rewritten as keys: ${JSON.stringify(a)}`);
    assert.equal(b.byKey, 0, `nothing remembered, nothing rewritten: ${JSON.stringify(b)}`);
    // (Not disk bytes: on a chain this small LevelDB's log, which holds each rewritten entry twice
    // until compaction, decides them; the bench reports a real store's bytes.)
    assert.ok(a.valueBytes * 5 < b.valueBytes, `${a.valueBytes} vs ${b.valueBytes} bytes of certifiers`);
  });

  test("values written before keys (all bytes) still read", async () => {
    const store = await fresh();
    await applyAll(store, all.length);
    await store.close();
    const index = all[10]!.index;
    const old = toBinary(
      WireFetchBlocksResponseSchema,
      create(WireFetchBlocksResponseSchema, { blocks: all[10]!.certifierBlocks }),
    );
    await withRawStore(store.path, async ({ chain }) => {
      await chain
        .sublevel<Uint8Array, Uint8Array>("certifiers", {
          keyEncoding: "view",
          valueEncoding: "view",
        })
        .put(indexKey(index), old);
    });
    const reopened = await Store.open(store.path);
    await assertCertifiersExact(reopened);
    await reopened.close();
  });

  test("pruned between applies: pruned entries stay gone, kept ones read exactly", async () => {
    const store = await fresh();
    const half = all.findIndex((c) => c.index === 30);
    await applyAll(store, 1, all.slice(0, half + 1)); // commit 30's certifiers still bytes, remembered
    await store.prune(30);
    await applyAll(store, 1, all.slice(half + 1));
    for (let i = 1; i < 30; i++) assert.equal(await store.getCertifiers(i), undefined, `commit ${i}`);
    for (const c of all.slice(half + 1))
      assert.deepEqual(((await store.getCertifiers(c.index)) ?? []).map(hex), c.certifierBlocks.map(hex));
    await store.close();
  });

  test("a certifier block missing from blocks/ is a corrupt store, named", async () => {
    const store = await fresh();
    await applyAll(store, all.length);
    await store.close();
    const c = all[5]!;
    const { round, author, digest } = refOf(c.certifierBlocks[0]!);
    await withRawStore(store.path, ({ blocks }) => blocks.del(blockKey({ round, author, digest })));
    const reopened = await Store.open(store.path);
    await assert.rejects(reopened.getCertifiers(c.index), (e: unknown) => {
      assert.ok(e instanceof StoreError && e.code === "corrupt", String(e));
      assert.match(e.message, new RegExp(`commit ${c.index} is missing from blocks/`));
      return true;
    });
    await reopened.close();
  });
});

describe("store limits", () => {
  test("maxOpenFiles below 16 is refused before anything is created; 16 opens and syncs the chain", async () => {
    const dir = await mkdtemp(join(tmpdir(), "dagsync-openfiles-"));
    dirs.push(dir);
    await assert.rejects(
      Store.open(join(dir, "refused"), { genesis, limits: { maxOpenFiles: 8 } }),
      /maxOpenFiles must be an integer of at least 16, not 8/,
    );
    assert.equal(existsSync(join(dir, "refused")), false);
    const store = await fresh({ maxOpenFiles: 16 });
    try {
      await applyAll(store, 7);
      assert.equal(store.watermarks.highestSynced, all.length);
    } finally {
      await store.close();
    }
  });
});
