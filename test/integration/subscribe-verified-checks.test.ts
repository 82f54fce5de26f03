/**
 * subscribeVerified's own checks, against a tampering peer (test/helpers/tamper-server.ts): a real
 * grpc-js server on loopback that serves a devnet store but alters one thing per test. Every
 * alteration must fail with the typed error and code of the rule it breaks, never be delivered.
 * Also: a busy server (RESOURCE_EXHAUSTED + retry-after-ms) is waited out, within a bound; an
 * abort ends the iteration quietly, but only the cancellation it causes is swallowed; the inner
 * stream is ended when the consumer stops.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { PeerClient, PeerError, subscribeVerified } from "../../src/client/index.js";
import {
  blockSigningMessage,
  parseCommit,
  parseSignedBlock,
  type SignatureVerifier,
  sha256,
  toHex,
  VerifyError,
  type VerifyErrorCode,
} from "../../src/core/index.js";
import { DevnetChain, type GeneratedCommit } from "../../src/devnet/chain.js";
import {
  BlockSchema,
  CommitRefSchema,
  CommitSchema,
  type Committee,
  EndOfEpochSchema,
} from "../../src/gen/dagsync/v1/types_pb.js";
import { WireSignedBlockSchema } from "../../src/gen/dagsync/wire/v1/wire_pb.js";
import type { Store } from "../../src/store/index.js";
import { buildStore, removeDir, tempDir } from "../helpers/server.js";
import {
  type RawSubDag,
  startTamperServer,
  type Tampering,
  type TamperServer,
} from "../helpers/tamper-server.js";

const OPTIONS = { epochs: 2, commitsPerEpoch: 12, txsPerBlock: 1, txBytes: 16 } as const;
const chain = new DevnetChain({ ...OPTIONS, seed: 31 });
/** Another committee's keys on the same chain id: what an attacker holds. */
const foreign = new DevnetChain({ ...OPTIONS, seed: 32, chainId: chain.chainId });
const foreignCommits = [...foreign.commits()];
let commits: GeneratedCommit[];
let TIP: number;
/** The last commit of epoch 0 (its end_of_epoch names epoch 1's committee). */
let EOE: number;
let dir: string;
let store: Store;

/** Index of a raw commit. */
const indexOf = (commit: Uint8Array) => parseCommit(commit).index;

function flip(bytes: Uint8Array, at: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] = (copy[at] ?? 0) ^ 0x5a;
  return copy;
}

/** Certifier blocks signed by `keys`' owners (block epoch `epoch`), each voting for `vote`. */
function forgeVotes(
  keys: readonly { protocol: { sign(m: Uint8Array): Uint8Array } }[],
  epoch: number,
  vote: { index: number; digest: Uint8Array },
): Uint8Array[] {
  return keys.map((k, author) => {
    const block = toBinary(
      BlockSchema,
      create(BlockSchema, {
        epoch: BigInt(epoch),
        round: 1_000_000,
        author,
        timestampMs: 1n,
        commitVotes: [create(CommitRefSchema, { index: BigInt(vote.index), digest: vote.digest })],
      }),
    );
    const signature = k.protocol.sign(blockSigningMessage(chain.chainId, block));
    return toBinary(WireSignedBlockSchema, create(WireSignedBlockSchema, { block, signature }));
  });
}

interface Outcome {
  got: number[];
  error: unknown;
  server: TamperServer;
}

/**
 * Subscribes through a tampering server from `from` (trusting genesis) until `until` (default:
 * the tip, so that an alteration that gets through ends the run without an error) or a failure.
 */
async function run(
  tampering: Tampering,
  from: number,
  options: {
    until?: number;
    signal?: AbortSignal;
    maxBusyRetries?: number;
    verifier?: SignatureVerifier;
  } = {},
): Promise<Outcome> {
  const server = await startTamperServer(store, tampering);
  const got: number[] = [];
  const until = options.until ?? TIP;
  try {
    const it = subscribeVerified(server.address, from, {
      genesis: chain.genesis.bytes,
      certifyAttempts: 1,
      signal: options.signal ?? AbortSignal.timeout(20_000),
      ...(options.maxBusyRetries === undefined ? {} : { maxBusyRetries: options.maxBusyRetries }),
      ...(options.verifier === undefined ? {} : { verifier: options.verifier }),
    });
    for await (const s of it) {
      got.push(Number(s.commit?.index));
      if (got.at(-1)! >= until) break;
    }
    return { got, error: undefined, server };
  } catch (error) {
    return { got, error, server };
  } finally {
    await server.stop();
  }
}

