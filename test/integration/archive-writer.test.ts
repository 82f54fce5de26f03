/**
 * The archive writer (src/archive/writer.ts, DESIGN.md §10) on real LevelDB stores: chunks are
 * contiguous, each within one epoch, ending at an epoch's end or chunkCommits long, at a commit the
 * store certifies; their records are exactly the store's bytes; exports are incremental and never
 * touch a published chunk; a pruned store begins the archive at its lowest commit, and one pruned
 * past the archive's end, or an archive of another chain, is refused with the archive unchanged.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  MANIFEST_FILE,
  type Manifest,
  type ManifestChunk,
  parseManifest,
  RecordKind,
  RecordReader,
} from "../../src/archive/format.js";
import { ExportError, type ExportResult, exportArchive } from "../../src/archive/writer.js";
import { parseCommit } from "../../src/core/index.js";
import { DevnetChain, type DevnetOptions, type GeneratedCommit } from "../../src/devnet/chain.js";
import { Store } from "../../src/store/index.js";
import { removeDir, tempDir, toUnit } from "../helpers/server.js";

const CHAIN: Partial<DevnetOptions> = {
  validators: 4,
  epochs: 3,
  commitsPerEpoch: 120,
  txsPerBlock: 2,
  seed: 1,
};
const EPOCH_ENDS = [120, 240, 360];
const CHUNK = 50;

/** Every commit of the chain (the same chain for the same options). */
function generate(options: Partial<DevnetOptions> = CHAIN): {
  chain: DevnetChain;
  commits: GeneratedCommit[];
} {
  const chain = new DevnetChain(options);
  return { chain, commits: [...chain.commits()] };
}

const { chain, commits: ALL } = generate();

/** Opens (or creates) the store in `dir` and applies commits from..to (1-based) that it lacks. */
async function storeWith(
  dir: string,
  to: number,
  certified: (index: number) => boolean = () => true,
): Promise<Store> {
  const store = await Store.open(dir, { genesis: chain.genesis.bytes });
  const from = store.watermarks.highestSynced + 1;
  for (let i = from; i <= to; i += 64)
    await store.apply(ALL.slice(i - 1, Math.min(to, i + 63)).map((c) => toUnit(c, certified(c.index))));
  return store;
}

async function readManifestFile(dir: string): Promise<Manifest> {
  return parseManifest(await readFile(join(dir, MANIFEST_FILE), "utf8"), {
    chainId: chain.chainId,
    genesisDigest: chain.genesis.digest,
  });
}

/** Every file under `dir` (relative paths), sorted. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath ?? (e as unknown as { path: string }).path, e.name)))
    .sort();
}

/** Checks a chunk file against the manifest entry and the store, record by record. */
async function assertChunkMatchesStore(dir: string, c: ManifestChunk, store: Store): Promise<void> {
  const bytes = await readFile(join(dir, c.file));
  assert.equal(bytes.length, c.bytes, `${c.file}: size`);
  assert.equal(createHash("sha256").update(bytes).digest("hex"), c.sha256, `${c.file}: sha256`);
  const reader = new RecordReader(16 * 1024 * 1024, c.file);
  // Odd-sized pieces: the records do not depend on how the file is read.
  const records = [];
  for (let at = 0; at < bytes.length; at += 7777) records.push(...reader.push(bytes.subarray(at, at + 7777)));
  reader.end();

  const expected: { kind: RecordKind; payload: Uint8Array }[] = [];
  for (let i = c.first; i <= c.last; i++) {
    const commit = (await store.getCommit(i))!;
    const entry = parseCommit(commit);
    assert.equal(entry.epoch, c.epoch, `${c.file}: commit ${i} is of the chunk's epoch`);
    expected.push({ kind: RecordKind.commit, payload: commit });
    for (const block of await store.getBlocks(entry.commit.blocks))
      expected.push({ kind: RecordKind.block, payload: block! });
  }
  const certifiers = await store.getCertifiers(c.last);
  assert.ok(certifiers !== undefined && certifiers.length > 0, `${c.file}: commit ${c.last} is certified`);
  for (const b of certifiers) expected.push({ kind: RecordKind.certifier, payload: b });

  assert.equal(records.length, expected.length, `${c.file}: record count`);
  for (const [i, r] of records.entries()) {
    assert.equal(r.kind, expected[i]!.kind, `${c.file}: record ${i} kind`);
    assert.ok(Buffer.from(r.payload).equals(expected[i]!.payload), `${c.file}: record ${i} bytes`);
  }
}

