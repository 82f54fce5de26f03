/**
 * Atomicity of store.apply across a real crash: a child process applies a generated chain (one
 * commit per call, and some multi-commit calls) and is SIGKILLed after a random delay, several
 * times over the same store. After every kill the store must hold exactly the commits of the calls
 * that completed, every one whole (commit, blocks, certifiers, watermarks), and nothing past them
 * but, possibly, the blocks of the call in flight (written before its commits; Store's doc).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { toBinary } from "@bufbuild/protobuf";
import { sha256 } from "../../src/core/index.js";
import { DevnetChain, type DevnetOptions, type GeneratedCommit } from "../../src/devnet/chain.js";
import { CommitteeSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import { Store } from "../../src/store/index.js";
import { type Child, spawnTs } from "../fixtures/child-process.js";

const APPLY_CHILD = fileURLToPath(new URL("../fixtures/apply-child.ts", import.meta.url));

const OPTIONS: Partial<DevnetOptions> = {
  validators: 4,
  epochs: 3,
  commitsPerEpoch: 80,
  txsPerBlock: 4,
  txBytes: 1024,
  seed: 17,
};
const ROUNDS = 5;
/**
 * Applying the whole chain takes a child only a few hundred ms, too little to aim a kill by time
 * alone. So each round picks a random commit in the next stretch of the chain, waits until the
 * child reports it applied, then kills after a further random delay while the child keeps going.
 */
const MAX_EXTRA_DELAY_MS = 3;

const chain = new DevnetChain(OPTIONS);
const all = [...chain.commits()];
const TOTAL = all.length;

function at(index: number): GeneratedCommit {
  const c = all[index - 1];
  assert.ok(c !== undefined && c.index === index, `no generated commit ${index}`);
  return c;
}

const hex = (b: Uint8Array | undefined) => (b === undefined ? "(none)" : Buffer.from(b).toString("hex"));

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), "dagsync-crash-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** What the child said before it died: where it started, the last call returned, the call in flight. */
function progressOf(child: Child) {
  let ready: number | undefined;
  let acked: number | undefined;
  let inFlight: { first: number; last: number } | undefined;
  let done = false;
  for (const line of child.lines()) {
    const [word, a, b] = line.split(" ");
    if (word === "ready") ready = Number(a);
    else if (word === "applying") inFlight = { first: Number(a), last: Number(b) };
    else if (word === "applied") {
      acked = Number(a);
      inFlight = undefined;
    } else if (word === "done") done = true;
  }
  assert.ok(ready !== undefined, `the child never got ready:\n${child.stdout()}\n${child.stderr()}`);
  return { ready, acked: acked ?? ready, inFlight, done };
}

/**
 * Every commit 1..w whole and as generated, nothing above w but blocks of the commits of calls
 * that were in flight at a kill, this round's or an earlier round's (each as generated: a crash
 * between a unit's block batch and its commit batch leaves them, and the resumed child writes
 * them again, identically, only once it gets that far), and watermarks that match.
 */
