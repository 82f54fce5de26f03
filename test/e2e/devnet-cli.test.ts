/**
 * `dagsync devnet` as a user runs it: the real CLI (bin/dagsync.js) in a child process. What it
 * writes (genesis, summary, key files, one store per validator), that a seed fixes the output byte
 * for byte, and that bad flags and a non-empty --out end with a one-line message naming the flag.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { toHex } from "../../src/core/index.js";
import { readKeyFile } from "../../src/crypto/key-file.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import { Store } from "../../src/store/index.js";
import { run, spawnNode } from "../fixtures/child-process.js";

const COMMITS = 40;
const FLAGS = ["--epochs", "2", "--commits-per-epoch", "20"];

const hex = (b: Uint8Array | undefined) => (b === undefined ? "(none)" : Buffer.from(b).toString("hex"));

/** Runs `dagsync <args>` from the repository root. */
function dagsync(...args: string[]) {
  return run(spawnNode("bin/dagsync.js", args));
}

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), "dagsync-devnet-cli-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** The commit bytes and block bytes held by a store, as hex, checking they are all there. */
async function storeContents(path: string, genesis: Uint8Array) {
  const store = await Store.open(path, { genesis });
  try {
    assert.equal(store.watermarks.highestSynced, COMMITS, `${path} highest synced`);
    assert.equal(store.watermarks.lowestAvailable, 1);
    assert.equal(store.watermarks.epoch, 2);
    const commits = await store.getCommits(1, COMMITS + 100);
    assert.equal(commits.length, COMMITS, `${path} holds ${COMMITS} commits`);
    return { commits: commits.map(hex), digest: hex(store.watermarks.highestSyncedDigest) };
  } finally {
    await store.close();
  }
}

