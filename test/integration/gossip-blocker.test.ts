/**
 * What the Blocker sees (issue 10, item 6), with real GossipNodes on real grpc-js servers on
 * loopback and default options (maxFrameBytes 4 MiB, grpc-js receive limit 8 MiB):
 * - a 9 MiB frame after the handshake, cut off by grpc-js before GossipNode reads it, blocks the
 *   sender like any frame over maxFrameBytes: the stream ends with PERMISSION_DENIED "blocked",
 *   and reconnecting at once with the same key is refused; a 5 MiB frame (over maxFrameBytes,
 *   under the transport limit) blocks too;
 * - the same frame before the handshake only ends the stream (the key is not proven): not blocked;
 * - a dialing GossipNode blocks a listener that sends it a 9 MiB frame, and does not reconnect;
 * - blocks of other epochs: a badly signed block of the current epoch blocks its sender; one of a
 *   later epoch (unknown committee) or an earlier one (stale) is dropped and counted, not blocked.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { CommitteeView } from "../../src/core/committee.js";
import type { Ed25519Signer } from "../../src/crypto/index.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import { SignedBlockSchema } from "../../src/gen/dagsync/v1/types_pb.js";
import { decodeHello, encodeAuth, encodeFrame, encodeHello, parseFrame } from "../../src/gossip/frames.js";
import { GOSSIP_SERVICE } from "../../src/gossip/gossip-node.js";
import { type HelloView, helloView, transcript } from "../../src/gossip/handshake.js";
import {
  BlockSupply,
  type CommitteeKeys,
  hex,
  metricValue,
  type RunningGossip,
  smallChain,
  startGossip,
  waitFor,
} from "../helpers/gossip-fixture.js";
import {
  dialerHandshake,
  expectRefused,
  freshHello,
  helloBytes,
  RawGossipStream,
  rawClient,
} from "../helpers/gossip-raw-client.js";

const MiB = 1024 * 1024;
const PERMISSION_DENIED = grpc.status.PERMISSION_DENIED;

const blocksOf = (g: RunningGossip, reason: string) =>
  metricValue(g.registry, "dagsync_gossip_peer_blocks_total", { reason });

describe("gossip blocker: frames over grpc-js's receive limit (default options)", () => {
  let chainId: string;
  let keys: CommitteeKeys[];
  let node: RunningGossip;
  let client: grpc.Client;

  before(async () => {
    const small = smallChain(51);
    chainId = small.chain.chainId;
    keys = small.keys;
    node = await startGossip({ chainId, key: keys[0]!.network, committee: small.committee });
    assert.equal(node.node.options.maxFrameBytes, 4 * MiB, "default maxFrameBytes");
    client = rawClient(node.address);
  });

  after(async () => {
    client.close();
    await node.stop();
  });

  const isBlocked = (key: Ed25519Signer) =>
    node.node.blockedPeers().some((b) => b.key === hex(key.publicKey));

  async function connect(key: Ed25519Signer): Promise<RawGossipStream> {
    const s = new RawGossipStream(client);
    await dialerHandshake(s, key, freshHello(chainId, key));
    await waitFor(
      () => node.node.peers().some((p) => p.key === hex(key.publicKey)),
      "the session to come up",
    );
    return s;
  }

  for (const { size, key, reason } of [
    {
      size: 9 * MiB,
      key: 1,
      reason: /^blocked: oversized frame: over the transport limit: Received message larger than max/,
    },
    { size: 5 * MiB, key: 2, reason: /^blocked: oversized frame: \d+ bytes$/ },
  ])
    test(`a ${size / MiB} MiB frame after the handshake: PERMISSION_DENIED "blocked", and reconnecting at once is refused`, async () => {
      const k = keys[key]!.network;
      const before = await blocksOf(node, "oversized_frame");
      const s = await connect(k);
      s.send(encodeFrame("transaction", new Uint8Array(size)));
      const end = await expectRefused(s, PERMISSION_DENIED, reason);
      assert.ok(isBlocked(k), `the key is blocked (stream ended "${end.details}")`);
      assert.equal(await blocksOf(node, "oversized_frame"), before + 1, "counted as oversized_frame");
      await waitFor(() => node.node.peers().length === 0, "the session to be dropped");

      const again = new RawGossipStream(client);
      again.send(helloBytes(freshHello(chainId, k)));
      await expectRefused(again, PERMISSION_DENIED, /blocked/);
      assert.equal(again.received.length, 0, "refused before any answer");
    });

  test("a 9 MiB frame before the handshake ends the stream (RESOURCE_EXHAUSTED) but blocks nobody: the key is not proven", async () => {
    const k = keys[3]!.network;
    const blockedBefore = node.node.blockedPeers().length;
    const refusedBefore = await metricValue(node.registry, "dagsync_gossip_handshakes_total", {
      role: "listener",
      result: "RESOURCE_EXHAUSTED",
    });
    const s = new RawGossipStream(client);
    // grpc-js cuts it off unread; had it been a Hello naming k, its sender would still not have
    // proven to hold k, so there is nobody to block.
    s.send(encodeFrame("hello", new Uint8Array(9 * MiB)));
    const end = await s.waitEnd();
    assert.equal(end.codeName, "RESOURCE_EXHAUSTED", `${end.codeName} "${end.details}"`);
    assert.match(end.details, /Received message larger than max/);
    assert.equal(node.node.blockedPeers().length, blockedBefore, "nobody blocked");
    assert.equal(
      await metricValue(node.registry, "dagsync_gossip_handshakes_total", {
        role: "listener",
        result: "RESOURCE_EXHAUSTED",
      }),
      refusedBefore + 1,
      "counted as a refused handshake",
    );
    const ok = await connect(k); // admitted at once
    ok.cancel();
    await ok.waitEnd();
  });
});

/**
 * A listener that completes the handshake honestly, then sends `frame` (as a malicious
 * committee member would); it records the dialers' attempts.
 */