function assertVerifyError(outcome: Outcome, code: VerifyErrorCode, got: number[]) {
  assert.ok(outcome.server.stats.altered > 0, "the tampering was served");
  assert.ok(
    outcome.error instanceof VerifyError,
    `expected VerifyError ${code}, got ${String(outcome.error)}`,
  );
  assert.equal(outcome.error.code, code, outcome.error.message);
  assert.deepEqual(outcome.got, got, "only the sub-DAGs before the altered one are delivered");
}

/** Alters the streamed sub-DAG of commit `at` only. */
const atCommit =
  (at: number, alter: (m: RawSubDag) => RawSubDag | undefined) =>
  (m: RawSubDag): RawSubDag | undefined =>
    indexOf(m.commit) === at ? alter(m) : m;

describe("subscribeVerified against a tampering peer", () => {
  before(async () => {
    dir = await tempDir();
    const built = await buildStore(join(dir, "store"), chain);
    store = built.store;
    commits = built.commits;
    TIP = commits.length;
    EOE = commits.find((c) => c.nextCommittee !== undefined)!.index;
    assert.ok(EOE > 2 && EOE < TIP, "the chain has an epoch change in the middle");
  });
  after(async () => {
    await store?.close();
    await removeDir(dir);
  });

  test("an honest peer: every commit, across the epoch change", async () => {
    const r = await run({}, 1);
    assert.equal(r.error, undefined, String(r.error));
    assert.deepEqual(
      r.got,
      commits.map((c) => c.index),
    );
  });

  describe("the stream", () => {
    test("a streamed commit that differs from the certified one: missing_quorum", async () => {
      const r = await run(
        {
          subDag: atCommit(7, (m) => {
            const commit = fromBinary(CommitSchema, m.commit);
            commit.timestampMs += 1n;
            return { ...m, commit: toBinary(CommitSchema, commit) };
          }),
        },
        5,
      );
      assertVerifyError(r, "missing_quorum", [5, 6]);
    });

    test("the first streamed commit altered: missing_quorum", async () => {
      const r = await run(
        {
          subDag: atCommit(5, (m) => {
            const commit = fromBinary(CommitSchema, m.commit);
            commit.timestampMs += 1n;
            return { ...m, commit: toBinary(CommitSchema, commit) };
          }),
        },
        5,
      );
      assertVerifyError(r, "missing_quorum", []);
    });

    test("a block missing from a sub-DAG: malformed", async () => {
      const r = await run({ subDag: atCommit(7, (m) => ({ ...m, blocks: m.blocks.slice(0, -1) })) }, 5);
      assertVerifyError(r, "malformed", [5, 6]);
    });

    test("a block too many in a sub-DAG: malformed", async () => {
      const r = await run({ subDag: atCommit(7, (m) => ({ ...m, blocks: [...m.blocks, m.blocks[0]!] })) }, 5);
      assertVerifyError(r, "malformed", [5, 6]);
    });

    test("a block whose digest is not its ref's: digest_mismatch", async () => {
      const r = await run(
        {
          subDag: atCommit(7, (m) => ({
            ...m,
            blocks: m.blocks.map((b, i) =>
              i === m.blocks.length - 1 ? flip(b, Math.floor(b.length / 2)) : b,
            ),
          })),
        },
        5,
      );
      assertVerifyError(r, "digest_mismatch", [5, 6]);
    });

    test("a sub-DAG's blocks out of ref order: digest_mismatch", async () => {
      const at = commits.find((c) => c.index > 5 && c.blocks.length > 1)!.index;
      const r = await run({ subDag: atCommit(at, (m) => ({ ...m, blocks: [...m.blocks].reverse() })) }, 5);
      assertVerifyError(
        r,
        "digest_mismatch",
        Array.from({ length: at - 5 }, (_, k) => 5 + k),
      );
    });

    test("a stream that starts past the commit asked for: gap", async () => {
      const r = await run({ subDag: (m, n) => (n === 0 ? undefined : m) }, 5);
      assertVerifyError(r, "gap", []);
    });

    test("a stream that skips a commit: gap", async () => {
      const r = await run({ subDag: atCommit(7, () => undefined) }, 5);
      assertVerifyError(r, "gap", [5, 6]);
    });
  });

  describe("the certifier quorum (FetchCommits)", () => {
    test("a certifier block with a bad signature: bad_signature", async () => {
      const r = await run(
        {
          fetchCommits: (res) => {
            const first = res.certifierBlocks[0]!;
            res.certifierBlocks[0] = flip(first, first.length - 1);
          },
        },
        5,
      );
      assertVerifyError(r, "bad_signature", []);
    });

    test("certifier blocks from too few authors: missing_quorum", async () => {
      const r = await run(
        {
          fetchCommits: async (res) => {
            const committee = (await store.getCommittee(parseCommit(res.commits[0]!).epoch))!;
            const kept: Uint8Array[] = [];
            let stake = 0;
            for (const b of res.certifierBlocks) {
              const s = committee.stakeOf(parseSignedBlock(b).author) ?? 0;
              if (committee.isQuorum(stake + s)) continue;
              kept.push(b);
              stake += s;
            }
            res.certifierBlocks = kept;
          },
        },
        5,
      );
      assertVerifyError(r, "missing_quorum", []);
    });

    test("one author's certifier block counted several times: duplicate_voter", async () => {
      const r = await run(
        { fetchCommits: (res) => void res.certifierBlocks.fill(res.certifierBlocks[0]!) },
        5,
      );
      assertVerifyError(r, "duplicate_voter", []);
    });

    test("a quorum of votes signed by keys outside the committee: bad_signature", async () => {
      const keys = foreign.keysByEpoch.get(0)!;
      const r = await run(
        {
          fetchCommits: (res) => {
            const last = parseCommit(res.commits.at(-1)!);
            res.certifierBlocks = forgeVotes(keys, last.epoch, last);
          },
        },
        5,
      );
      assertVerifyError(r, "bad_signature", []);
    });

    test("a committee change taken from an uncertified end-of-epoch: refused (missing_quorum)", async () => {
      // The attacker rewrites the end-of-epoch commit to hand epoch 1 to its own committee, and
      // serves a whole epoch 1 re-linked to it and certified by that committee, on FetchCommits
      // and on the stream alike. Its only flaw: no quorum of epoch 0 ever voted for the rewrite
      // (the certifier blocks served with it are the genuine ones of the commit before it).
      const forgedCommittee: Committee = foreignCommits.find((c) => c.nextCommittee !== undefined)!
        .nextCommittee!;
      const forgedKeys = foreign.keysByEpoch.get(1)!;
      const forged = new Map<number, { bytes: Uint8Array; digest: Uint8Array }>();
      let previous: Uint8Array | undefined;
      for (const c of commits.slice(EOE - 1)) {
        const commit = fromBinary(CommitSchema, c.commitBytes);
        if (c.index === EOE) commit.endOfEpoch = create(EndOfEpochSchema, { nextCommittee: forgedCommittee });
        else commit.previousDigest = previous!;
        const bytes = toBinary(CommitSchema, commit);
        previous = sha256(bytes);
        forged.set(c.index, { bytes, digest: previous });
      }
      const genuineBefore = (await store.getCertifiers(EOE - 1))!;
      assert.ok(genuineBefore !== undefined, `the store holds the certifiers of ${EOE - 1}`);
      const r = await run(
        {
          fetchCommits: (res) => {
            res.commits = res.commits.map((c) => forged.get(indexOf(c))?.bytes ?? c);
            const last = parseCommit(res.commits.at(-1)!);
            if (last.index === EOE) res.certifierBlocks = genuineBefore;
            else if (last.index > EOE) res.certifierBlocks = forgeVotes(forgedKeys, 1, last);
          },
          subDag: (m) => ({ ...m, commit: forged.get(indexOf(m.commit))?.bytes ?? m.commit }),
        },
        EOE + 1,
      );
      assertVerifyError(r, "missing_quorum", []);
      // The rewritten end-of-epoch commit is the one no quorum votes for.
      assert.match(
        (r.error as Error).message,
        new RegExp(`votes for commit ${EOE} ${toHex(forged.get(EOE)!.digest).slice(0, 8)}`),
      );
    });
  });

  describe("a busy peer", () => {
    test("busy FetchCommits answers are waited out (retry-after-ms), then the stream verifies", async () => {
      const r = await run({ busyFetches: 3, retryAfterMs: 40 }, 5, { until: 9 });
      assert.equal(r.error, undefined, String(r.error));
      assert.deepEqual(r.got, [5, 6, 7, 8, 9]);
      assert.equal(r.server.stats.busy, 3);
    });

    test("a busy answer to the stream's opening is waited out too", async () => {
      const r = await run({ busySubscribes: 2, retryAfterMs: 40 }, 5, { until: 9 });
      assert.equal(r.error, undefined, String(r.error));
      assert.deepEqual(r.got, [5, 6, 7, 8, 9]);
      assert.equal(r.server.stats.busy, 2);
    });

    test("more busy answers in a row than maxBusyRetries: a PeerError rate_limited", async () => {
      const r = await run({ busyFetches: 100, retryAfterMs: 10 }, 5, { maxBusyRetries: 2 });
      assert.ok(r.error instanceof PeerError, String(r.error));
      assert.equal(r.error.kind, "rate_limited");
      assert.equal(r.error.retryAfterMs, 10);
      assert.equal(r.server.stats.fetchCommits, 3, "the first try and 2 retries");
      assert.deepEqual(r.got, []);
    });

    test("an abort during a busy wait ends the iteration at once and quietly", async () => {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 300);
      const t0 = Date.now();
      const r = await run({ busyFetches: 100, retryAfterMs: 10_000 }, 5, { signal: ac.signal });
      assert.equal(r.error, undefined, String(r.error));
      assert.deepEqual(r.got, []);
      assert.ok(Date.now() - t0 < 3_000, `ended ${Date.now() - t0} ms after it started`);
      assert.equal(r.server.stats.busy, 1);
    });
  });

  describe("ending", () => {
    test("a VerifyError found as the signal aborts is thrown, not swallowed as the abort", async () => {
      const ac = new AbortController();
      // The certifier check fails at the very moment the caller aborts.
      const verifier: SignatureVerifier = {
        name: "aborts-then-refuses",
        verify() {
          ac.abort();
          return false;
        },
      };
      const r = await run({}, 1, { signal: ac.signal, verifier });
      assert.ok(r.error instanceof VerifyError, `expected a VerifyError, got ${String(r.error)}`);
      assert.equal(r.error.code, "bad_signature");
    });

    test("the caller's abort while a verified stream follows the tip ends it quietly", async () => {
      const ac = new AbortController();
      const server = await startTamperServer(store, {});
      try {
        const it = subscribeVerified(server.address, TIP + 1, {
          checkpoint: {
            chainId: chain.chainId,
            index: TIP,
            digest: commits.at(-1)!.commitDigest,
            committee: (await store.getCommittee(commits.at(-1)!.epoch))!.committee,
          },
          signal: ac.signal,
        });
        const next = it.next();
        setTimeout(() => ac.abort(new Error("the caller's own reason")), 300);
        assert.deepEqual(await next, { done: true, value: undefined });
      } finally {
        await server.stop();
      }
    });

    test("stopping the consumer ends the inner SubscribeCommits stream (return), not only the connection", async () => {
      const original = PeerClient.prototype.subscribeCommits;
      let returned = 0;
      PeerClient.prototype.subscribeCommits = async function* (this: PeerClient, start, signal) {
        try {
          yield* original.call(this, start, signal);
        } finally {
          returned++;
        }
      };
      try {
        const r = await run({}, 5, { until: 6 });
        assert.equal(r.error, undefined, String(r.error));
        assert.deepEqual(r.got, [5, 6]);
        assert.equal(returned, 1, "the stream's generator was ended");
      } finally {
        PeerClient.prototype.subscribeCommits = original;
      }
    });
  });
});
