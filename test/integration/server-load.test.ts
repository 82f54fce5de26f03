/**
 * Load: 64 concurrent clients, each on its own HTTP/2 connection, fetch and verify a whole devnet
 * chain (commits and blocks) from one `dagsync serve` process.
 *
 * All clients share one remote IP, so the server's per-peer limits (GCRA quotas, 32 requests in
 * flight) refuse many calls: every call must either succeed or be RESOURCE_EXHAUSTED with a retry
 * hint, clients that honour the hint must all finish with the right digests, and the server's
 * resident memory must stay bounded (sampled with `ps` during the load).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer } from "node:net";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { PeerClient, PeerError } from "../../src/client/index.js";
import {
  type CommitteeView,
  parseCommit,
  sha256,
  toHex,
  verifyBlocksAgainstRefs,
  verifyCommitBatch,
} from "../../src/core/index.js";
import { NativeVerifier } from "../../src/crypto/index.js";
import type { BlockRef } from "../../src/gen/dagsync/v1/types_pb.js";
import { Store } from "../../src/store/index.js";
import { type Child, spawnNode } from "../fixtures/child-process.js";
import { type DevnetFixture, makeDevnet } from "../helpers/server.js";

const CLIENTS = 64;
const EPOCHS = 3;
const COMMITS_PER_EPOCH = 100;
const HIGHEST = EPOCHS * COMMITS_PER_EPOCH;
/** The bound on the server's peak resident set size during the load. */
const RSS_BOUND_MB = 400;
/** Deadline of each call: generous, so that a slow CI machine does not turn into deadline errors. */
const CALL_TIMEOUT_MS = 30_000;

const sh = promisify(execFile);

let fx: DevnetFixture;
let reference: Store;
let child: Child | undefined;
let address: string;
let metricsUrl: string;

/** A port that was free a moment ago (the CLI does not report the port it bound). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (typeof a === "object" && a !== null ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

async function rssKb(pid: number): Promise<number> {
  const { stdout } = await sh("ps", ["-o", "rss=", "-p", String(pid)]);
  const kb = Number(stdout.trim());
  if (!Number.isFinite(kb) || kb <= 0) throw new Error(`ps gave no RSS for ${pid}: "${stdout}"`);
  return kb;
}

before(async () => {
  fx = await makeDevnet({
    epochs: EPOCHS,
    commitsPerEpoch: COMMITS_PER_EPOCH,
    txsPerBlock: 8,
    txBytes: 256,
    seed: 31,
  });
  // The served store is validator-0's; validator-1's identical copy is the reference here.
  reference = await Store.open(fx.storePath(1));
  const port = await freePort();
  const metricsPort = await freePort();
  address = `127.0.0.1:${port}`;
  metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  child = spawnNode("bin/dagsync.js", [
    "serve",
    "--store",
    fx.storePath(0),
    "--listen",
    address,
    "--metrics",
    `127.0.0.1:${metricsPort}`,
  ]);
  // Ready once it answers.
  const probe = new PeerClient(address);
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const a = await probe.getCommitAvailability({ timeoutMs: 1_000 });
        assert.equal(a.highest, HIGHEST);
        break;
      } catch (e) {
        if (child.process.exitCode !== null || Date.now() > deadline)
          throw new Error(`dagsync serve did not come up: ${String(e)}\nstderr:\n${child.stderr()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    probe.close();
  }
});

after(async () => {
  if (child !== undefined && child.process.exitCode === null && child.process.signalCode === null) {
    child.process.kill("SIGTERM");
    const timer = setTimeout(() => child?.process.kill("SIGKILL"), 10_000);
    await child.exited;
    clearTimeout(timer);
  }
  await reference?.close();
  await fx?.remove();
});

interface Tally {
  calls: number;
  rateLimited: number;
  rateLimitedWithoutHint: number;
  other: string[];
}

/** Runs `call`, waiting out RESOURCE_EXHAUSTED with the server's hint (plus jitter); anything else is fatal. */
async function withRetry<T>(tally: Tally, call: () => Promise<T>): Promise<T> {
  for (;;) {
    tally.calls++;
    try {
      return await call();
    } catch (e) {
      if (e instanceof PeerError && e.kind === "rate_limited") {
        tally.rateLimited++;
        if (e.retryAfterMs === undefined) tally.rateLimitedWithoutHint++;
        await new Promise((r) => setTimeout(r, (e.retryAfterMs ?? 50) + Math.random() * 50));
        continue;
      }
      tally.other.push(e instanceof Error ? e.message : String(e));
      throw e;
    }
  }
}

