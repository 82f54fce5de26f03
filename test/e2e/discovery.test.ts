/**
 * Discovery with real processes (issue 13, DESIGN.md §9). One devnet whose committee moves: the
 * validator that rotates its keys at each epoch change also moves to new ports (`--move-rotated`),
 * so three of genesis's four sync addresses are dead by the tip, and the validators serve where
 * the last committee says. Every node is a `dagsync` child process:
 *
 * - F0, given genesis and nothing else, follows the committee across its epoch changes: it ends
 *   with the tip and exactly the last committee's addresses as committee peers, the departed ones
 *   gone.
 * - F1, given one bootstrap address (F0, a full node), finds every validator and syncs.
 * - A liar answers GetKnownPeers with bad entries (bad signature, 31 s ahead, 25 h old, a 300-byte
 *   address, the node's own key) in an answer of 500: each is ignored and counted by reason, the
 *   node syncs anyway; a client flooding the node's GetKnownPeers is rate-limited.
 * - With every validator stopped: F2, given only a pruned node P, learns F0 from P's answer and
 *   syncs the whole chain from F0 alone; F3, whose committee is all dead addresses, syncs from its
 *   one live bootstrap peer; F1 restarted with no --peer at all still knows F0 from its store.
 */
import assert from "node:assert/strict";
import { cp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { PeerClient, PeerError } from "../../src/client/index.js";
import { Ed25519Signer, signNodeInfo, writeKeyFile } from "../../src/crypto/index.js";
import { validatorAddresses } from "../../src/devnet/chain.js";
import type { GetStatusResponse, PeerStatus } from "../../src/gen/dagsync/v1/admin_pb.js";
import { Store } from "../../src/store/index.js";
import { Adversary } from "../helpers/adversary.js";
import {
  freePort,
  logRecords,
  metricSum,
  type Proc,
  ProcGroup,
  scrapeMetrics,
  startWithMetrics,
  waitServing,
  waitUntil,
} from "../helpers/e2e-process.js";
import { type DevnetFixture, makeDevnet, removeDir, tempDir } from "../helpers/server.js";

const HOST = "127.0.0.61";
const DEVNET = { validators: 4, epochs: 3, commitsPerEpoch: 40, txsPerBlock: 2, txBytes: 64, seed: 61 };

const group = new ProcGroup();
let root: string;
let devnet: DevnetFixture;
let commits: number;
/** A pruned copy of validator 0's store, made before anything served it. */
let prunedStore: string;
const validators: Proc[] = [];

interface Node {
  readonly proc: Proc;
  readonly listen: string;
  readonly metrics: string;
  readonly store: string;
}

function keySeed(n: number): Uint8Array {
  const seed = new Uint8Array(32);
  new DataView(seed.buffer).setUint32(0, 0x6100 + n);
  return seed;
}

async function keyFile(name: string, n: number): Promise<{ file: string; signer: Ed25519Signer }> {
  const signer = new Ed25519Signer(keySeed(n));
  const file = join(root, `${name}.key`);
  await writeKeyFile(file, signer);
  return { file, signer };
}

/** `dagsync sync` serving on free ports with its own network key (so it advertises itself). */
async function startFullNode(
  name: string,
  keyIndex: number,
  extra: readonly string[],
  store?: string,
): Promise<Node> {
  const { file } = await keyFile(name, keyIndex);
  const dir = store ?? join(root, name);
  const node = await startWithMetrics(group, name, (listen, metrics) => [
    "sync",
    "--store",
    dir,
    "--genesis",
    devnet.summary.genesisFile,
    "--network-key",
    file,
    "--listen",
    listen,
    "--metrics",
    metrics,
    ...extra,
  ]);
  return { ...node, store: dir };
}

async function status(address: string): Promise<GetStatusResponse> {
  const c = new PeerClient(address);
  try {
    return await c.getStatus();
  } finally {
    c.close();
  }
}

async function waitSynced(node: Node, timeoutMs = 60_000): Promise<GetStatusResponse> {
  let last: GetStatusResponse | undefined;
  try {
    return await waitUntil(
      async () => {
        last = await status(node.listen);
        return Number(last.highestSyncedCommit) === commits ? last : undefined;
      },
      `${node.proc.name} to sync ${commits} commits`,
      timeoutMs,
      200,
    );
  } catch (e) {
    throw new Error(`${String(e)}\nlast status: ${describePeers(last)}\n${node.proc.output().slice(-4000)}`);
  }
}

const describePeers = (s: GetStatusResponse | undefined) =>
  s === undefined
    ? "none"
    : `synced ${s.highestSyncedCommit}; ${s.peers.map((p) => `${p.address}(${p.source}${p.working ? ",working" : ""})`).join(" ")}`;

const bySource = (s: GetStatusResponse, source: string) =>
  s.peers
    .filter((p: PeerStatus) => p.source === source)
    .map((p) => p.address)
    .sort();

const finalAddresses = () => devnet.summary.validators.map((v) => v.syncAddress).sort();
const genesisAddresses = () =>
  devnet.summary.validators
    .map((_, i) => validatorAddresses(devnet.summary.options, 0, i).syncAddress)
    .sort();

before(async () => {
  root = await tempDir("dagsync-e2e-discovery-");
  // Validators serve on fixed ports (the committee's); a host of their own keeps them apart.
  const basePort = 2 * Math.floor((await freePort()) / 2);
  devnet = await makeDevnet({
    ...DEVNET,
    host: HOST,
    basePort: Math.min(basePort, 65_000),
    moveRotated: true,
  });
  commits = devnet.summary.commits;
  prunedStore = join(root, "pruned");
  await cp(devnet.storePath(0), prunedStore, { recursive: true });
  const prune = group.cli("prune", ["prune", "--store", prunedStore, "--keep-from", String(commits - 10)]);
  assert.equal((await prune.wait(30_000)).code, 0, prune.output());
  for (const v of devnet.summary.validators) {
    const proc = group.cli(`validator-${v.index}`, [
      "serve",
      "--store",
      v.store,
      "--listen",
      v.syncAddress,
      "--network-key",
      v.networkKeyFile,
    ]);
    validators.push(proc);
  }
  await Promise.all(devnet.summary.validators.map((v, i) => waitServing(v.syncAddress, validators[i])));
});

after(async () => {
  await group.stopAll(2_000);
  await Promise.all([devnet?.remove(), root && removeDir(root)]);
});

describe("discovery across real processes", () => {
  let f0: Node;
  let f1: Node;

  test("the devnet's committee moved: three of genesis's addresses are not the tip's", () => {
    const moved = genesisAddresses().filter((a) => !finalAddresses().includes(a));
    assert.equal(moved.length, 3, `genesis ${genesisAddresses()} vs tip ${finalAddresses()}`);
  });

  test("with genesis alone, a full node follows the committee across epoch changes and syncs", async () => {
    f0 = await startFullNode("f0", 0, []);
    const s = await waitSynced(f0);
    // The departed addresses leave at the epoch change and the incoming ones join; eventually the
    // committee source is exactly the tip's committee.
    const last = await waitUntil(
      async () => {
        const st = await status(f0.listen);
        return bySource(st, "committee").join() === finalAddresses().join() ? st : undefined;
      },
      "F0's committee peers to be the tip's committee",
      10_000,
    ).catch((e: unknown) => {
      throw new Error(`${String(e)}: ${describePeers(s)}`);
    });
    const listed = last.peers.map((p) => p.address);
    for (const gone of genesisAddresses().filter((a) => !finalAddresses().includes(a)))
      assert.ok(!listed.includes(gone), `departed ${gone} still listed: ${describePeers(last)}`);
    assert.equal(bySource(last, "bootstrap").length, 0, "no --peer, no bootstrap peers");
    const m = await scrapeMetrics(f0.metrics);
    assert.equal(metricSum(m, "dagsync_sync_known_peers", { source: "committee" }), 4);
    assert.match(f0.proc.stderr(), /committee changed: peers follow the new committee/);
  });

  test("given one bootstrap address (a full node), a full node finds every validator and syncs", async () => {
    f1 = await startFullNode("f1", 1, ["--peer", f0.listen]);
    await waitSynced(f1);
    const s = await waitUntil(
      async () => {
        const st = await status(f1.listen);
        const working = st.peers.filter((p) => p.working).map((p) => p.address);
        return finalAddresses().every((a) => working.includes(a)) ? st : undefined;
      },
      "F1 to work with every validator",
      15_000,
    );
    assert.deepEqual(bySource(s, "bootstrap"), [f0.listen]);
    assert.deepEqual(bySource(s, "committee"), finalAddresses());
    // Operators see the same: `dagsync status` lists each peer with its source, and the progress
    // line (logged every 5 s off a terminal) counts working/known peers by source.
    const cli = group.cli("status", ["status", f1.listen]);
    assert.equal((await cli.wait(20_000)).code, 0, cli.output());
    const lines = cli.stderr().split("\n");
    for (const a of finalAddresses())
      assert.ok(
        lines.some((l) => l.startsWith(`peer ${a} `) && /source=committee\s+working/.test(l)),
        `${a} listed as a working committee peer:\n${cli.stderr()}`,
      );
    assert.ok(lines.some((l) => l.startsWith(`peer ${f0.listen} `) && l.includes("source=bootstrap")));
    await waitUntil(
      () =>
        logRecords(f1.proc.stderr()).some((r) => {
          const by = r.peersBySource as Record<string, string> | undefined;
          return by?.committee === "4/4" && by.bootstrap === "1/1";
        }),
      "a progress line with peers by source",
      12_000,
    );
    // F0 learned F1 as a caller of GetKnownPeers and relays it: F1 is findable.
    const c = new PeerClient(f0.listen);
    try {
      const known = await waitUntil(
        async () => {
          const a = await c.getKnownPeers();
          return a.peers.length > 0 ? a : undefined;
        },
        "F0 to relay a peer",
        15_000,
      );
      assert.ok(known.self !== undefined, "F0 advertises itself (it has --listen and --network-key)");
    } finally {
      c.close();
    }
  });

  describe("bad peer info", () => {
    let liar: Adversary;
    let liarStore: Store;
    let node: Node;

    before(async () => {
      const nodeKey = new Ed25519Signer(keySeed(10));
      const chainId = devnet.summary.chainId;
      const closedPort = await freePort();
      const signer = (n: number) => new Ed25519Signer(keySeed(n));
      const good = Array.from({ length: 495 }, (_, i) =>
        signNodeInfo(signer(1000 + i), chainId, {
          // Nothing listens there: the node may dial these, and fails fast, on this machine.
          syncAddress: `127.0.0.62:${closedPort}`,
          timestampMs: Date.now() - i,
        }),
      );
      // Signed as each answer is sent, so that "31 s ahead" is 31 s ahead when it arrives.
      const bad = (now: number) => {
        const badSignature = signNodeInfo(signer(2000), chainId, {
          syncAddress: "127.0.0.63:4",
          timestampMs: now,
        });
        badSignature[badSignature.length - 1]! ^= 1;
        return [
          badSignature,
          signNodeInfo(signer(2001), chainId, { syncAddress: "127.0.0.63:1", timestampMs: now + 31_000 }),
          signNodeInfo(signer(2002), chainId, {
            syncAddress: "127.0.0.63:2",
            timestampMs: now - 25 * 3_600_000,
          }),
          signNodeInfo(signer(2003), chainId, { syncAddress: `${"a".repeat(295)}:9100`, timestampMs: now }),
          signNodeInfo(nodeKey, chainId, { syncAddress: "127.0.0.63:3", timestampMs: now }),
        ];
      };
      liarStore = await Store.open(join(root, "liar-store"), {
        genesis: await readFile(devnet.summary.genesisFile),
      });
      // An honest server answers at most 200 entries: the liar is a raw one, answering 500.
      liar = new Adversary({
        store: liarStore,
        corruption: "none",
        knownPeers: () => [...bad(Date.now()), ...good],
      });
      await liar.start();
      node = await startFullNode("victim", 10, ["--peer", liar.address]);
    });
    after(async () => {
      await node?.proc.stop(2_000);
      await liar?.stop();
      await liarStore?.close();
    });

    test("each bad entry is ignored and counted by reason, and the node syncs anyway", async () => {
      await waitSynced(node);
      const m = await waitUntil(
        async () => {
          const text = await scrapeMetrics(node.metrics);
          return metricSum(text, "dagsync_discovery_rejected_entries_total", { reason: "over_limit" }) >= 300
            ? text
            : undefined;
        },
        "the liar's answer to be read",
        15_000,
      );
      for (const reason of ["bad_signature", "future_timestamp", "stale_timestamp", "bad_address", "own_key"])
        assert.ok(
          metricSum(m, "dagsync_discovery_rejected_entries_total", { reason }) >= 1,
          `${reason} counted`,
        );
      // 200 read of 500: the 5 bad ones refused, the 195 good ones known, the rest never read
      // (beside them, the few honest nodes of this test that advertise: F0, F1, validators).
      const exchanged = metricSum(m, "dagsync_discovery_known_peers", { source: "exchange" });
      assert.ok(exchanged >= 195 && exchanged <= 195 + 10, `${exchanged} exchange peers known`);
      assert.equal(metricSum(m, "dagsync_peer_bans_total"), 0, "nobody banned for peer info");
      assert.ok(liar.stats.calls.GetKnownPeers >= 1);
      assert.equal(node.proc.exit, undefined, "still running");
      const s = await status(node.listen);
      const listed = s.peers.map((p) => p.address);
      for (const a of ["127.0.0.63:1", "127.0.0.63:2", "127.0.0.63:3", "127.0.0.63:4"])
        assert.ok(!listed.includes(a), `${a} (a rejected entry) is not a peer`);
    });

    test("a client flooding GetKnownPeers on a full node is rate-limited", async () => {
      const c = new PeerClient(node.listen);
      try {
        const outcomes = await Promise.all(
          Array.from({ length: 30 }, () =>
            c.getKnownPeers().then(
              () => "ok" as const,
              (e: unknown) => e,
            ),
          ),
        );
        const refused = outcomes.filter((o) => o instanceof PeerError && o.kind === "rate_limited");
        assert.ok(refused.length >= 20, `${refused.length} of 30 refused`);
        assert.ok(
          outcomes.some((o) => o === "ok"),
          "the first calls are answered",
        );
        const m = await scrapeMetrics(node.metrics);
        assert.ok(metricSum(m, "dagsync_server_rate_limited_total", { method: "GetKnownPeers" }) >= 20);
      } finally {
        c.close();
      }
    });
  });

  describe("with every validator stopped", () => {
    before(async () => {
      await Promise.all(validators.map((v) => v.stop(2_000)));
    });

    test("a node given only a pruned peer finds a full node through exchange and syncs from it alone", async () => {
      // P: validator 0's store pruned to its last 10 commits, a full node that knows F0.
      const p = await startFullNode("pruned", 20, ["--peer", f0.listen], prunedStore);
      const ps = await status(p.listen);
      assert.ok(Number(ps.lowestAvailableCommit) > 1, `P is pruned (lowest ${ps.lowestAvailableCommit})`);
      // P has asked F0 once (a new peer) and holds F0's signed info from its answer.
      await waitUntil(
        async () => {
          const c = new PeerClient(p.listen);
          try {
            return (await c.getKnownPeers()).peers.length > 0;
          } finally {
            c.close();
          }
        },
        "P to know F0",
        15_000,
      );
      const f2 = await startFullNode("f2", 2, ["--peer", p.listen]);
      const s = await waitSynced(f2);
      assert.ok(
        bySource(s, "exchange").includes(f0.listen),
        `F0 found through exchange: ${describePeers(s)}`,
      );
      assert.deepEqual(bySource(s, "bootstrap"), [p.listen]);
      await f2.proc.stop(2_000);
      await p.proc.stop(2_000);
    });

    test("a committee of dead addresses plus one live bootstrap peer still syncs", async () => {
      const f3 = await startFullNode("f3", 3, ["--peer", f0.listen]);
      const s = await waitSynced(f3);
      assert.equal(Number(s.highestSyncedCommit), commits);
      assert.ok(s.peers.some((p) => p.address === f0.listen && p.working));
      // Every committee address is known (the last epoch change comes with the last commit), and dead.
      await waitUntil(
        async () => bySource(await status(f3.listen), "committee").join() === finalAddresses().join(),
        "F3's committee peers to be the tip's committee",
        10_000,
      );
      for (const v of validators) assert.notEqual(v.exit, undefined, `${v.name} is stopped`);
      await f3.proc.stop(2_000);
    });

    test("a restart with no --peer at all remembers its peers", async () => {
      const store = f1.store;
      assert.equal((await f1.proc.stop(5_000)).code, 0);
      // Its store holds F0 (bootstrap) and what exchange taught it; the committee is all dead now.
      const again = await startFullNode("f1-again", 1, [], store);
      const s = await waitUntil(
        async () => {
          const st = await status(again.listen);
          return st.peers.some((p) => p.address === f0.listen && p.working) ? st : undefined;
        },
        "F1 to work with F0 again",
        15_000,
      );
      assert.deepEqual(bySource(s, "bootstrap"), [f0.listen], "F0 remembered as its bootstrap peer");
      assert.equal(Number(s.highestSyncedCommit), commits);
    });
  });
});
