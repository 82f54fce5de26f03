/**
 * The handshake and admission control of the live channel (DESIGN.md §5, gossip.proto header):
 * real GossipNodes on real grpc-js servers on loopback, dialed by a raw client that can send
 * anything. Every refusal is checked for its gRPC code and reason; the happy path is checked
 * against transcript bytes built here from the documented layout (not by src/gossip); the
 * allowed set follows the committee; and the Blocker disconnects and refuses a misbehaving peer
 * for `blockDurationMs`, then admits it again.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import type { CommitteeView } from "../../src/core/committee.js";
import { Ed25519Signer, NativeVerifier } from "../../src/crypto/index.js";
import type { DevnetChain } from "../../src/devnet/chain.js";
import { encodeFrame } from "../../src/gossip/frames.js";
import {
  BlockSupply,
  type CommitteeKeys,
  hex,
  metricValue,
  type RunningGossip,
  smallChain,
  startGossip,
  waitFor,
  waitForAsync,
} from "../helpers/gossip-fixture.js";
import {
  dialerHandshake,
  expectRefused,
  freshHello,
  helloBytes,
  RawGossipStream,
  rawClient,
} from "../helpers/gossip-raw-client.js";

const UNAUTHENTICATED = grpc.status.UNAUTHENTICATED;
const PERMISSION_DENIED = grpc.status.PERMISSION_DENIED;

/** T(role) exactly as the gossip.proto header documents it, built without src/gossip. */
function documentedTranscript(
  role: "dialer" | "listener",
  chainId: string,
  dialer: { networkKey: Uint8Array; nonce: Uint8Array; timestampMs: number },
  listener: { networkKey: Uint8Array; nonce: Uint8Array; timestampMs: number },
): Uint8Array {
  const u64be = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(n));
    return b;
  };
  return Buffer.concat([
    Buffer.from("dagsync/handshake/v1", "ascii"),
    Buffer.from([0]),
    Buffer.from(role, "ascii"),
    Buffer.from([0]),
    Buffer.from(chainId, "utf8"),
    Buffer.from([0]),
    dialer.networkKey,
    listener.networkKey,
    dialer.nonce,
    listener.nonce,
    u64be(dialer.timestampMs),
    u64be(listener.timestampMs),
  ]);
}

const verifier = new NativeVerifier();