async function checkConsistent(
  store: Store,
  w: number,
  inFlight: readonly { first: number; last: number }[],
): Promise<void> {
  const marks = store.watermarks;
  assert.equal(marks.highestSynced, w);
  assert.equal(marks.highestVerified, w);
  assert.equal(marks.lowestAvailable, 1);
  assert.equal(hex(marks.highestSyncedDigest), hex(w === 0 ? chain.genesis.digest : at(w).commitDigest));

  const stored = await store.getCommits(1, w);
  assert.equal(stored.length, w, `commits 1..${w} are all present`);
  for (let i = 1; i <= w; i++) {
    const c = at(i);
    const bytes = stored[i - 1]!;
    assert.equal(hex(sha256(bytes)), hex(c.commitDigest), `digest of commit ${i}`);
    assert.equal(hex(bytes), hex(c.commitBytes), `bytes of commit ${i}`);
    const blocks = await store.getBlocks(c.blocks.map((b) => b.ref));
    assert.deepEqual(
      blocks.map(hex),
      c.blocks.map((b) => hex(b.bytes)),
      `blocks of commit ${i}`,
    );
    assert.deepEqual(
      ((await store.getCertifiers(i)) ?? []).map(hex),
      c.certifierBlocks.map(hex),
      `certifiers of commit ${i}`,
    );
  }

  // Nothing of a later commit: no commit, no certifier, and no block but the call in flight's.
  assert.deepEqual(await store.getCommits(w + 1, w + 1000), []);
  assert.equal(await store.getCommit(w + 1), undefined);
  const inCall = (c: GeneratedCommit) => inFlight.some((f) => c.index >= f.first && c.index <= f.last);
  const later = all
    .slice(w)
    .filter((c) => !inCall(c))
    .flatMap((c) => c.blocks.map((b) => b.ref));
  const leaked = (await store.getBlocks(later)).filter((b) => b !== undefined);
  assert.equal(leaked.length, 0, `blocks of commits above ${w} are stored`);
  for (const c of all.slice(w).filter(inCall)) {
    const present = await store.getBlocks(c.blocks.map((b) => b.ref));
    present.forEach((bytes, i) => {
      if (bytes !== undefined)
        assert.equal(hex(bytes), hex(c.blocks[i]!.bytes), `block of commit ${c.index}`);
    });
  }
  assert.equal(await store.highestCertifiedIn(w + 1, TOTAL + 1), undefined);

  // Epoch changes exactly as far as commit w.
  const ends = all.filter((c) => c.nextCommittee !== undefined && c.index <= w);
  assert.equal(marks.epoch, ends.length);
  for (const c of ends) {
    assert.equal(await store.epochEnd(c.epoch), c.index);
    assert.equal(
      hex(toBinary(CommitteeSchema, (await store.getCommittee(c.epoch + 1))!.committee)),
      hex(toBinary(CommitteeSchema, c.nextCommittee!)),
    );
  }
  assert.equal(await store.epochEnd(marks.epoch), undefined);
  assert.equal(await store.getCommittee(marks.epoch + 1), undefined);
}

test("apply is atomic across SIGKILL: every reopened store is a whole prefix of the chain", async (t) => {
  const dir = join(root, "store");
  let previous = 0;
  let killedMidChain = 0;
  let killedMidCall = 0;
  const log: string[] = [];
  /** Calls in flight at each kill so far: their blocks may remain above the watermark. */
  const everInFlight: { first: number; last: number }[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const stretch = Math.floor((TOTAL - previous) / (ROUNDS - round + 2));
    const target = previous + 1 + Math.floor(Math.random() * stretch);
    const child = spawnTs(APPLY_CHILD, [dir, JSON.stringify(OPTIONS)]);
    try {
      await child.waitForLine((l) => l.startsWith("ready"));
      await child.waitForLine((l) => l.startsWith("applied ") && Number(l.slice(8)) >= target);
      await sleep(Math.floor(Math.random() * (MAX_EXTRA_DELAY_MS + 1)));
      child.process.kill("SIGKILL");
    } finally {
      if (child.process.exitCode === null) child.process.kill("SIGKILL");
    }
    const exit = await child.exited;
    const p = progressOf(child);
    assert.equal(p.ready, previous, "the child resumes from the highest synced commit");
    if (!p.done) assert.equal(exit.signal, "SIGKILL", `child stderr:\n${child.stderr()}`);

    const store = await Store.open(dir, { genesis: chain.genesis.bytes });
    try {
      const w = store.watermarks.highestSynced;
      log.push(
        `round ${round}: target ${target}, ready ${p.ready}, acked ${p.acked}, in flight ${JSON.stringify(p.inFlight)}, W ${w}`,
      );
      // Every call that returned is durable; the call in flight is all there or not at all.
      const allowed = [p.acked, ...(p.inFlight === undefined ? [] : [p.inFlight.last])];
      assert.ok(allowed.includes(w), `W = ${w}, expected one of ${allowed.join(", ")}\n${log.join("\n")}`);
      if (p.inFlight !== undefined && p.inFlight.last > p.inFlight.first) killedMidCall++;
      if (w < TOTAL) killedMidChain++;
      if (p.inFlight !== undefined) everInFlight.push(p.inFlight);
      await checkConsistent(store, w, everInFlight);
      previous = w;
    } finally {
      await store.close();
    }
  }
  assert.ok(killedMidChain >= ROUNDS - 1, `kills landed after the chain was complete:\n${log.join("\n")}`);
  assert.ok(previous > 0, `no round applied anything:\n${log.join("\n")}`);
  // For the record (a multi-commit call in flight at the kill is the most telling case).
  for (const line of log) t.diagnostic(line);
  t.diagnostic(`killed during a multi-commit call: ${killedMidCall} of ${ROUNDS}`);

  // A last child runs to the end: the whole chain is there.
  const last = spawnTs(APPLY_CHILD, [dir, JSON.stringify(OPTIONS)]);
  const exit = await last.exited;
  assert.equal(exit.code, 0, `child stderr:\n${last.stderr()}`);
  const p = progressOf(last);
  assert.equal(p.ready, previous);
  assert.ok(p.done);
  assert.ok(last.lines().includes(`done ${TOTAL}`), last.stdout());
  const store = await Store.open(dir, { genesis: chain.genesis.bytes });
  try {
    await checkConsistent(store, TOTAL, []);
    assert.equal(store.watermarks.epoch, OPTIONS.epochs);
  } finally {
    await store.close();
  }
});

