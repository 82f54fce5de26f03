/**
 * Options of the long-running commands from a --config file and DAGSYNC_* variables (flag > env >
 * file > default), and `dagsync checkpoint import`: the real CLI in child processes against a
 * real `dagsync serve` process.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { sha256 } from "../../src/core/digest.js";
import { parseGenesis } from "../../src/core/genesis.js";
import { diskBytes, Store } from "../../src/store/index.js";
import { ProcGroup, startValidator } from "../helpers/e2e-process.js";

const COMMITS = 40;
const group = new ProcGroup();
let root: string;
let genesisFile: string;
let genesis: Uint8Array;
let peer: string;

async function cli(args: readonly string[], env: NodeJS.ProcessEnv = {}) {
  const proc = group.cli(`dagsync ${args[0]}`, args, env);
  const exit = await proc.wait(60_000);
  return { code: exit.code, stdout: proc.stdout(), stderr: proc.stderr(), output: proc.output() };
}

/** `dagsync sync` of `store` from the validator until it holds the chain's end. */
function syncToEnd(store: string) {
  return cli(["sync", "--store", store, "--genesis", genesisFile, "--peer", peer, "--exit-when-synced"]);
}

/** Highest and lowest commit held by the store at `path`. */
async function marks(path: string) {
  const store = await Store.open(path, { mustExist: true, genesis });
  try {
    return { highest: store.watermarks.highestSynced, lowest: store.watermarks.lowestAvailable };
  } finally {
    await store.close();
  }
}