/** The shape rules: contiguous from `from`, one epoch each, epoch end or CHUNK long. */
function assertShape(m: Manifest, from: number, to: number, chunkCommits = CHUNK): void {
  assert.equal(m.chunks[0]?.first, from);
  assert.equal(m.chunks.at(-1)?.last, to);
  for (const [i, c] of m.chunks.entries()) {
    if (i > 0) assert.equal(c.first, m.chunks[i - 1]!.last + 1, `chunk ${i} follows the previous`);
    const epochEnd = EPOCH_ENDS.find((e) => e >= c.first)!;
    assert.ok(c.last <= epochEnd, `chunk ${c.first}..${c.last} stays within its epoch (ends ${epochEnd})`);
    assert.equal(c.epoch, EPOCH_ENDS.indexOf(epochEnd));
    assert.ok(c.last - c.first + 1 <= chunkCommits);
    assert.ok(
      c.last === epochEnd || c.last - c.first + 1 === chunkCommits,
      `chunk ${c.first}..${c.last} ends at its epoch's end or is ${chunkCommits} long`,
    );
    assert.equal(c.file, `chunks/${c.epoch}/${c.first}-${c.last}.dsa`);
  }
}

let root: string;
before(async () => {
  root = await tempDir("dagsync-archive-");
});
after(async () => {
  await removeDir(root);
});

describe("a validator's store (every commit certified)", () => {
  let store: Store;
  let out: string;
  let result: ExportResult;
  before(async () => {
    store = await storeWith(join(root, "full-store"), 360);
    out = join(root, "full-archive");
    result = await exportArchive(store, out, { chunkCommits: CHUNK });
  });
  after(async () => {
    await store.close();
  });

  test("chunks are contiguous from 1, one epoch each, ending at the epoch's end or chunkCommits long", async () => {
    const m = await readManifestFile(out);
    assertShape(m, 1, 360);
    assert.deepEqual(
      m.chunks.map((c) => `${c.first}-${c.last}`),
      ["1-50", "51-100", "101-120", "121-170", "171-220", "221-240", "241-290", "291-340", "341-360"],
    );
    assert.deepEqual(result.written, m.chunks);
    assert.equal(result.first, 1);
    assert.equal(result.last, 360);
    assert.equal(result.chunks, 9);
    assert.equal(result.startedFromPruned, false);
    assert.equal(result.waiting, undefined);
    assert.equal(
      result.bytesWritten,
      m.chunks.reduce((n, c) => n + c.bytes, 0),
    );
  });

  test("every chunk holds exactly the store's commits, blocks in commit order and the certifiers of its last", async () => {
    const m = await readManifestFile(out);
    for (const c of m.chunks) await assertChunkMatchesStore(out, c, store);
    // Nothing but the manifest and the chunks: no temporary file is left.
    assert.deepEqual(await listFiles(out), [MANIFEST_FILE, ...m.chunks.map((c) => c.file)].sort());
  });

  test("a second export writes nothing and leaves every file as it was", async () => {
    const before = await Promise.all(
      (await listFiles(out)).map(async (f) => [f, await stat(join(out, f))] as const),
    );
    const again = await exportArchive(store, out, { chunkCommits: CHUNK });
    assert.deepEqual(again.written, []);
    assert.equal(again.bytesWritten, 0);
    assert.equal(again.last, 360);
    for (const [f, s] of before) {
      const now = await stat(join(out, f));
      assert.equal(now.ino, s.ino, f);
      assert.equal(now.mtimeMs, s.mtimeMs, f);
    }
  });

  test("bounded reads and writes give the same chunks (readCommits 1, writeBufferBytes 1)", async () => {
    const small = join(root, "small-buffers");
    await exportArchive(store, small, { chunkCommits: CHUNK, readCommits: 1, writeBufferBytes: 1 });
    assert.deepEqual(await readManifestFile(small), await readManifestFile(out));
  });

  test("an aborted export leaves the chunks published so far, and no temporary file", async () => {
    const dir = join(root, "aborted");
    const abort = new AbortController();
    await assert.rejects(
      exportArchive(
        store,
        dir,
        { chunkCommits: CHUNK },
        { signal: abort.signal, onChunk: () => abort.abort() },
      ),
      (e: Error) => e.name === "AbortError",
    );
    const m = await readManifestFile(dir);
    assert.deepEqual(
      m.chunks.map((c) => c.last),
      [50],
    );
    assert.deepEqual(await listFiles(dir), ["chunks/0/1-50.dsa", MANIFEST_FILE]);
    // The next run continues.
    const r = await exportArchive(store, dir, { chunkCommits: CHUNK });
    assert.equal(r.written[0]?.first, 51);
    assert.deepEqual(await readManifestFile(dir), await readManifestFile(out));
  });
});

