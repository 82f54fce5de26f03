/**
 * The archive reader on real parts (DESIGN §10): an archive exported by the real writer from a real
 * LevelDB store, read from its directory, from nginx, and from a host that fails on purpose. What
 * it answers must be exactly the store's bytes, the §3 batch shape (a chunk's commits from `start`
 * with the certifiers of its last), and a bad chunk must fail with its reason, never hand on a
 * byte of it, and not poison the chunks after it.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ArchiveError, ArchiveSource, type Manifest, parseManifest } from "../../src/archive/index.js";
import { exportArchive } from "../../src/archive/writer.js";
import { parseCommit, toHex } from "../../src/core/index.js";
import { Store } from "../../src/store/index.js";
import { NGINX, startFaultServer, startNginx } from "../helpers/archive-http.js";
import { type DevnetFixture, makeDevnet, removeDir, tempDir } from "../helpers/server.js";

let root: string;
let devnet: DevnetFixture;
let store: Store;
let archive: string;
let manifest: Manifest;
const signal = new AbortController().signal;

before(async () => {
  root = await tempDir("dagsync-archive-reader-");
  devnet = await makeDevnet({
    validators: 4,
    epochs: 2,
    commitsPerEpoch: 120,
    txsPerBlock: 4,
    txBytes: 200,
    seed: 81,
  });
  store = await Store.open(devnet.storePath(0), {});
  archive = join(root, "archive");
  await exportArchive(store, archive, { chunkCommits: 50 });
  manifest = parseManifest(await readFile(join(archive, "manifest.json"), "utf8"));
});

after(async () => {
  await store?.close();
  await Promise.all([devnet?.remove(), root && removeDir(root)]);
});

function source(location: string, extra: Partial<ConstructorParameters<typeof ArchiveSource>[0]> = {}) {
  return new ArchiveSource({
    location,
    chainId: store.genesis.genesis.chainId,
    genesisDigest: store.genesis.digest,
    options: { retryBaseMs: 10, retryMaxMs: 50, requestTimeoutMs: 2_000, idleTimeoutMs: 500 },
    ...extra,
  });
}

/** Every commit of `chunk` from `start`, its certifiers, and every block, checked against the store. */
async function assertServesChunk(a: ArchiveSource, chunkAt: number, start: number): Promise<void> {
  const chunk = manifest.chunks[chunkAt]!;
  const res = await a.fetchCommits(start, start + 9, signal);
  assert.equal(res.commits.length, chunk.last - start + 1, "the rest of the chunk: one batch");
  const stored = await store.getCommits(start, chunk.last);
  assert.deepEqual(res.commits.map(toHex), stored.map(toHex));
  assert.deepEqual(
    res.certifierBlocks.map(toHex),
    ((await store.getCertifiers(chunk.last)) ?? []).map(toHex),
  );
  const refs = res.commits.flatMap((c) => parseCommit(c).commit.blocks);
  const blocks = await a.fetchBlocks(refs, { first: start, last: chunk.last }, signal);
  assert.equal(blocks.blocks.length, refs.length);
  assert.deepEqual(
    blocks.blocks.map(toHex),
    (await store.getBlocks(refs)).map((b) => toHex(b!)),
  );
}