/** One client: the whole chain, verified batch by batch, blocks checked against certified refs. */
async function syncWholeChain(
  client: PeerClient,
  committees: Map<number, CommitteeView>,
  chainId: string,
  genesisDigest: Uint8Array,
  tally: Tally,
): Promise<{ commitDigests: string[]; blockDigests: string[] }> {
  const verifier = new NativeVerifier();
  const commitDigests: string[] = [];
  const blockDigests: string[] = [];
  let next = 1;
  let previous = genesisDigest;
  while (next <= HIGHEST) {
    const start = next;
    const res = await withRetry(tally, () =>
      client.fetchCommits(start, HIGHEST, { timeoutMs: CALL_TIMEOUT_MS }),
    );
    const epoch = parseCommit(res.commits[0]!).epoch;
    const committee = committees.get(epoch);
    assert.ok(committee !== undefined, `no committee for epoch ${epoch}`);
    const batch = verifyCommitBatch({
      commits: res.commits,
      certifierBlocks: res.certifierBlocks,
      expectedStart: start,
      previousDigest: previous,
      committee,
      chainId,
      verifier,
    });
    assert.equal(batch.error, undefined, batch.error?.message);
    assert.equal(batch.commits.length, res.commits.length);
    const refs: BlockRef[] = [];
    for (const c of batch.commits) {
      commitDigests.push(toHex(c.digest));
      refs.push(...c.commit.blocks);
    }
    // Blocks in chunks of ≤ 1000 refs; a response may be a prefix: ask again for the rest.
    let i = 0;
    while (i < refs.length) {
      const chunk = refs.slice(i, i + 1000);
      const got = await withRetry(tally, () => client.fetchBlocks(chunk, { timeoutMs: CALL_TIMEOUT_MS }));
      const checked = verifyBlocksAgainstRefs(chunk, got.blocks);
      assert.equal(checked.error, undefined, checked.error?.message);
      assert.ok(checked.blocks.length > 0, "an empty FetchBlocks response");
      for (const b of checked.blocks) blockDigests.push(toHex(sha256(b)));
      i += checked.blocks.length;
    }
    const last = batch.commits.at(-1)!;
    previous = last.digest;
    next = last.index + 1;
  }
  return { commitDigests, blockDigests };
}

/** The sum of a Prometheus counter's samples whose labels match `labels`. */
function counterSum(text: string, name: string, labels: RegExp): number {
  let sum = 0;
  for (const line of text.split("\n"))
    if (line.startsWith(`${name}{`) && labels.test(line))
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  return sum;
}

