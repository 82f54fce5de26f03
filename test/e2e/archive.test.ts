/**
 * Archives end to end (issue 14, DESIGN §10), every node a `dagsync` process, the archive on a real
 * static host (Debian's nginx) or on a host that fails on purpose:
 *
 * - every validator pruned to its last 500 commits: a full node from genesis, given the validators
 *   and an archive URL, syncs the whole chain, and its store holds the validator's unpruned chain
 *   byte for byte;
 * - a node with only an archive (a directory) and no live peer at all syncs the whole chain;
 * - a missing chunk, a tampered chunk and a manifest that lies about a chunk's range each stop the
 *   node before that chunk with the reason in its log, and nothing of the chunk is stored; a body
 *   cut short once is resumed with a Range request;
 * - a node started from a trusted checkpoint never reads a chunk below it.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type Manifest, parseManifest } from "../../src/archive/index.js";
import { type Host, NGINX, startFaultServer, startNginx } from "../helpers/archive-http.js";
import { logRecords, type Proc, ProcGroup, waitServing } from "../helpers/e2e-process.js";
import { assertSameChain, checkStoreIntegrity, readGenesisBytes, withStore } from "../helpers/e2e-store.js";
import { type DevnetFixture, makeDevnet, removeDir, tempDir } from "../helpers/server.js";

const HOST = "127.0.0.71";
const DEVNET = { validators: 4, epochs: 3, commitsPerEpoch: 400, txsPerBlock: 2, txBytes: 64, seed: 71 };
const KEEP = 500;

const group = new ProcGroup();
let root: string;
let devnet: DevnetFixture;
let commits: number;
let genesis: Uint8Array;
/** An unpruned copy of validator 0's store: the reference. */
let reference: string;
let archive: string;
let manifest: Manifest;
let nginx: Host;

async function run(name: string, args: readonly string[], timeoutMs = 120_000): Promise<Proc> {
  const p = group.cli(name, args);
  await p.wait(timeoutMs);
  return p;
}

/** `dagsync sync --exit-when-synced` of a new store; resolves with the process once it exited. */
async function syncNode(
  name: string,
  extra: readonly string[],
  maxStall = "60s",
): Promise<{ proc: Proc; store: string }> {
  const store = join(root, name);
  const proc = await run(name, [
    "sync",
    "--store",
    store,
    "--genesis",
    devnet.summary.genesisFile,
    "--exit-when-synced",
    "--max-stall",
    maxStall,
    ...extra,
  ]);
  return { proc, store };
}

before(async () => {
  root = await tempDir("dagsync-e2e-archive-");
  const basePort = 24_000 + 2 * Math.floor(Math.random() * 2_000);
  devnet = await makeDevnet({ ...DEVNET, host: HOST, basePort });
  commits = devnet.summary.commits;
  genesis = await readGenesisBytes(devnet.summary.genesisFile);
  reference = join(root, "reference");
  await cp(devnet.storePath(0), reference, { recursive: true });
  archive = join(root, "archive");
  const exp = await run("export", [
    "archive",
    "export",
    "--store",
    devnet.storePath(0),
    "--out",
    archive,
    "--chunk-commits",
    "150",
  ]);
  assert.equal(exp.exit?.code, 0, exp.output());
  manifest = parseManifest(await readFile(join(archive, "manifest.json"), "utf8"));
  nginx = await startNginx(archive, join(root, "nginx"));
});

after(async () => {
  await group.stopAll(2_000);
  await nginx?.stop();
  await Promise.all([devnet?.remove(), root && removeDir(root)]);
});