describe("gossip handshake and admission", () => {
  let chain: DevnetChain;
  let committee: CommitteeView;
  let keys: CommitteeKeys[];
  let supply: BlockSupply;
  let chainId: string;
  const fullNodeRaw = Ed25519Signer.generate();
  const fullNodeReal = Ed25519Signer.generate();
  let listener: RunningGossip;
  let client: grpc.Client;
  const cleanup: (() => Promise<void> | void)[] = [];
  const streams: RawGossipStream[] = [];

  /** A new Connect stream to `address` (cancelled in `after` if still open). */
  const open = (c: grpc.Client = client) => {
    const s = new RawGossipStream(c);
    streams.push(s);
    return s;
  };
  const sessionUp = (node: RunningGossip, key: Uint8Array) =>
    node.node.peers().some((p) => p.key === hex(key));

  before(async () => {
    ({ chain, committee, keys } = smallChain(21));
    chainId = chain.chainId;
    supply = new BlockSupply(chain);
    listener = await startGossip({
      chainId,
      key: keys[0]!.network,
      committee,
      extraKeys: [fullNodeRaw.publicKey, fullNodeReal.publicKey],
    });
    cleanup.push(() => listener.stop());
    client = rawClient(listener.address);
    cleanup.push(() => client.close());
  });

  after(async () => {
    for (const s of streams) if (s.status === undefined) s.cancel();
    for (const c of cleanup.reverse()) await c();
  });

  test("a key outside the committee and the extra keys is refused: PERMISSION_DENIED, not in the allowed set", async () => {
    const stranger = Ed25519Signer.generate();
    const before = await metricValue(listener.registry, "dagsync_gossip_handshakes_total", {
      role: "listener",
      result: "PERMISSION_DENIED",
    });
    const s = open();
    s.send(helloBytes(freshHello(chainId, stranger)));
    await expectRefused(s, PERMISSION_DENIED, /network key [0-9a-f]{16}… is not in the allowed set/);
    assert.equal(s.received.length, 0, "the listener must not answer a refused Hello");
    assert.equal(sessionUp(listener, stranger.publicKey), false);
    const afterCount = await metricValue(listener.registry, "dagsync_gossip_handshakes_total", {
      role: "listener",
      result: "PERMISSION_DENIED",
    });
    assert.equal(afterCount, before + 1, "the refusal is counted by result");
  });

  test("a Hello for another chain is refused: PERMISSION_DENIED, wrong chain", async () => {
    const s = open();
    s.send(helloBytes(freshHello(`${chainId}-fork`, keys[1]!.network)));
    const end = await expectRefused(s, PERMISSION_DENIED, /wrong chain/);
    assert.match(end.details, new RegExp(`"${chainId}-fork", this node is on "${chainId}"`));
    assert.equal(s.received.length, 0);
  });

  test("a stale Hello (11 s old, max age 10 s) is refused: UNAUTHENTICATED; an 8 s old one is admitted", async () => {
    const s = open();
    s.send(helloBytes(freshHello(chainId, keys[1]!.network, { timestampMs: Date.now() - 11_000 })));
    await expectRefused(s, UNAUTHENTICATED, /stale hello: timestamp \d+ ms old \(max 10000\)/);
    assert.equal(s.received.length, 0);

    const ok = open();
    ok.send(helloBytes(freshHello(chainId, keys[1]!.network, { timestampMs: Date.now() - 8_000 })));
    const frames = await ok.waitFrames(2);
    assert.deepEqual(
      frames.map((f) => f.kind),
      ["hello", "auth"],
      "inside the window the listener answers",
    );
    ok.cancel();
  });

  test("a Hello from the future (6 s ahead, max skew 5 s) is refused: UNAUTHENTICATED; 3 s ahead is admitted", async () => {
    const s = open();
    s.send(helloBytes(freshHello(chainId, keys[1]!.network, { timestampMs: Date.now() + 6_000 })));
    await expectRefused(s, UNAUTHENTICATED, /hello from the future: \d+ ms ahead \(max 5000\)/);
    assert.equal(s.received.length, 0);

    const ok = open();
    ok.send(helloBytes(freshHello(chainId, keys[1]!.network, { timestampMs: Date.now() + 3_000 })));
    const frames = await ok.waitFrames(2);
    assert.deepEqual(
      frames.map((f) => f.kind),
      ["hello", "auth"],
    );
    ok.cancel();
  });

  test("bad transcript signatures are refused: UNAUTHENTICATED, bad transcript signature", async () => {
    const dialerKey = keys[1]!.network;
    type Peer = Parameters<typeof documentedTranscript>[2];
    const cases: [string, (hello: Peer, t: Uint8Array, listenerHello: Peer) => Uint8Array][] = [
      ["random bytes", () => new Uint8Array(randomBytes(64))],
      [
        "the right key over T(listener) (a reflected role)",
        (hello, _t, l) => dialerKey.sign(documentedTranscript("listener", chainId, hello, l)),
      ],
      ["another committee member's key over T(dialer)", (_h, t) => keys[2]!.network.sign(t)],
      [
        "a signature of another session (other listener nonce)",
        (hello, _t, l) =>
          dialerKey.sign(documentedTranscript("dialer", chainId, hello, { ...l, nonce: new Uint8Array(32) })),
      ],
    ];
    for (const [what, sign] of cases) {
      const s = open();
      const hello = freshHello(chainId, dialerKey);
      await dialerHandshake(s, dialerKey, hello, (t, l) => sign(hello, t, l));
      const end = await s.waitEnd();
      assert.equal(end.codeName, "UNAUTHENTICATED", `${what}: ${end.codeName} "${end.details}"`);
      assert.match(end.details, /bad transcript signature/, what);
      assert.equal(sessionUp(listener, dialerKey.publicKey), false, `${what}: no session`);
    }
  });

  test("a replayed Hello (same nonce twice) is refused: UNAUTHENTICATED, replayed hello", async () => {
    const key = keys[2]!.network;
    const hello = freshHello(chainId, key);
    const first = open();
    await dialerHandshake(first, key, hello);
    await waitFor(() => sessionUp(listener, key.publicKey), "the first session");
    first.cancel();
    await first.waitEnd();
    await waitFor(() => !sessionUp(listener, key.publicKey), "the first session to close");

    const replay = open();
    replay.send(helloBytes(hello));
    await expectRefused(replay, UNAUTHENTICATED, /replayed hello \(nonce already seen\)/);
    assert.equal(replay.received.length, 0, "a replayed Hello gets no answer");
    // Only the nonce was the problem: the same key with a fresh nonce is admitted.
    const fresh = open();
    await dialerHandshake(fresh, key, freshHello(chainId, key));
    await waitFor(() => sessionUp(listener, key.publicKey), "a session with a fresh nonce");
    fresh.cancel();
  });

  test("silence past handshakeTimeoutMs (300 ms) ends the stream: UNAUTHENTICATED within 300 ms .. 3 s", async () => {
    const slow = await startGossip({
      chainId,
      key: keys[0]!.network,
      committee,
      options: { handshakeTimeoutMs: 300 },
    });
    const c = rawClient(slow.address);
    try {
      // Nothing at all.
      const silent = open(c);
      const end = await expectRefused(silent, UNAUTHENTICATED, /handshake not finished within 300 ms/);
      assert.ok(end.afterMs >= 250, `ended after ${end.afterMs} ms: before the timeout`);
      assert.ok(end.afterMs < 3_000, `ended after ${end.afterMs} ms`);
      // A Hello, then silence instead of the dialer's auth.
      const halfway = open(c);
      halfway.send(helloBytes(freshHello(chainId, keys[1]!.network)));
      await halfway.waitFrames(2);
      const end2 = await expectRefused(halfway, UNAUTHENTICATED, /handshake not finished within 300 ms/);
      assert.ok(end2.afterMs >= 250 && end2.afterMs < 3_000, `ended after ${end2.afterMs} ms`);
      assert.equal(sessionUp(slow, keys[1]!.network.publicKey), false);
    } finally {
      c.close();
      await slow.stop();
    }
  });

  test("a lane frame before the handshake is refused: UNAUTHENTICATED, and never delivered", async () => {
    const delivered: string[] = [];
    const offB = listener.node.onBlock((b) => delivered.push(hex(b.digest)));
    const offT = listener.node.onTransaction((tx) => delivered.push(hex(tx)));
    try {
      const block = open();
      block.send(encodeFrame("block", supply.next()));
      await expectRefused(block, UNAUTHENTICATED, /block frame before the handshake/);

      const tx = open();
      tx.send(encodeFrame("transaction", new Uint8Array(randomBytes(32))));
      await expectRefused(tx, UNAUTHENTICATED, /transaction frame before the handshake/);

      // After a good Hello but before the dialer's auth.
      const early = open();
      early.send(helloBytes(freshHello(chainId, keys[3]!.network)));
      await early.waitFrames(2);
      early.send(encodeFrame("transaction", new Uint8Array(randomBytes(32))));
      await expectRefused(early, UNAUTHENTICATED, /transaction frame before the handshake finished/);

      // Junk that is not a frame at all.
      const junk = open();
      junk.send(new Uint8Array([0xff, 0xff, 0xff, 0x01]));
      await expectRefused(junk, UNAUTHENTICATED, /junk before the handshake/);

      assert.deepEqual(delivered, [], "nothing sent before the handshake reaches the node");
      assert.equal(sessionUp(listener, keys[3]!.network.publicKey), false);
    } finally {
      offB();
      offT();
    }
  });

  test("a configured extra key (a full node) completes the documented handshake and its frames are delivered", async () => {
    const s = open();
    const hello = freshHello(chainId, fullNodeRaw);
    const result = await dialerHandshake(s, fullNodeRaw, hello, (_t, l) =>
      fullNodeRaw.sign(documentedTranscript("dialer", chainId, hello, l)),
    );
    // The listener's Hello and its signature over T("listener") as documented.
    assert.equal(result.listener.chainId, chainId);
    assert.deepEqual(result.listener.networkKey, keys[0]!.network.publicKey);
    assert.equal(result.listener.nonce.length, 32);
    assert.notDeepEqual(result.listener.nonce, hello.nonce);
    assert.ok(Math.abs(result.listener.timestampMs - Date.now()) < 5_000, "listener timestamp is its clock");
    assert.ok(
      verifier.verify(
        keys[0]!.network.publicKey,
        documentedTranscript("listener", chainId, hello, result.listener),
        result.listenerSignature,
      ),
      "the listener signs T(listener) byte for byte as gossip.proto documents",
    );
    assert.ok(
      !verifier.verify(
        keys[0]!.network.publicKey,
        documentedTranscript("dialer", chainId, hello, result.listener),
        result.listenerSignature,
      ),
      "the role is bound: the listener's signature is not one over T(dialer)",
    );
    await waitFor(() => sessionUp(listener, fullNodeRaw.publicKey), "the full node's session");
    assert.equal(listener.node.peers().find((p) => p.key === hex(fullNodeRaw.publicKey))?.role, "listener");

    const got: { tx: string; from: string }[] = [];
    const off = listener.node.onTransaction((tx, from) => got.push({ tx: hex(tx), from }));
    try {
      const tx = new Uint8Array(randomBytes(48));
      s.send(encodeFrame("transaction", tx));
      await waitFor(() => got.length > 0, "the full node's transaction to be delivered");
      assert.deepEqual(got, [{ tx: hex(tx), from: hex(fullNodeRaw.publicKey) }]);
    } finally {
      off();
      s.cancel();
    }
  });

  test("a real full-node GossipNode (extra key) dials in and receives blocks; a wrong expected key fails the dial", async () => {
    const full = await startGossip({ chainId, key: fullNodeReal, committee, listen: false });
    const wrong = await startGossip({
      chainId,
      key: fullNodeRaw,
      committee,
      listen: false,
      options: { reconnectBaseMs: 50, reconnectMaxMs: 200 },
    });
    try {
      full.node.dial(listener.address, keys[0]!.network.publicKey);
      await waitFor(
        () => sessionUp(listener, fullNodeReal.publicKey) && sessionUp(full, keys[0]!.network.publicKey),
        "sessions on both sides",
      );
      assert.equal(full.node.peers()[0]?.role, "dialer");
      const got: string[] = [];
      full.node.onBlock((b) => got.push(hex(b.digest)));
      const block = supply.next();
      listener.node.publishBlock(block);
      await waitFor(() => got.length === 1, "the block at the full node");
      assert.equal(got[0], createHash("sha256").update(block).digest("hex"));

      // Expecting another listener key: the dialer refuses the listener (and keeps retrying).
      wrong.node.dial(listener.address, keys[1]!.network.publicKey);
      await waitForAsync(
        async () =>
          (await metricValue(wrong.registry, "dagsync_gossip_handshakes_total", {
            role: "dialer",
            result: "failed",
          })) >= 2,
        "two failed dials (the dialer retries)",
      );
      assert.deepEqual(wrong.node.peers(), [], "no session with a listener of another key");
      assert.equal(sessionUp(listener, fullNodeRaw.publicKey), false, "nor on the listener's side");
    } finally {
      await full.stop();
      await wrong.stop();
    }
  });

  test("after an epoch change the allowed set follows the new committee: the old-only key is refused and its open session ends", async () => {
    const epoch0 = chain.genesis.committee;
    const keys0 = chain.keysByEpoch.get(0)!;
    const keys1 = chain.keysByEpoch.get(1)!;
    // Validator 1 rotates its keys at epoch 1 (devnet rule); validator 0 keeps them.
    const oldOnly = keys0[1]!.network;
    const newOnly = keys1[1]!.network;
    assert.notDeepEqual(oldOnly.publicKey, newOnly.publicKey);
    assert.deepEqual(keys0[0]!.network.publicKey, keys1[0]!.network.publicKey);
    let current: CommitteeView = epoch0;
    const node = await startGossip({
      chainId,
      key: keys0[0]!.network,
      committee: () => current,
      options: { admissionCheckIntervalMs: 50 },
    });
    const c = rawClient(node.address);
    const admitted = async (key: Ed25519Signer) => {
      const s = open(c);
      await dialerHandshake(s, key, freshHello(chainId, key));
      await waitFor(() => sessionUp(node, key.publicKey), `a session for ${hex(key.publicKey).slice(0, 8)}`);
      s.cancel();
      await s.waitEnd();
    };
    const refused = async (key: Ed25519Signer) => {
      const s = open(c);
      s.send(helloBytes(freshHello(chainId, key)));
      await expectRefused(s, PERMISSION_DENIED, /is not in the allowed set/);
    };
    try {
      assert.equal(current.epoch, 0);
      await admitted(oldOnly);
      await refused(newOnly);
      const kept = open(c);
      await dialerHandshake(kept, oldOnly, freshHello(chainId, oldOnly));
      await waitFor(() => sessionUp(node, oldOnly.publicKey), "the old-only key's session");
      current = committee; // epoch 1
      assert.equal(current.epoch, 1);
      await expectRefused(kept, PERMISSION_DENIED, /no longer in the allowed set/);
      assert.ok(!sessionUp(node, oldOnly.publicKey), "the session is gone");
      await refused(oldOnly);
      await admitted(newOnly);
      await admitted(keys1[2]!.network); // unchanged members stay admitted
    } finally {
      c.close();
      await node.stop();
    }
  });
});