/** A one-line error naming `what`, exit code 1, no stack trace. */
function assertCleanError(r: { code: number | null; stderr: string; output: string }, what: RegExp) {
  assert.equal(r.code, 1, r.output);
  assert.match(r.stderr, what, r.output);
  assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace\n${r.output}`);
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), "dagsync-cli-config-"));
  const dn = join(root, "dn");
  const made = await cli([
    "devnet",
    "--out",
    dn,
    "--epochs",
    "2",
    "--commits-per-epoch",
    String(COMMITS / 2),
    "--txs-per-block",
    "1",
  ]);
  assert.equal(made.code, 0, made.output);
  genesisFile = join(dn, "genesis.pb");
  genesis = new Uint8Array(await readFile(genesisFile));
  peer = (await startValidator(group, "validator-0", join(dn, "validator-0", "store"))).address;
});

after(async () => {
  await group.stopAll();
  await rm(root, { recursive: true, force: true });
});

describe("dagsync sync options from --config and DAGSYNC_*", () => {
  test("a config file alone is enough to sync", async () => {
    const store = join(root, "from-file");
    const config = join(root, "node.json");
    await writeFile(
      config,
      JSON.stringify({ store, genesis: genesisFile, peer: [peer], "exit-when-synced": true }),
    );
    const r = await cli(["sync", "--config", config]);
    assert.equal(r.code, 0, r.output);
    assert.deepEqual(await marks(store), { highest: COMMITS, lowest: 1 });
  });

  test("a flag beats a variable, which beats the file", async () => {
    const [inFile, inEnv, inFlag] = ["store-file", "store-env", "store-flag"].map((n) => join(root, n));
    const config = join(root, "precedence.json");
    await writeFile(config, JSON.stringify({ store: inFile, genesis: genesisFile, peer }));
    const env = { DAGSYNC_STORE: inEnv!, DAGSYNC_EXIT_WHEN_SYNCED: "true" };

    const viaEnv = await cli(["sync", "--config", config], env);
    assert.equal(viaEnv.code, 0, viaEnv.output);
    assert.ok(existsSync(inEnv!), "the variable's store was used");
    assert.ok(!existsSync(inFile!), "the file's store was not");

    const viaFlag = await cli(["sync", "--config", config, "--store", inFlag!], env);
    assert.equal(viaFlag.code, 0, viaFlag.output);
    assert.deepEqual(await marks(inFlag!), { highest: COMMITS, lowest: 1 });
    assert.ok(!existsSync(inFile!), "the file's store was still not used");
  });

  test("a comma-separated DAGSYNC_PEER is a list of peers", async () => {
    const store = join(root, "env-peers");
    const r = await cli(["sync", "--store", store, "--genesis", genesisFile, "--exit-when-synced"], {
      DAGSYNC_PEER: `${peer},${peer}`,
    });
    assert.equal(r.code, 0, r.output);
    assert.equal((await marks(store)).highest, COMMITS);
  });

  test("bad configuration is one line naming the key, variable or flag, and changes nothing", async () => {
    const write = async (name: string, body: string) => {
      const path = join(root, name);
      await writeFile(path, body);
      return path;
    };
    const store = join(root, "never");
    const unknown = await write("unknown.json", JSON.stringify({ stor: store }));
    assertCleanError(await cli(["sync", "--config", unknown]), /unknown option "stor"/);
    const badValue = await write(
      "bad-value.json",
      JSON.stringify({ store, genesis: genesisFile, peer, "max-inflight-mib": 0 }),
    );
    assertCleanError(await cli(["sync", "--config", badValue]), /"max-inflight-mib": 0: expected an integer/);
    const notJson = await write("not-json.json", "{ store: ");
    assertCleanError(await cli(["sync", "--config", notJson]), /not-json\.json: not valid JSON/);
    assertCleanError(
      await cli(["sync", "--config", join(root, "absent.json")]),
      /--config .*absent\.json: file not found/,
    );
    assertCleanError(
      await cli(["sync", "--store", store, "--genesis", genesisFile], { DAGSYNC_PEER: "nowhere" }),
      /DAGSYNC_PEER: nowhere: expected HOST:PORT/,
    );
    assertCleanError(await cli(["sync", "--store", store, "--peer", peer]), /missing --genesis/);
    assert.ok(!existsSync(store), "no store was created by a refused configuration");
  });
});

describe("dagsync checkpoint import", () => {
  test("starts a new store at the checkpoint; sync continues from it; a second import is refused", async () => {
    const exported = await cli(["checkpoint", "export", "--store", join(root, "from-file")]);
    assert.equal(exported.code, 0, exported.output);
    const checkpoint = join(root, "cp.json");
    await writeFile(checkpoint, exported.stdout);
    const cp = JSON.parse(exported.stdout) as { index: number; genesis_digest: string };
    assert.equal(cp.index, COMMITS);
    assert.equal(cp.genesis_digest, Buffer.from(parseGenesis(genesis).digest).toString("hex"));

    const store = join(root, "imported");
    const imported = await cli([
      "checkpoint",
      "import",
      "--store",
      store,
      "--genesis",
      genesisFile,
      checkpoint,
    ]);
    assert.equal(imported.code, 0, imported.output);
    assert.deepEqual(await marks(store), { highest: COMMITS, lowest: COMMITS + 1 });

    const synced = await syncToEnd(store);
    assert.equal(synced.code, 0, synced.output);
    assert.deepEqual(await marks(store), { highest: COMMITS, lowest: COMMITS + 1 }, "no history below it");

    // A store that starts at a checkpoint and holds no commit bytes can pass the checkpoint on.
    const reexported = await cli(["checkpoint", "export", "--store", store]);
    assert.equal(reexported.code, 0, reexported.output);
    assert.deepEqual(JSON.parse(reexported.stdout), JSON.parse(exported.stdout));

    assertCleanError(
      await cli(["checkpoint", "import", "--store", store, "--genesis", genesisFile, checkpoint]),
      /--store .*imported: already exists/,
    );
  });

  for (const [what, index, epoch] of [
    ["the end of epoch 0", COMMITS / 2, 1],
    ["the middle of epoch 1", COMMITS / 2 + 7, 1],
    ["the middle of epoch 0", 5, 0],
  ] as const)
    test(`export --index at ${what}: import, then sync fetches only what follows`, async () => {
      const exported = await cli([
        "checkpoint",
        "export",
        "--store",
        join(root, "from-file"),
        "--index",
        String(index),
      ]);
      assert.equal(exported.code, 0, exported.output);
      const cp = JSON.parse(exported.stdout) as { index: number; digest: string; epoch: number };
      assert.equal(cp.index, index);
      assert.equal(cp.epoch, epoch, "the epoch of the commit after the checkpoint");
      const source = await Store.open(join(root, "from-file"), { mustExist: true, genesis });
      try {
        const next = await source.getCommit(index + 1);
        assert.ok(next !== undefined);
        // The exported digest is SHA-256 of the stored commit bytes (sync checks the link to it).
        const bytes = await source.getCommit(index);
        assert.equal(cp.digest, Buffer.from(sha256(bytes!)).toString("hex"));
      } finally {
        await source.close();
      }
      const file = join(root, `cp-${index}.json`);
      await writeFile(file, exported.stdout);
      const store = join(root, `imported-${index}`);
      const imported = await cli(["checkpoint", "import", "--store", store, "--genesis", genesisFile, file]);
      assert.equal(imported.code, 0, imported.output);
      const synced = await syncToEnd(store);
      assert.equal(synced.code, 0, synced.output);
      assert.deepEqual(await marks(store), { highest: COMMITS, lowest: index + 1 });
    });

  test("export --index outside the store is refused", async () => {
    assertCleanError(
      await cli(["checkpoint", "export", "--store", join(root, "from-file"), "--index", String(COMMITS + 1)]),
      /--index 41: store .* holds commits 1\.\.40/,
    );
  });

  test("a checkpoint of another chain or a broken file is refused and creates nothing", async () => {
    const other = join(root, "other.json");
    const cp = JSON.parse(await readFile(join(root, "cp.json"), "utf8")) as Record<string, unknown>;
    await writeFile(other, JSON.stringify({ ...cp, genesis_digest: "ab".repeat(32) }));
    const store = join(root, "not-imported");
    assertCleanError(
      await cli(["checkpoint", "import", "--store", store, "--genesis", genesisFile, other]),
      /other\.json: .*genesis/,
    );
    const broken = join(root, "broken.json");
    await writeFile(broken, "[]");
    assertCleanError(
      await cli(["checkpoint", "import", "--store", store, "--genesis", genesisFile, broken]),
      /broken\.json/,
    );
    assert.ok(!existsSync(store), "nothing was created");
  });
});

describe("dagsync prune", () => {
  test("deletes history below --keep-from in a stopped node's store; a store in use is refused", async () => {
    const store = join(root, "to-prune");
    await cp(join(root, "from-file"), store, { recursive: true });
    const r = await cli(["prune", "--store", store, "--keep-from", "25"]);
    assert.equal(r.code, 0, r.output);
    const line =
      /pruned commits 1\.\.24 \(24 commits deleted\); .* now holds 25\.\.40; store ([\d.]+) (k?B|MB) → ([\d.]+) (k?B|MB)$/m.exec(
        r.stdout,
      );
    assert.ok(line !== null, r.stdout);
    // Sizes on disk before and after, as `du` counts them (sum of file sizes, powers of 1000).
    const unit = { B: 1, kB: 1e3, MB: 1e6 } as Record<string, number>;
    const before = Number(line[1]) * unit[line[2]!]!;
    const after = Number(line[3]) * unit[line[4]!]!;
    assert.ok(before > 0 && after > 0, line[0]);
    assert.ok(
      Math.abs(after - (await diskBytes(store))) <= after * 0.01,
      `${line[0]}: ${await diskBytes(store)} bytes now`,
    );
    // Nothing left to prune: a line saying so, with the sizes.
    const again = await cli(["prune", "--store", store, "--keep-from", "25"]);
    assert.equal(again.code, 0, again.output);
    assert.match(again.stdout, /nothing to prune below 25; .* now holds 25\.\.40; store .* → /);
    assert.deepEqual(await marks(store), { highest: COMMITS, lowest: 25 });
    const s = await Store.open(store, { mustExist: true, genesis });
    try {
      assert.equal(await s.getCommit(24), undefined);
      assert.ok((await s.getCommit(25)) !== undefined);
    } finally {
      await s.close();
    }
    const held = join(root, "dn", "validator-0", "store");
    assertCleanError(await cli(["prune", "--store", held, "--keep-from", "5"]), /in use by another process/);
    assertCleanError(await cli(["prune", "--store", store, "--keep-from", "0"]), /--keep-from/);
  });
});