describe("archives across real processes", {
  skip: existsSync(NGINX) ? false : `${NGINX} is not installed`,
}, () => {
  test("the archive covers the whole chain in chunks of one epoch each", () => {
    assert.equal(manifest.chunks[0]?.first, 1);
    assert.equal(manifest.chunks.at(-1)?.last, commits);
    assert.ok(manifest.chunks.length >= 9, `${manifest.chunks.length} chunks`);
  });

  describe("every validator pruned to its last 500 commits", () => {
    const validators: Proc[] = [];

    before(async () => {
      const keepFrom = commits - KEEP + 1;
      await Promise.all(
        devnet.summary.validators.map(async (v) => {
          const p = await run(`prune-${v.index}`, [
            "prune",
            "--store",
            v.store,
            "--keep-from",
            String(keepFrom),
          ]);
          assert.equal(p.exit?.code, 0, p.output());
        }),
      );
      for (const v of devnet.summary.validators)
        validators.push(
          group.cli(`validator-${v.index}`, ["serve", "--store", v.store, "--listen", v.syncAddress]),
        );
      await Promise.all(devnet.summary.validators.map((v, i) => waitServing(v.syncAddress, validators[i])));
    });
    after(async () => {
      await Promise.all(validators.map((v) => v.stop(2_000)));
    });

    test("without an archive, a node from genesis cannot finish (nobody serves commit 1)", async () => {
      const { proc } = await syncNode("no-archive", [], "3s");
      assert.equal(proc.exit?.code, 1, proc.output());
      assert.match(proc.stderr(), /pruned/);
    });

    test("with the validators and an archive URL (nginx), it syncs the whole chain, byte for byte", async () => {
      const { proc, store } = await syncNode("from-archive", ["--archive", nginx.url]);
      assert.equal(proc.exit?.code, 0, proc.output());
      await assertSameChain(reference, store, 1, commits);
      const integrity = await checkStoreIntegrity(store, genesis);
      assert.equal(integrity.highest, commits);
      const fetched = (await nginx.requests()).filter((r) => r.path.startsWith("chunks/"));
      assert.ok(fetched.length > 0, "chunks came from nginx");
    });
  });

  test("a node with only an archive directory and no live peer at all syncs the whole chain", async () => {
    const { proc, store } = await syncNode("archive-only", ["--no-discovery", "--archive", archive]);
    assert.equal(proc.exit?.code, 0, proc.output());
    await assertSameChain(reference, store, 1, commits);
  });

  describe("a host that fails", () => {
    const second = () => manifest.chunks[1]!;
    const third = () => manifest.chunks[2]!;

    async function stopsBefore(name: string, host: Host, chunk: { first: number }, reason: RegExp) {
      const { proc, store } = await syncNode(name, ["--no-discovery", "--archive", host.url], "4s");
      assert.equal(proc.exit?.code, 1, proc.output());
      const warned = logRecords(proc.stderr()).filter((r) => typeof r.msg === "string" && reason.test(r.msg));
      assert.ok(warned.length >= 1, `the log gives the reason ${reason}:\n${proc.stderr().slice(-3000)}`);
      await withStore(store, async (s) => {
        assert.equal(
          s.watermarks.highestSynced,
          chunk.first - 1,
          "synced up to the chunk before, and nothing of it",
        );
        assert.equal(await s.getCommit(chunk.first), undefined);
      });
    }

    test("a missing chunk (404) stops it before that chunk, with the reason", async () => {
      const host = await startFaultServer(archive, { missing: [second().file] });
      try {
        await stopsBefore("missing", host, second(), /missing_chunk|HTTP 404/);
      } finally {
        await host.stop();
      }
    });

    test("a tampered chunk (one flipped byte) is refused by its SHA-256 and nothing of it is stored", async () => {
      const host = await startFaultServer(archive, { flip: { path: second().file, at: 1000 } });
      try {
        await stopsBefore("tampered", host, second(), /tampered_chunk/);
      } finally {
        await host.stop();
      }
    });

    test("a manifest that lies about a chunk's range is refused for that chunk", async () => {
      // The third chunk claims one commit more than it holds (and the fourth one commit less).
      const lie = (text: string) => {
        const m = JSON.parse(text) as { chunks: { first: number; last: number }[] };
        m.chunks[2]!.last += 1;
        m.chunks[3]!.first += 1;
        return JSON.stringify(m);
      };
      const host = await startFaultServer(archive, { manifest: lie });
      try {
        await stopsBefore("lying", host, third(), /malformed_chunk/);
      } finally {
        await host.stop();
      }
    });

    test("a body cut short is resumed with a Range request and the node syncs everything", async () => {
      const file = second().file;
      const host = await startFaultServer(archive, { cut: { path: file, afterBytes: 20_000, times: 1 } });
      try {
        const { proc, store } = await syncNode("resumed", ["--no-discovery", "--archive", host.url]);
        assert.equal(proc.exit?.code, 0, proc.output());
        await assertSameChain(reference, store, 1, commits);
        const asked = (await host.requests()).filter((r) => r.path === file);
        assert.ok(
          asked.some((r) => r.range === "bytes=20000-"),
          `a Range request resumed it: ${JSON.stringify(asked)}`,
        );
      } finally {
        await host.stop();
      }
    });
  });

  test("a node started from a trusted checkpoint never reads the archive below it", async () => {
    const at = manifest.chunks[4]!.first + 10;
    const cp = await run("cp-export", ["checkpoint", "export", "--store", reference, "--index", String(at)]);
    assert.equal(cp.exit?.code, 0, cp.output());
    const cpFile = join(root, "cp.json");
    await (await import("node:fs/promises")).writeFile(cpFile, cp.stdout());
    const host = await startFaultServer(archive);
    try {
      const { proc, store } = await syncNode("from-checkpoint", [
        "--no-discovery",
        "--checkpoint",
        cpFile,
        "--archive",
        host.url,
      ]);
      assert.equal(proc.exit?.code, 0, proc.output());
      const chunks = (await host.requests()).filter((r) => r.path.startsWith("chunks/")).map((r) => r.path);
      const below = manifest.chunks.filter((c) => c.last <= at).map((c) => c.file);
      assert.deepEqual(
        chunks.filter((c) => below.includes(c)),
        [],
        "no chunk wholly below the checkpoint was read",
      );
      await assertSameChain(reference, store, at + 1, commits);
    } finally {
      await host.stop();
    }
    await rm(cpFile, { force: true });
  });
});