describe("the archive reader", () => {
  test("the writer's archive: contiguous chunks of one epoch each, the whole chain", () => {
    assert.equal(manifest.chunks[0]?.first, 1);
    assert.equal(manifest.chunks.at(-1)?.last, store.watermarks.highestSynced);
    assert.ok(manifest.chunks.length >= 6);
  });

  test("from a directory: availability is the manifest's range; answers are the store's bytes", async () => {
    const a = source(archive);
    try {
      const av = await a.availability(signal);
      assert.equal(av.lowest, 1);
      assert.equal(av.highest, store.watermarks.highestSynced);
      assert.deepEqual(av.genesisDigest, store.genesis.digest);
      await assertServesChunk(a, 0, 1);
      await assertServesChunk(a, 3, manifest.chunks[3]!.first + 7);
    } finally {
      await a.close();
    }
  });

  test("blocks of refs spanning two chunks come from both", async () => {
    const a = source(archive);
    try {
      const [c0, c1] = [manifest.chunks[0]!, manifest.chunks[1]!];
      const tail = (await a.fetchCommits(c0.last - 1, c0.last, signal)).commits;
      const head = (await a.fetchCommits(c1.first, c1.first, signal)).commits.slice(0, 2);
      const refs = [...tail, ...head].flatMap((c) => parseCommit(c).commit.blocks);
      const res = await a.fetchBlocks(refs, { first: c0.last - 1, last: c1.first + 1 }, signal);
      assert.equal(res.blocks.length, refs.length);
    } finally {
      await a.close();
    }
  });

  test("from nginx: the same answers", {
    skip: existsSync(NGINX) ? false : `${NGINX} is not installed`,
  }, async () => {
    const host = await startNginx(archive, join(root, "nginx"));
    const a = source(host.url);
    try {
      await assertServesChunk(a, 2, manifest.chunks[2]!.first);
      const asked = (await host.requests()).map((r) => r.path);
      assert.ok(asked.includes("manifest.json") && asked.includes(manifest.chunks[2]!.file), asked.join(" "));
      // Only the chunk asked about was downloaded.
      assert.equal(asked.filter((p) => p.startsWith("chunks/")).length, 1);
    } finally {
      await a.close();
      await host.stop();
    }
  });

  describe("a host that fails", () => {
    const problems: ArchiveError[] = [];
    const expectFailure = async (p: Promise<unknown>, code: string) => {
      await assert.rejects(p, (e: unknown) => e instanceof ArchiveError && e.code === code);
    };

    test("a 404 chunk fails as missing, the chunks after it still serve", async () => {
      const host = await startFaultServer(archive, { missing: [manifest.chunks[1]!.file] });
      const a = source(host.url, { onProblem: (e) => problems.push(e) });
      try {
        await expectFailure(
          a.fetchCommits(manifest.chunks[1]!.first, manifest.chunks[1]!.last, signal),
          "missing_chunk",
        );
        assert.ok(problems.some((e) => e.code === "missing_chunk"));
        // Marked bad: a second call fails at once, without asking the host again.
        const before = (await host.requests()).length;
        await expectFailure(
          a.fetchCommits(manifest.chunks[1]!.first, manifest.chunks[1]!.last, signal),
          "missing_chunk",
        );
        assert.equal((await host.requests()).length, before);
        // The archive still advertises its whole range and serves the next chunk.
        assert.equal((await a.availability(signal)).highest, store.watermarks.highestSynced);
        await assertServesChunk(a, 2, manifest.chunks[2]!.first);
      } finally {
        await a.close();
        await host.stop();
      }
    });

    test("a flipped byte fails as tampered, by SHA-256, before any record is used", async () => {
      const chunk = manifest.chunks[0]!;
      const host = await startFaultServer(archive, { flip: { path: chunk.file, at: 10 } });
      const a = source(host.url);
      try {
        await expectFailure(a.fetchCommits(1, 10, signal), "tampered_chunk");
      } finally {
        await a.close();
        await host.stop();
      }
    });

    test("a body cut short is resumed from where it stopped (Range) and then served whole", async () => {
      const chunk = manifest.chunks[0]!;
      const host = await startFaultServer(archive, {
        cut: { path: chunk.file, afterBytes: 5_000, times: 1 },
      });
      const a = source(host.url);
      try {
        await assertServesChunk(a, 0, 1);
        const ranges = (await host.requests()).filter((r) => r.path === chunk.file).map((r) => r.range);
        assert.deepEqual(ranges, [undefined, "bytes=5000-"]);
      } finally {
        await a.close();
        await host.stop();
      }
    });

    test("a host that stops sending is cut after idleTimeoutMs and retried, then reported unreachable", async () => {
      const host = await startFaultServer(archive, { bytesPerSecond: 1 });
      const a = source(host.url, {
        options: { idleTimeoutMs: 200, requestTimeoutMs: 500, maxAttempts: 2, retryBaseMs: 10 },
      });
      try {
        await expectFailure(a.fetchCommits(1, 10, signal), "unreachable");
      } finally {
        await a.close();
        await host.stop();
      }
    });

    test("a manifest claiming one commit more than a chunk holds: that chunk is malformed", async () => {
      const lie = (text: string) => {
        const m = JSON.parse(text) as { chunks: { first: number; last: number }[] };
        m.chunks[1]!.last += 1;
        m.chunks[2]!.first += 1;
        return JSON.stringify(m);
      };
      const host = await startFaultServer(archive, { manifest: lie });
      const a = source(host.url);
      try {
        await expectFailure(
          a.fetchCommits(manifest.chunks[1]!.first, manifest.chunks[1]!.last, signal),
          "malformed_chunk",
        );
        await assertServesChunk(a, 0, 1);
      } finally {
        await a.close();
        await host.stop();
      }
    });

    test("another chain's manifest shows as another chain's source (a zero genesis digest)", async () => {
      const other = (text: string) => text.replace(/"chain_id":"[^"]*"/, '"chain_id":"someone-else"');
      const host = await startFaultServer(archive, { manifest: other });
      const seen: ArchiveError[] = [];
      const a = source(host.url, { onProblem: (e) => seen.push(e) });
      try {
        const av = await a.availability(signal);
        assert.notDeepEqual(av.genesisDigest, store.genesis.digest);
        assert.ok(seen.some((e) => e.code === "other_chain" && /someone-else/.test(e.message)));
      } finally {
        await a.close();
        await host.stop();
      }
    });

    test("a manifest that is not one is refused with bad_manifest", async () => {
      const host = await startFaultServer(archive, { manifest: () => "<html>not found</html>" });
      const a = source(host.url);
      try {
        await expectFailure(a.availability(signal), "bad_manifest");
      } finally {
        await a.close();
        await host.stop();
      }
    });
  });
});
