/**
 * `dagsync archive export` and `dagsync serve --archive-out` as a user runs them: the real CLI
 * (bin/dagsync.js) in child processes on a devnet's store. The export prints one line per chunk
 * and a summary and writes the files; a second run writes nothing; bad input ends with one line
 * naming the flag or file, a non-zero exit and nothing written. A validator serving with
 * --archive-out writes the archive at start and keeps it current while its live producer appends.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { MANIFEST_FILE, type Manifest, parseManifest } from "../../src/archive/format.js";
import { freePort, ProcGroup, waitUntil } from "../helpers/e2e-process.js";

const group = new ProcGroup();
let root: string;
let devnet: string;
let store: string;

/** Runs `dagsync <args>` to completion. */
async function dagsync(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = group.cli(`dagsync ${args[0]} ${args[1] ?? ""}`, args);
  const exit = await p.wait(120_000);
  return { code: exit.code, stdout: p.stdout(), stderr: p.stderr() };
}

async function manifest(dir: string): Promise<Manifest> {
  return parseManifest(await readFile(join(dir, MANIFEST_FILE), "utf8"));
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), "dagsync-archive-cli-"));
  devnet = join(root, "devnet");
  const r = await dagsync(
    "devnet",
    ...["--out", devnet, "--epochs", "3", "--commits-per-epoch", "60", "--txs-per-block", "2"],
    ...["--base-port", String(await freePort()), "--seed", "7"],
  );
  assert.equal(r.code, 0, r.stderr);
  store = join(devnet, "validator-0", "store");
});
after(async () => {
  await group.stopAll();
  await rm(root, { recursive: true, force: true });
});

describe("dagsync archive export", () => {
  test("prints a line per chunk and a summary, writes the files; a second run writes nothing", async () => {
    const out = join(root, "archive");
    const r = await dagsync("archive", "export", "--store", store, "--out", out, "--chunk-commits", "25");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    const m = await manifest(out);
    assert.deepEqual(
      m.chunks.map((c) => `${c.first}-${c.last}`),
      ["1-25", "26-50", "51-60", "61-85", "86-110", "111-120", "121-145", "146-170", "171-180"],
    );
    const lines = r.stdout.trimEnd().split("\n");
    assert.equal(lines.length, m.chunks.length + 1, r.stdout);
    for (const [i, c] of m.chunks.entries()) {
      assert.equal(
        lines[i],
        `wrote ${c.file}: commits ${c.first}..${c.last} of epoch ${c.epoch}, ${c.bytes} bytes`,
      );
      assert.equal((await stat(join(out, c.file))).size, c.bytes);
    }
    const total = m.chunks.reduce((n, c) => n + c.bytes, 0);
    assert.equal(
      lines.at(-1),
      `archive ${out} holds commits 1..180 in 9 chunks; wrote 9 chunks, ${total} bytes`,
    );

    const manifestBefore = await stat(join(out, MANIFEST_FILE));
    const again = await dagsync("archive", "export", "--store", store, "--out", out, "--chunk-commits", "25");
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, `archive ${out} holds commits 1..180 in 9 chunks; nothing new written\n`);
    const manifestAfter = await stat(join(out, MANIFEST_FILE));
    assert.equal(manifestAfter.mtimeMs, manifestBefore.mtimeMs, "the manifest is not rewritten");
    assert.equal(manifestAfter.ino, manifestBefore.ino);
  });

  test("bad input: one line naming the flag or file, exit 1, nothing written", async () => {
    const out = join(root, "never");
    const notStore = join(root, "not-a-store");
    await mkdir(notStore);
    const cases: [string[], RegExp][] = [
      [["--store", join(root, "missing"), "--out", out], /^dagsync: store .*missing does not exist/],
      [["--store", notStore, "--out", out], /^dagsync: --store .*not-a-store is not a dagsync store/],
      [["--store", store, "--out", out, "--chunk-commits", "0"], /--chunk-commits/],
      [["--out", out], /--store/],
    ];
    for (const [args, message] of cases) {
      const r = await dagsync("archive", "export", ...args);
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr.split("\n")[0]!, message);
      assert.ok(!r.stderr.includes("    at "), `no stack trace: ${r.stderr}`);
      if (!args.includes("--chunk-commits") && args.includes("--store"))
        assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    }
    assert.ok(!existsSync(out), "nothing was written");

    // Another chain's archive.
    const other = join(root, "other-archive");
    await mkdir(other);
    const foreign = `{"format":"dagsync-archive/1","chain_id":"someone-else","genesis_digest":"${"ab".repeat(32)}",\n "chunks": []}\n`;
    await writeFile(join(other, MANIFEST_FILE), foreign);
    const r = await dagsync("archive", "export", "--store", store, "--out", other);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /manifest\.json: manifest is of chain "someone-else", not "dagsync-devnet-7"/);
    assert.deepEqual(await readdir(other), [MANIFEST_FILE]);
    assert.equal(await readFile(join(other, MANIFEST_FILE), "utf8"), foreign);
  });
});

describe("dagsync serve --archive-out", () => {
  test("writes the archive at start and keeps it current while the store grows", async () => {
    const out = join(root, "served-archive");
    const port = await freePort();
    const serve = group.cli(
      "serve",
      [
        ...["serve", "--store", store, "--listen", `127.0.0.1:${port}`],
        ...["--archive-out", out, "--archive-interval", "500ms", "--archive-chunk-commits", "10"],
        ...["--live", devnet, "--index", "0", "--round-ms", "40"],
      ],
      { DAGSYNC_LOG_LEVEL: "info" },
    );
    const started = Date.now();
    // The first export (at start) covers the devnet's 180 commits.
    await waitUntil(
      async () => existsSync(join(out, MANIFEST_FILE)) && (await manifest(out)).chunks.at(-1)!.last >= 180,
      `${out}/manifest.json through commit 180\n${serve.output()}`,
      20_000,
    );
    assert.ok(Date.now() - started < 20_000);
    // The live producer appends commits; later exports add their chunks (10 commits each).
    const grown = await waitUntil(
      async () => {
        const m = await manifest(out);
        return m.chunks.at(-1)!.last >= 200 ? m : undefined;
      },
      `chunks past commit 200\n${serve.output()}`,
      30_000,
    );
    assert.equal(grown.chunks[0]!.first, 1);
    for (const c of grown.chunks.filter((c) => c.first > 180)) {
      assert.equal(c.last - c.first + 1, 10, `${c.file} is a full chunk`);
      assert.equal((await stat(join(out, c.file))).size, c.bytes);
    }
    assert.match(serve.stderr(), /"msg":"archive chunk written"/);
    const exit = await serve.stop();
    assert.equal(exit.code, 0, serve.output());
    // Nothing half-written is left behind by the stop.
    const files = await readdir(join(out, "chunks"), { recursive: true });
    assert.ok(!files.some((f) => String(f).endsWith(".tmp")), files.join(" "));
  });
});