test("prune resumes after SIGKILL: nothing below the watermark is served, nothing of it is left", async () => {
  const dir = join(root, "prune");
  const keepFrom = Math.floor(TOTAL / 2);
  const filled = spawnTs(APPLY_CHILD, [dir, JSON.stringify(OPTIONS)]);
  assert.equal((await filled.exited).code, 0, filled.stderr());
  let lowest = 1;
  for (let round = 1; round <= 3; round++) {
    const target = lowest + 1 + Math.floor(Math.random() * ((keepFrom - lowest) / 2));
    const child = spawnTs(APPLY_CHILD, [dir, JSON.stringify(OPTIONS), "prune", String(keepFrom)]);
    try {
      await child.waitForLine((l) => l.startsWith("pruned ") && Number(l.slice(7)) >= target);
      await sleep(Math.floor(Math.random() * (MAX_EXTRA_DELAY_MS + 1)));
      child.process.kill("SIGKILL");
    } finally {
      if (child.process.exitCode === null) child.process.kill("SIGKILL");
    }
    await child.exited;
    const store = await Store.open(dir, { genesis: chain.genesis.bytes });
    try {
      const marks = store.watermarks;
      assert.ok(marks.lowestAvailable >= target, `lowest ${marks.lowestAvailable} below ${target}`);
      assert.equal(marks.highestSynced, TOTAL);
      // Everything from the watermark up is whole.
      for (let i = marks.lowestAvailable; i <= TOTAL; i++) {
        const c = at(i);
        assert.equal(hex(await store.getCommit(i)), hex(c.commitBytes), `commit ${i}`);
        const blocks = await store.getBlocks(c.blocks.map((b) => b.ref));
        assert.ok(
          blocks.every((b) => b !== undefined),
          `blocks of commit ${i} (lowest ${marks.lowestAvailable})`,
        );
      }
      lowest = marks.lowestAvailable;
    } finally {
      await store.close();
    }
  }
  const last = spawnTs(APPLY_CHILD, [dir, JSON.stringify(OPTIONS), "prune", String(keepFrom)]);
  assert.equal((await last.exited).code, 0, last.stderr());
  const store = await Store.open(dir, { genesis: chain.genesis.bytes });
  try {
    assert.equal(store.watermarks.lowestAvailable, keepFrom);
    for (let i = 1; i < keepFrom; i++) {
      const c = at(i);
      assert.equal(await store.getCommit(i), undefined, `commit ${i} pruned`);
      assert.equal(await store.getCertifiers(i), undefined, `certifiers of ${i} pruned`);
      const blocks = await store.getBlocks(c.blocks.map((b) => b.ref));
      assert.ok(
        blocks.every((b) => b === undefined),
        `blocks of commit ${i} pruned`,
      );
    }
    assert.ok((await store.getCommit(keepFrom)) !== undefined);
  } finally {
    await store.close();
  }
});