describe("a full node's store (certifiers only at batch ends)", () => {
  // Batches of 30 commits, and every epoch's last commit (batches never cross an epoch).
  const certified = (i: number) => i % 30 === 0 || EPOCH_ENDS.includes(i);

  test("each chunk ends at the highest certified commit of its range", async () => {
    const store = await storeWith(join(root, "fullnode-store"), 360, certified);
    try {
      const out = join(root, "fullnode-archive");
      const r = await exportArchive(store, out, { chunkCommits: CHUNK });
      const m = await readManifestFile(out);
      assert.deepEqual(
        m.chunks.map((c) => `${c.first}-${c.last}`),
        [
          "1-30",
          "31-60",
          "61-90",
          "91-120",
          "121-150",
          "151-180",
          "181-210",
          "211-240",
          "241-270",
          "271-300",
          "301-330",
          "331-360",
        ],
      );
      assert.equal(r.written.length, 12);
      for (const c of m.chunks) await assertChunkMatchesStore(out, c, store);
    } finally {
      await store.close();
    }
  });

  test("a range with no certified commit is refused with the reason, and what came before is kept", async () => {
    const store = await storeWith(join(root, "fullnode-store2"), 360, certified);
    try {
      const out = join(root, "fullnode-small-chunks");
      await assert.rejects(exportArchive(store, out, { chunkCommits: 20 }), (e: unknown) => {
        assert.ok(e instanceof ExportError);
        assert.equal(e.code, "uncertified");
        assert.match(e.message, /no commit in 1\.\.20 has certifier blocks/);
        assert.match(e.message, /more commits per chunk than 20/);
        return true;
      });
      assert.deepEqual((await readManifestFile(out)).chunks, []);
    } finally {
      await store.close();
    }
  });
});

describe("incremental exports", () => {
  test("a later export appends new chunks and never touches published ones", async () => {
    const dir = join(root, "growing-store");
    const out = join(root, "growing-archive");
    let store = await storeWith(dir, 185);
    const first = await exportArchive(store, out, { chunkCommits: CHUNK });
    await store.close();
    assert.deepEqual(
      first.written.map((c) => `${c.first}-${c.last}`),
      ["1-50", "51-100", "101-120", "121-170"],
    );
    assert.deepEqual(first.waiting, { first: 171, last: 185 });
    const published = await Promise.all(
      first.written.map(async (c) => ({
        c,
        bytes: await readFile(join(out, c.file)),
        stat: await stat(join(out, c.file)),
      })),
    );

    // A crash between a chunk and the manifest leaves an unpublished file: it may be written again.
    await mkdir(join(out, "chunks/1"), { recursive: true });
    await writeFile(join(out, "chunks/1/171-220.dsa"), "left over");
    await writeFile(join(out, "chunks/1/171-220.dsa.tmp"), "left over");

    store = await storeWith(dir, 360);
    try {
      const second = await exportArchive(store, out, { chunkCommits: CHUNK });
      assert.deepEqual(
        second.written.map((c) => `${c.first}-${c.last}`),
        ["171-220", "221-240", "241-290", "291-340", "341-360"],
      );
      assert.equal(second.first, 1);
      assert.equal(second.last, 360);
      for (const p of published) {
        const s = await stat(join(out, p.c.file));
        assert.equal(s.ino, p.stat.ino, p.c.file);
        assert.equal(s.mtimeMs, p.stat.mtimeMs, p.c.file);
        assert.ok((await readFile(join(out, p.c.file))).equals(p.bytes), p.c.file);
      }
      const m = await readManifestFile(out);
      assertShape(m, 1, 360);
      assert.deepEqual(m.chunks.slice(0, 4), first.written);
      for (const c of m.chunks.slice(4)) await assertChunkMatchesStore(out, c, store);
      // The same chain gives the same chunks however the export was split in runs.
      assert.deepEqual(m, await readManifestFile(join(root, "full-archive")));
      assert.ok(!(await listFiles(out)).some((f) => f.endsWith(".tmp")));
    } finally {
      await store.close();
    }
  });
});