test(`${CLIENTS} concurrent clients fetch the whole chain; only RESOURCE_EXHAUSTED; bounded server memory`, async (t) => {
  const pid = child?.process.pid;
  assert.ok(pid !== undefined);

  // What the clients must end up with.
  const committees = new Map<number, CommitteeView>();
  for (let e = 0; e < EPOCHS; e++) committees.set(e, (await reference.getCommittee(e))!);
  const expectedCommits = (await reference.getCommits(1, HIGHEST)).map((c) => toHex(sha256(c)));
  const expectedBlocks: string[] = [];
  for (const c of await reference.getCommits(1, HIGHEST))
    for (const ref of parseCommit(c).commit.blocks) expectedBlocks.push(toHex(ref.digest));
  assert.equal(expectedCommits.length, HIGHEST);

  const baselineKb = await rssKb(pid);
  let peakKb = baselineKb;
  let samples = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      try {
        peakKb = Math.max(peakKb, await rssKb(pid));
        samples++;
      } catch {
        // the process is gone: the assertions below will say so
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();

  const clients = Array.from({ length: CLIENTS }, () => new PeerClient(address));
  const tallies = clients.map(
    () => ({ calls: 0, rateLimited: 0, rateLimitedWithoutHint: 0, other: [] }) as Tally,
  );
  const started = performance.now();
  let results: PromiseSettledResult<{ commitDigests: string[]; blockDigests: string[] }>[];
  try {
    results = await Promise.allSettled(
      clients.map((c, i) =>
        syncWholeChain(
          c,
          committees,
          reference.genesis.genesis.chainId,
          reference.genesis.digest,
          tallies[i]!,
        ),
      ),
    );
  } finally {
    sampling = false;
    await sampler;
    for (const c of clients) c.close();
  }
  const seconds = (performance.now() - started) / 1000;

  const total = tallies.reduce(
    (s, x) => ({
      calls: s.calls + x.calls,
      rateLimited: s.rateLimited + x.rateLimited,
      rateLimitedWithoutHint: s.rateLimitedWithoutHint + x.rateLimitedWithoutHint,
      other: [...s.other, ...x.other],
    }),
    { calls: 0, rateLimited: 0, rateLimitedWithoutHint: 0, other: [] } as Tally,
  );
  const metrics = await (await fetch(metricsUrl)).text();
  const serverRefused = counterSum(
    metrics,
    "dagsync_server_rate_limited_total",
    /method="Fetch(Commits|Blocks)"/,
  );
  const blockBytes = fx.summary.blockBytes;
  const summary =
    `${CLIENTS} clients × ${HIGHEST} commits, ${expectedBlocks.length} blocks (${(blockBytes / 1e6).toFixed(1)} MB) ` +
    `in ${seconds.toFixed(1)} s (${((CLIENTS * blockBytes) / 1e6 / seconds).toFixed(0)} MB/s of blocks); ` +
    `${total.calls} calls, ${total.rateLimited} RESOURCE_EXHAUSTED (server counted ${serverRefused}); ` +
    `server RSS baseline ${(baselineKb / 1024).toFixed(0)} MB, peak ${(peakKb / 1024).toFixed(0)} MB ` +
    `over ${samples} samples (bound ${RSS_BOUND_MB} MB)`;
  t.diagnostic(summary);
  console.log(`# load: ${summary}`);

  assert.deepEqual(total.other, [], "calls failed with something other than RESOURCE_EXHAUSTED");
  for (const [i, r] of results.entries()) {
    assert.equal(r.status, "fulfilled", `client ${i}: ${r.status === "rejected" ? String(r.reason) : ""}`);
    if (r.status !== "fulfilled") continue;
    assert.deepEqual(r.value.commitDigests, expectedCommits, `client ${i}: commit digests`);
    assert.deepEqual(r.value.blockDigests, expectedBlocks, `client ${i}: block digests`);
  }
  assert.equal(total.rateLimitedWithoutHint, 0, "every RESOURCE_EXHAUSTED carries retry-after-ms");
  assert.equal(serverRefused, total.rateLimited, "the server's count of refusals matches what clients saw");
  assert.ok(samples >= 3, `only ${samples} RSS samples`);
  assert.ok(
    peakKb / 1024 < RSS_BOUND_MB,
    `server peak RSS ${(peakKb / 1024).toFixed(0)} MB ≥ ${RSS_BOUND_MB} MB`,
  );
  assert.equal(child?.process.exitCode, null, `the server exited:\n${child?.stderr()}`);
});