describe("gossip blocker: misbehaving peers are disconnected and refused for blockDurationMs", () => {
  const BLOCK_MS = 500;
  const MAX_FRAME = 64 * 1024;
  let chain: DevnetChain;
  let committee: CommitteeView;
  let keys: CommitteeKeys[];
  let supply: BlockSupply;
  let node: RunningGossip;
  let client: grpc.Client;

  before(async () => {
    ({ chain, committee, keys } = smallChain(22));
    supply = new BlockSupply(chain);
    node = await startGossip({
      chainId: chain.chainId,
      key: keys[0]!.network,
      committee,
      options: { blockDurationMs: BLOCK_MS, maxFrameBytes: MAX_FRAME },
    });
    client = rawClient(node.address);
  });

  after(async () => {
    client.close();
    await node.stop();
  });

  const up = (key: Ed25519Signer) => node.node.peers().some((p) => p.key === hex(key.publicKey));

  async function connect(key: Ed25519Signer): Promise<RawGossipStream> {
    const s = new RawGossipStream(client);
    await dialerHandshake(s, key, freshHello(chain.chainId, key));
    await waitFor(() => up(key), "the session to come up");
    return s;
  }

  const cases: { name: string; key: number; frame: () => Uint8Array; reason: RegExp; label: string }[] = [
    {
      name: "an invalid signed block (bad signature)",
      key: 1,
      frame: () => {
        const bytes = supply.next().slice();
        bytes[bytes.length - 1]! ^= 0x01; // the signature is the last field
        return encodeFrame("block", bytes);
      },
      reason: /blocked: invalid signed block: .*signature does not verify/,
      label: "invalid_block",
    },
    {
      name: "an oversized frame (maxFrameBytes + 1 KiB)",
      key: 2,
      frame: () => encodeFrame("transaction", new Uint8Array(MAX_FRAME + 1024)),
      reason: /blocked: oversized frame/,
      label: "oversized_frame",
    },
    {
      // grpc-js cuts this one off before GossipNode reads it (transport-limit.ts).
      name: "a frame beyond the transport limit (2 × maxFrameBytes + 1 KiB)",
      key: 1,
      frame: () => encodeFrame("transaction", new Uint8Array(2 * MAX_FRAME + 1024)),
      reason: /blocked: oversized frame: over the transport limit: Received message larger than max/,
      label: "oversized_frame",
    },
    {
      name: "junk bytes",
      key: 3,
      frame: () => new Uint8Array([0xff, 0xff, 0xff, 0xff]),
      reason: /blocked: junk frame/,
      label: "junk_frame",
    },
  ];

  for (const c of cases) {
    test(`${c.name}: disconnected, refused while blocked, admitted again after ${BLOCK_MS} ms`, async () => {
      const key = keys[c.key]!.network;
      const blocksBefore = await metricValue(node.registry, "dagsync_gossip_peer_blocks_total");
      const delivered: string[] = [];
      const off = node.node.onBlock((b) => delivered.push(hex(b.digest)));
      try {
        const s = await connect(key);
        const t0 = Date.now();
        s.send(c.frame());
        const end = await s.waitEnd();
        assert.ok(
          end.code === PERMISSION_DENIED && c.reason.test(end.details),
          `disconnected with ${end.codeName} "${end.details}", expected PERMISSION_DENIED ${c.reason}`,
        );
        await waitFor(() => !up(key), "the session to be dropped");
        const blocked = node.node.blockedPeers().find((b) => b.key === hex(key.publicKey));
        assert.ok(blocked !== undefined, "the peer is in the blocked list");
        assert.match(blocked.reason, /invalid signed block|oversized frame|junk frame/);
        assert.ok(blocked.until >= t0 + BLOCK_MS, "blocked for blockDurationMs");
        assert.equal(
          await metricValue(node.registry, "dagsync_gossip_peer_blocks_total"),
          blocksBefore + 1,
          "the block is counted",
        );
        const series = (await node.registry.getMetricsAsJSON())
          .find((m) => m.name === "dagsync_gossip_peer_blocks_total")!
          .values.map((v) => String(v.labels.reason));
        assert.ok(series.includes(c.label), `counted under the fixed label ${c.label}: ${series.join(", ")}`);
        for (const label of series)
          assert.match(
            label,
            /^(invalid_block|oversized_frame|junk_frame|unexpected_frame)$/,
            "bounded labels",
          );
        assert.deepEqual(delivered, [], "nothing from the misbehaving frame is delivered");

        // Reconnecting while blocked: refused with the blocked reason, before any answer.
        const again = new RawGossipStream(client);
        again.send(helloBytes(freshHello(chain.chainId, key)));
        await expectRefused(again, PERMISSION_DENIED, /peer is blocked for misbehaviour for \d+ s more/);
        assert.equal(again.received.length, 0);

        // Once the block expires, the same key is admitted and its frames are delivered.
        await waitFor(
          () => !node.node.blockedPeers().some((b) => b.key === hex(key.publicKey)),
          "the block to expire",
          BLOCK_MS + 5_000,
        );
        const back = await connect(key);
        assert.ok(Date.now() - t0 >= BLOCK_MS, "admitted only after blockDurationMs");
        const good = supply.next();
        back.send(encodeFrame("block", good));
        await waitFor(() => delivered.length === 1, "a valid block from the readmitted peer");
        back.cancel();
        await back.waitEnd();
      } finally {
        off();
      }
    });
  }
});