describe("pruned stores", () => {
  test("with no archive yet, the export begins at the store's lowest commit and says so", async () => {
    const store = await storeWith(join(root, "pruned-store"), 360);
    try {
      await store.prune(101);
      assert.equal(store.watermarks.lowestAvailable, 101);
      const out = join(root, "pruned-archive");
      const r = await exportArchive(store, out, { chunkCommits: CHUNK });
      assert.equal(r.startedFromPruned, true);
      assert.equal(r.first, 101);
      assert.equal(r.last, 360);
      const m = await readManifestFile(out);
      assertShape(m, 101, 360);
      assert.equal(m.chunks[0]!.last, 120);
      for (const c of m.chunks) await assertChunkMatchesStore(out, c, store);
      // A later run continues it and no longer reports the pruned start.
      assert.equal((await exportArchive(store, out, { chunkCommits: CHUNK })).startedFromPruned, false);
    } finally {
      await store.close();
    }
  });

  test("a store pruned past the archive's end is refused, and the archive is unchanged", async () => {
    const out = join(root, "short-archive");
    let store = await storeWith(join(root, "short-store"), 185);
    await exportArchive(store, out, { chunkCommits: CHUNK }); // ends at 170
    await store.close();
    const files = await listFiles(out);
    const manifest = await readFile(join(out, MANIFEST_FILE));

    store = await storeWith(join(root, "pruned-past-store"), 360);
    try {
      await store.prune(200);
      await assert.rejects(exportArchive(store, out, { chunkCommits: CHUNK }), (e: unknown) => {
        assert.ok(e instanceof ExportError);
        assert.equal(e.code, "pruned_past_archive");
        assert.match(e.message, /ends at commit 170/);
        assert.match(e.message, /lowest commit is 200/);
        assert.match(e.message, /commits 171\.\.199 are pruned/);
        return true;
      });
      assert.deepEqual(await listFiles(out), files);
      assert.ok((await readFile(join(out, MANIFEST_FILE))).equals(manifest));

      // Pruned to exactly the archive's end + 1: it continues.
      const store2 = await storeWith(join(root, "pruned-to-end-store"), 360);
      try {
        await store2.prune(171);
        const r = await exportArchive(store2, out, { chunkCommits: CHUNK });
        assert.equal(r.written[0]?.first, 171);
        assert.equal(r.startedFromPruned, false);
        assertShape(await readManifestFile(out), 1, 360);
      } finally {
        await store2.close();
      }
    } finally {
      await store.close();
    }
  });
});

describe("an archive of another chain", () => {
  test("is refused, naming the manifest and both chains, and nothing is written", async () => {
    const other = generate({ ...CHAIN, seed: 2, epochs: 1, commitsPerEpoch: 40 });
    const otherStore = await Store.open(join(root, "other-store"), { genesis: other.chain.genesis.bytes });
    const out = join(root, "other-archive");
    try {
      await otherStore.apply(other.commits.map((c) => toUnit(c)));
      await exportArchive(otherStore, out, { chunkCommits: CHUNK });
    } finally {
      await otherStore.close();
    }
    const files = await listFiles(out);
    const manifest = await readFile(join(out, MANIFEST_FILE));
    const store = await storeWith(join(root, "this-store"), 100);
    try {
      await assert.rejects(exportArchive(store, out, { chunkCommits: CHUNK }), (e: unknown) => {
        assert.ok(e instanceof ExportError);
        assert.equal(e.code, "other_chain");
        assert.ok(e.message.startsWith(join(out, MANIFEST_FILE)), e.message);
        assert.match(e.message, /dagsync-devnet-2.*dagsync-devnet-1/);
        return true;
      });
      assert.deepEqual(await listFiles(out), files);
      assert.ok((await readFile(join(out, MANIFEST_FILE))).equals(manifest));
    } finally {
      await store.close();
    }
  });

  test("a damaged manifest is refused as bad_manifest; an --out that is a file as io", async () => {
    const out = join(root, "damaged");
    await mkdir(out);
    await writeFile(join(out, MANIFEST_FILE), "{not json");
    const file = join(root, "a-file");
    await writeFile(file, "x");
    const store = await storeWith(join(root, "damaged-store"), 10);
    try {
      await assert.rejects(
        exportArchive(store, out),
        (e: unknown) => e instanceof ExportError && e.code === "bad_manifest",
      );
      assert.deepEqual(await listFiles(out), [MANIFEST_FILE]);
      await assert.rejects(
        exportArchive(store, file),
        (e: unknown) =>
          e instanceof ExportError && e.code === "io" && /is a file, not a directory/.test(e.message),
      );
    } finally {
      await store.close();
    }
  });
});