async function maliciousListener(
  chainId: string,
  key: Ed25519Signer,
  frame: Uint8Array,
): Promise<{ address: string; hellos: number; auths: number; stop: () => void }> {
  const state = { hellos: 0, auths: 0 };
  const server = new grpc.Server({ "grpc.max_send_message_length": 64 * MiB });
  server.addService(GOSSIP_SERVICE, {
    connect: (call: grpc.ServerDuplexStream<Uint8Array, Uint8Array>) => {
      const mine: HelloView = {
        chainId,
        networkKey: key.publicKey,
        timestampMs: Date.now(),
        nonce: new Uint8Array(randomBytes(32)),
      };
      call.on("error", () => {});
      call.on("data", (bytes: Uint8Array) => {
        const f = parseFrame(bytes);
        if (f.kind === "hello") {
          state.hellos++;
          const theirs = helloView(decodeHello(f.payload));
          call.write(encodeHello({ ...mine, timestampMs: BigInt(mine.timestampMs) }));
          call.write(encodeAuth(key.sign(transcript("listener", chainId, theirs, mine))));
        } else if (f.kind === "auth") {
          state.auths++;
          call.write(frame);
        }
      });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e === null ? resolve(p) : reject(e),
    ),
  );
  return {
    address: `127.0.0.1:${port}`,
    get hellos() {
      return state.hellos;
    },
    get auths() {
      return state.auths;
    },
    stop: () => server.forceShutdown(),
  };
}

describe("gossip blocker, dialer side", () => {
  test("a dialing GossipNode blocks a listener that sends a 9 MiB frame, and does not complete a handshake with it while blocked", async () => {
    const { chain, committee, keys } = smallChain(52);
    const evil = await maliciousListener(
      chain.chainId,
      keys[1]!.network,
      encodeFrame("transaction", new Uint8Array(9 * MiB)),
    );
    const node = await startGossip({
      chainId: chain.chainId,
      key: keys[0]!.network,
      committee,
      listen: false,
      options: { reconnectBaseMs: 20, reconnectMaxMs: 50 },
    });
    try {
      node.node.dial(evil.address, keys[1]!.network.publicKey);
      await waitFor(() => node.node.blockedPeers().length === 1, "the listener to be blocked", 10_000);
      const [blocked] = node.node.blockedPeers();
      assert.equal(blocked?.key, hex(keys[1]!.network.publicKey));
      assert.match(
        blocked?.reason ?? "",
        /^oversized frame: over the transport limit: Received message larger than max/,
      );
      assert.equal(await blocksOf(node, "oversized_frame"), 1);
      assert.equal(evil.auths, 1, "one handshake completed");
      // The dialer keeps trying (it cannot tell a blocked listener from a restarted one) but
      // refuses the blocked key at the listener's Hello, before sending its own auth.
      const hellos = evil.hellos;
      await waitFor(() => evil.hellos >= hellos + 2, "further dial attempts", 5_000);
      assert.equal(evil.auths, 1, "no handshake completed with the blocked listener");
      assert.deepEqual(node.node.peers(), []);
    } finally {
      await node.stop();
      evil.stop();
    }
  });
});

describe("gossip blocker: blocks of other epochs (the epoch rule)", () => {
  let chain: DevnetChain;
  let committee: CommitteeView;
  let keys: CommitteeKeys[];
  let supply: BlockSupply;
  let pastBlock: Uint8Array;
  let node: RunningGossip;
  let client: grpc.Client;

  before(async () => {
    // Commits of epochs 0 and 1; the last one hands over to epoch 2, whose committee the node
    // holds (and no other).
    chain = new DevnetChain({
      validators: 4,
      epochs: 2,
      commitsPerEpoch: 5,
      txsPerBlock: 1,
      txBytes: 16,
      seed: 53,
    });
    let past: Uint8Array | undefined;
    for (const c of chain.commits()) if (c.epoch === 1) past ??= c.blocks[0]?.bytes;
    committee = chain.currentCommittee;
    assert.equal(committee.epoch, 2);
    assert.ok(past !== undefined, "a block of epoch 1");
    pastBlock = past;
    keys = chain.keysByEpoch.get(2)!;
    supply = new BlockSupply(chain);
    node = await startGossip({ chainId: chain.chainId, key: keys[0]!.network, committee });
    client = rawClient(node.address);
  });

  after(async () => {
    client.close();
    await node.stop();
  });

  /** A valid block of the current epoch, re-encoded with `epoch`: its signature no longer verifies. */
  function withEpoch(epoch: number): Uint8Array {
    const signed = fromBinary(SignedBlockSchema, supply.next());
    signed.block!.epoch = BigInt(epoch);
    return toBinary(SignedBlockSchema, create(SignedBlockSchema, signed));
  }

  const dropped = (reason: string) =>
    metricValue(node.registry, "dagsync_gossip_frames_dropped_total", { lane: "broadcast", reason });

  for (const { name, block, reason } of [
    {
      name: "badly signed block of a later epoch (3: no committee to judge it by)",
      block: () => withEpoch(3),
      reason: "unknown_epoch",
    },
    {
      name: "badly signed block of an earlier epoch (1: stale)",
      block: () => withEpoch(1),
      reason: "stale_epoch",
    },
    { name: "validly signed block of an earlier epoch (1)", block: () => pastBlock, reason: "stale_epoch" },
  ])
    test(`a ${name} is dropped and counted as ${reason}; the sender is not blocked`, async () => {
      const key = keys[1]!.network;
      const delivered: string[] = [];
      const off = node.node.onBlock((b) => delivered.push(hex(b.digest)));
      const droppedBefore = await dropped(reason);
      const blocksBefore = await blocksOf(node, "invalid_block");
      const s = new RawGossipStream(client);
      try {
        await dialerHandshake(s, key, freshHello(chain.chainId, key));
        s.send(encodeFrame("block", block()));
        const good = supply.next();
        s.send(encodeFrame("block", good)); // frames are processed in order: the other one is done
        await waitFor(() => delivered.length === 1, "the valid block after it to be delivered");
        assert.equal(await dropped(reason), droppedBefore + 1, `counted as ${reason}`);
        assert.equal(await blocksOf(node, "invalid_block"), blocksBefore, "nobody blocked");
        assert.deepEqual(node.node.blockedPeers(), []);
        assert.equal(s.status, undefined, "the stream is still open");
      } finally {
        off();
        s.cancel();
        await s.waitEnd();
      }
    });

  test("a badly signed block of the current epoch blocks its sender", async () => {
    const key = keys[2]!.network;
    const s = new RawGossipStream(client);
    await dialerHandshake(s, key, freshHello(chain.chainId, key));
    const bytes = supply.next().slice();
    bytes[bytes.length - 1]! ^= 0x01; // the signature is the last field
    s.send(encodeFrame("block", bytes));
    await expectRefused(s, PERMISSION_DENIED, /^blocked: invalid signed block: .*signature does not verify/);
    assert.ok(node.node.blockedPeers().some((b) => b.key === hex(key.publicKey)));
  });
});
