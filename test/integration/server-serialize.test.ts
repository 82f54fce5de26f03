/**
 * Responses written into the server's reused scratch buffer (src/server/codec.ts): the bytes are
 * the canonical encoding, and answers stay intact when many calls of different sizes are in
 * flight at once on a real server. The second is what depends on grpc-js copying a serialized
 * response into its frame at once: a grpc-js that kept the view would send corrupted blocks here.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { PeerClient, PeerError } from "../../src/client/index.js";
import { encodeRawFields, parseCommit, verifyBlocksAgainstRefs } from "../../src/core/index.js";
import { DevnetChain } from "../../src/devnet/chain.js";
import type { BlockRef } from "../../src/gen/dagsync/v1/types_pb.js";
import { RawFieldsResponse, SERIALIZE_SCRATCH_MAX_BYTES, serializeResponse } from "../../src/server/codec.js";
import type { Store } from "../../src/store/index.js";
import { buildStore, type RunningServer, removeDir, startServer, tempDir } from "../helpers/server.js";

describe("serializeResponse", () => {
  test("writes the same bytes as encodeRawFields, over and over into the same scratch", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.integer({ min: 1, max: 40 }),
            fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }),
          ),
          { maxLength: 4 },
        ),
        (fields) => {
          const response = new RawFieldsResponse(fields);
          const expected = encodeRawFields(fields);
          assert.equal(response.byteLength, expected.length);
          assert.deepEqual(new Uint8Array(serializeResponse(response)), expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  test("a response larger than the scratch limit gets a buffer of its own", () => {
    const big = new Uint8Array(SERIALIZE_SCRATCH_MAX_BYTES + 1).fill(7);
    const small = new Uint8Array([1, 2, 3]);
    const first = serializeResponse(new RawFieldsResponse([[1, [big]]]));
    assert.deepEqual(new Uint8Array(first), encodeRawFields([[1, [big]]]));
    // Not the scratch buffer: a later response leaves it as it was.
    serializeResponse(new RawFieldsResponse([[1, [small]]]));
    assert.equal(first[0], 0x0a);
    assert.equal(first.at(-1), 7);
  });

  test("encoded bytes pass through as a view, not a copy", () => {
    const bytes = new Uint8Array([8, 1]);
    const out = serializeResponse(bytes);
    assert.equal(out.buffer, bytes.buffer);
    assert.deepEqual(new Uint8Array(out), bytes);
  });
});

/** FetchBlocks, asked again after the server's admission refuses it (all loopback is one address). */
async function fetchRetrying(client: PeerClient, refs: readonly BlockRef[]) {
  for (;;) {
    try {
      return await client.fetchBlocks(refs);
    } catch (e) {
      if (!(e instanceof PeerError) || e.kind !== "rate_limited") throw e;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

describe("FetchBlocks answers under concurrency", () => {
  let dir: string;
  let store: Store;
  let running: RunningServer;
  let refs: BlockRef[];

  before(async () => {
    dir = await tempDir();
    const chain = new DevnetChain({
      epochs: 1,
      commitsPerEpoch: 300,
      txsPerBlock: 4,
      txBytes: 200,
      seed: 21,
    });
    ({ store } = await buildStore(dir, chain));
    refs = [];
    for (const bytes of await store.getCommits(1, store.watermarks.highestSynced))
      refs.push(...parseCommit(bytes).commit.blocks);
    running = await startServer(store);
  });

  after(async () => {
    await running.stop();
    await store.close();
    await removeDir(dir);
  });

  test("64 calls of different sizes in flight on 8 connections all get their own blocks", async () => {
    const clients = Array.from({ length: 8 }, () => new PeerClient(running.address));
    try {
      const calls = Array.from({ length: 64 }, (_, i) => {
        // Sizes from 1 to ≈600 refs, at different offsets, so that answers of different lengths
        // are serialized back to back.
        const count = 1 + ((i * 97) % 600);
        const from = (i * 131) % Math.max(1, refs.length - count);
        const asked = refs.slice(from, from + count);
        return fetchRetrying(clients[i % clients.length]!, asked).then((res) => ({ asked, res }));
      });
      let blocks = 0;
      for (const { asked, res } of await Promise.all(calls)) {
        assert.ok(res.blocks.length > 0);
        const { error } = verifyBlocksAgainstRefs(asked, res.blocks);
        assert.equal(error, undefined, error?.message);
        blocks += res.blocks.length;
      }
      assert.ok(blocks > 64 * 100, `only ${blocks} blocks answered`);
    } finally {
      for (const c of clients) c.close();
    }
  });
});