describe("dagsync devnet", () => {
  test("writes genesis, devnet.json, key files and a full store per validator; a seed fixes the bytes", async () => {
    const out = join(root, "dn");
    const same = join(root, "dn-same");
    const other = join(root, "dn-other");
    const [first, second, third] = await Promise.all([
      dagsync("devnet", "--out", out, ...FLAGS, "--seed", "5"),
      dagsync("devnet", "--out", same, ...FLAGS, "--seed", "5"),
      dagsync("devnet", "--out", other, ...FLAGS, "--seed", "6"),
    ]);
    for (const r of [first, second, third]) assert.equal(r.code, 0, `exit code; stderr:\n${r.stderr}`);

    // The output names what it wrote.
    assert.ok(first.stdout.includes(out), first.stdout);
    assert.ok(first.stdout.includes(join(out, "genesis.pb")), first.stdout);
    assert.ok(first.stdout.includes(join(out, "devnet.json")), first.stdout);
    assert.match(first.stdout, new RegExp(`${COMMITS} commits`));
    assert.ok(first.stdout.includes("dagsync-devnet-5"), first.stdout);

    // genesis.pb is the seed's genesis.
    const genesis = new Uint8Array(await readFile(join(out, "genesis.pb")));
    const expected = new DevnetChain({ epochs: 2, commitsPerEpoch: 20, seed: 5 });
    assert.equal(hex(genesis), hex(expected.genesis.bytes));

    // devnet.json summarizes it.
    const summary = JSON.parse(await readFile(join(out, "devnet.json"), "utf8")) as {
      chainId: string;
      genesisDigest: string;
      commits: number;
      epochs: number;
      blocks: number;
      validators: { index: number; store: string; protocolKeyFile: string; networkKeyFile: string }[];
    };
    assert.equal(summary.commits, COMMITS);
    assert.equal(summary.epochs, 2);
    assert.equal(summary.chainId, "dagsync-devnet-5");
    assert.equal(summary.genesisDigest, toHex(expected.genesis.digest));
    assert.ok(summary.blocks > COMMITS);
    assert.equal(summary.validators.length, 4);

    // One folder per validator: key files readable only by the owner, a store with the whole chain.
    const entries = await readdir(out);
    for (const name of ["genesis.pb", "devnet.json"])
      assert.ok(entries.includes(name), `${name} in ${entries}`);
    assert.deepEqual(entries.filter((e) => e.startsWith("validator-")).sort(), [
      "validator-0",
      "validator-1",
      "validator-2",
      "validator-3",
    ]);
    const generated = [...expected.commits()];
    const finalKeys = expected.keysByEpoch.get(2)!;
    let reference: Awaited<ReturnType<typeof storeContents>> | undefined;
    for (let i = 0; i < 4; i++) {
      const vdir = join(out, `validator-${i}`);
      assert.equal(summary.validators[i]?.store, join(vdir, "store"));
      for (const name of ["protocol.key", "network.key"]) {
        const file = join(vdir, name);
        assert.equal((await stat(file)).mode & 0o777, 0o600, `mode of ${file}`);
      }
      // The keys are the validator's keys in the final committee.
      const protocol = await readKeyFile(join(vdir, "protocol.key"));
      const network = await readKeyFile(join(vdir, "network.key"));
      assert.equal(toHex(protocol.publicKey), toHex(finalKeys[i]!.protocol.publicKey));
      assert.equal(toHex(network.publicKey), toHex(finalKeys[i]!.network.publicKey));

      const contents = await storeContents(join(vdir, "store"), genesis);
      if (reference === undefined) {
        reference = contents;
        assert.deepEqual(
          contents.commits,
          generated.map((c) => hex(c.commitBytes)),
          "the store holds the seed's chain",
        );
        assert.equal(contents.digest, hex(generated.at(-1)!.commitDigest));
      } else assert.deepEqual(contents, reference, `validator-${i} holds the same chain as validator-0`);
    }
    // Each validator store also opens on its own (without --genesis), as `serve` opens it.
    const alone = await Store.open(join(out, "validator-3", "store"));
    try {
      assert.equal(alone.genesis.genesis.chainId, "dagsync-devnet-5");
    } finally {
      await alone.close();
    }

    // Same flags into another folder: the same bytes.
    const sameGenesis = new Uint8Array(await readFile(join(same, "genesis.pb")));
    assert.equal(hex(sameGenesis), hex(genesis));
    assert.deepEqual(await storeContents(join(same, "validator-0", "store"), sameGenesis), reference);
    for (const file of [join("validator-2", "protocol.key"), join("validator-2", "network.key")])
      assert.equal(await readFile(join(same, file), "utf8"), await readFile(join(out, file), "utf8"), file);

    // Another seed: another chain.
    const otherGenesis = new Uint8Array(await readFile(join(other, "genesis.pb")));
    assert.notEqual(hex(otherGenesis), hex(genesis));
    const otherContents = await storeContents(join(other, "validator-0", "store"), otherGenesis);
    assert.notDeepEqual(otherContents.commits, reference?.commits);
    assert.notEqual(otherContents.commits[0], reference?.commits[0]);
    await assert.rejects(Store.open(join(other, "validator-0", "store"), { genesis }), {
      code: "foreign_genesis",
    });
  });

  test("bad flags exit non-zero with a message that names the flag, and write nothing", async () => {
    const cases = [
      { flags: ["--validators", "x"], flag: "--validators" },
      { flags: ["--epochs", "0"], flag: "--epochs" },
      { flags: ["--tx-bytes", "-1"], flag: "--tx-bytes" },
      { flags: ["--commits-per-epoch", "1.5"], flag: "--commits-per-epoch" },
    ];
    const results = await Promise.all(
      cases.map((c, i) => dagsync("devnet", "--out", join(root, `bad-${i}`), ...c.flags)),
    );
    cases.forEach((c, i) => {
      const r = results[i]!;
      const what = `dagsync devnet ${c.flags.join(" ")}`;
      assert.notEqual(r.code, 0, `${what} exit code`);
      assert.ok(r.stderr.includes(c.flag), `${what}: stderr should name ${c.flag}:\n${r.stderr}`);
      assert.ok(!r.stderr.includes("    at "), `${what}: no stack trace:\n${r.stderr}`);
      assert.equal(existsSync(join(root, `bad-${i}`)), false, `${what} wrote its --out`);
    });
  });

  test("a non-empty --out exits 1 naming --out, without a stack trace, and leaves it untouched", async () => {
    const out = join(root, "taken");
    await mkdir(out);
    await writeFile(join(out, "notes.txt"), "keep me\n");
    const r = await dagsync("devnet", "--out", out, ...FLAGS, "--seed", "5");
    assert.equal(r.code, 1, `exit code; stderr:\n${r.stderr}`);
    assert.ok(r.stderr.includes("--out"), r.stderr);
    assert.ok(r.stderr.includes(out), r.stderr);
    assert.ok(!r.stderr.includes("    at "), `no stack trace:\n${r.stderr}`);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line:\n${r.stderr}`);
    assert.deepEqual(await readdir(out), ["notes.txt"]);
    assert.equal(await readFile(join(out, "notes.txt"), "utf8"), "keep me\n");
  });
});
