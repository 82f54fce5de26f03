/**
 * Discovery's building blocks on real parts (DESIGN.md §9): GetKnownPeers on a real SyncServer
 * over loopback answers signed infos that verify (through PeerClient, and through the generated
 * schema), caps its answer at 200, hands a caller's info on, and rate-limits a flooding client
 * with RESOURCE_EXHAUSTED and a retry-after-ms hint; the known set persists in a real LevelDB
 * store across a reopen.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { PeerClient, PeerError } from "../../src/client/index.js";
import { bytesEqual, validateSignedNodeInfo } from "../../src/core/index.js";
import { Ed25519Signer, NativeVerifier, signNodeInfo } from "../../src/crypto/index.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import { loadPeerBook, PeerBook, savePeerBook } from "../../src/discovery/index.js";
import { Store } from "../../src/store/index.js";
import {
  type RunningServer,
  rawUnary,
  removeDir,
  startServer,
  tempDir,
  typedClients,
} from "../helpers/server.js";

const chain = new DevnetChain({
  validators: 4,
  epochs: 1,
  commitsPerEpoch: 5,
  txsPerBlock: 1,
  txBytes: 16,
  seed: 13,
});
const CHAIN = chain.chainId;
const verifier = new NativeVerifier();
const serverKey = new Ed25519Signer(new Uint8Array(32).fill(3));
const callerKey = new Ed25519Signer(new Uint8Array(32).fill(4));

function peerSigner(i: number): Ed25519Signer {
  const seed = new Uint8Array(32);
  new DataView(seed.buffer).setUint32(0, 5000 + i);
  return new Ed25519Signer(seed);
}
const peerSigners = Array.from({ length: 250 }, (_, i) => peerSigner(i));

function peerInfos(now: number): Uint8Array[] {
  return peerSigners.map((s, i) =>
    signNodeInfo(s, CHAIN, { syncAddress: `10.1.${i >> 8}.${i & 255}:9100`, timestampMs: now - i }),
  );
}

describe("discovery on real parts", () => {
  let dir: string;
  let store: Store;

  before(async () => {
    dir = await tempDir("dagsync-disc-");
    store = await Store.open(`${dir}/store`, { genesis: chain.genesis.bytes });
  });
  after(async () => {
    await store?.close();
    await removeDir(dir);
  });

  describe("GetKnownPeers", () => {
    let srv: RunningServer;
    const callers: { peer: string; bytes: Uint8Array }[] = [];
    let infos: Uint8Array[];

    before(async () => {
      infos = peerInfos(Date.now());
      srv = await startServer(store, {
        discovery: {
          self: () =>
            signNodeInfo(serverKey, CHAIN, {
              syncAddress: "127.0.0.1:9100",
              gossipAddress: "127.0.0.1:9101",
              timestampMs: Date.now(),
            }),
          // More than an answer may carry: the server caps at 200.
          peers: () => infos,
          onCaller: (peer, bytes) => callers.push({ peer, bytes }),
        },
      });
    });
    after(async () => {
      await srv?.stop();
    });

    test("answers its own signed info and at most 200 peers, all of which verify", async () => {
      const c = new PeerClient(srv.address);
      try {
        const caller = signNodeInfo(callerKey, CHAIN, {
          syncAddress: "127.0.0.1:9200",
          timestampMs: Date.now(),
        });
        const answer = await c.getKnownPeers(caller);
        assert.ok(answer.self !== undefined);
        const self = validateSignedNodeInfo(answer.self, { chainId: CHAIN, verifier, nowMs: Date.now() });
        assert.ok(self.ok, self.ok ? "" : self.detail);
        assert.deepEqual(self.entry.networkKey, serverKey.publicKey);
        assert.equal(self.entry.gossipAddress, "127.0.0.1:9101");
        assert.equal(answer.peers.length, 200);
        for (const [i, bytes] of answer.peers.entries()) {
          assert.deepEqual(bytes, infos[i], `entry ${i} is relayed as received`);
          assert.ok(validateSignedNodeInfo(bytes, { chainId: CHAIN, verifier, nowMs: Date.now() }).ok);
        }
        // The caller's info reached the listener's callback, as sent, with its remote address.
        assert.equal(callers.length, 1);
        assert.ok(bytesEqual(callers[0]!.bytes, caller));
        assert.equal(callers[0]!.peer, "127.0.0.1");
        // A peer book on the other side takes all of it.
        const book = new PeerBook({ chainId: CHAIN, verifier, ownKey: callerKey.publicKey });
        const r = book.ingest(answer, Date.now());
        assert.equal(r.added, 201);
        assert.equal(r.ignored, 0);
        // Without a caller, nothing is handed on.
        await c.getKnownPeers();
        assert.equal(callers.length, 1);
      } finally {
        c.close();
      }
    });

    test("the generated schema decodes the answer (NodeInfo fields as DESIGN §9 fixes them)", async () => {
      const { sync } = typedClients(srv.baseUrl);
      const res = await sync.getKnownPeers({});
      assert.deepEqual(res.self?.info?.networkKey, serverKey.publicKey);
      assert.equal(res.self?.info?.syncAddress, "127.0.0.1:9100");
      assert.equal(res.self?.signature.length, 64);
      assert.equal(res.peers.length, 200);
      assert.equal(res.peers[0]?.info?.syncAddress, "10.1.0.0:9100");
    });

    test("a server without discovery answers an empty list", async () => {
      const bare = await startServer(store);
      const c = new PeerClient(bare.address);
      try {
        const answer = await c.getKnownPeers();
        assert.equal(answer.self, undefined);
        assert.deepEqual(answer.peers, []);
      } finally {
        c.close();
        await bare.stop();
      }
    });

    test("a malformed request is INVALID_ARGUMENT", async () => {
      const r = await rawUnary(
        srv.address,
        "/dagsync.v1.StateSync/GetKnownPeers",
        new Uint8Array([0x0a, 0x05, 1]),
      );
      assert.equal(r.code, status.INVALID_ARGUMENT, r.details);
    });
  });

  describe("rate limiting", () => {
    let limited: RunningServer;
    before(async () => {
      limited = await startServer(store, {
        options: { rateLimits: { getKnownPeers: { perSecond: 1, burst: 3 } } },
        discovery: { peers: () => [] },
      });
    });
    after(async () => {
      await limited?.stop();
    });

    test("a client flooding GetKnownPeers gets RESOURCE_EXHAUSTED with retry-after-ms", async () => {
      const c = new PeerClient(limited.address);
      try {
        const outcomes = await Promise.all(
          Array.from({ length: 20 }, () =>
            c.getKnownPeers().then(
              () => "ok",
              (e: unknown) => e,
            ),
          ),
        );
        const refused = outcomes.filter((o) => o instanceof PeerError);
        assert.ok(
          outcomes.filter((o) => o === "ok").length <= 4,
          "at most the burst (and a refill) get through",
        );
        assert.ok(refused.length >= 16, `${refused.length} refused`);
        for (const e of refused) {
          assert.ok(e instanceof PeerError);
          assert.equal(e.kind, "rate_limited");
          assert.ok(e.retryAfterMs !== undefined && e.retryAfterMs > 0 && e.retryAfterMs <= 1000);
        }
        const r = await rawUnary(limited.address, "/dagsync.v1.StateSync/GetKnownPeers", new Uint8Array(0));
        assert.equal(r.code, status.RESOURCE_EXHAUSTED, r.details);
        assert.match(r.details, /rate limit for GetKnownPeers exceeded for 127\.0\.0\.1: retry in \d+ ms/);
        const hint = Number(r.trailers?.get("retry-after-ms")[0]);
        assert.ok(Number.isInteger(hint) && hint > 0 && hint <= 1000, `retry-after-ms = ${hint}`);
        // Other RPCs keep their own quotas.
        await c.getCommitAvailability();
        const counted = await limited.server.registry.getSingleMetricAsString(
          "dagsync_server_rate_limited_total",
        );
        assert.match(counted, /method="GetKnownPeers",reason="rate"} \d+/);
      } finally {
        c.close();
      }
    });
  });

  describe("persistence", () => {
    test("the known set survives closing and reopening the store", async () => {
      const path = `${dir}/persist`;
      const now = Date.now();
      const infos = peerInfos(now).slice(0, 30);
      let s = await Store.open(path, { genesis: chain.genesis.bytes });
      try {
        assert.equal(await s.getKnownPeers(), undefined);
        const book = new PeerBook({ chainId: CHAIN, verifier });
        book.setCommittee(0, chain.genesis.genesis.committee?.validators ?? []);
        book.addBootstrap(["seed.example.org:9100"]);
        book.ingest({ self: undefined, peers: infos }, now);
        await savePeerBook(book, s);
        await s.close();
        s = await Store.open(path);
        const reloaded = new PeerBook({ chainId: CHAIN, verifier });
        // A restart a day and a half later still remembers them.
        assert.equal(await loadPeerBook(reloaded, s, now + 36 * 3600_000), 31);
        const summary = (b: PeerBook) =>
          b
            .peers()
            .filter((p) => p.source !== "committee")
            .map((p) => `${p.id} ${p.syncAddress} ${p.sources.join(",")} ${p.timestampMs}`)
            .sort();
        assert.deepEqual(summary(reloaded), summary(book));
        assert.equal(reloaded.stats().known.exchange, 30);
        assert.equal(reloaded.stats().known.bootstrap, 1);
        // Saving again replaces the set (one atomic put).
        await savePeerBook(new PeerBook({ chainId: CHAIN, verifier }), s);
        assert.equal(await loadPeerBook(new PeerBook({ chainId: CHAIN, verifier }), s, now), 0);
      } finally {
        await s.close();
      }
    });
  });
});
