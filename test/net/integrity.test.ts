/**
 * The scenarios' store walk (integrity.ts) fails where it should: a head without certifiers, and a
 * certifier set short of a quorum, each in an otherwise sound validator store.
 */
import assert from "node:assert/strict";
import { cp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WireFetchBlocksResponseSchema } from "../../src/gen/dagsync/wire/v1/wire_pb.js";
import { indexKey } from "../../src/store/index.js";
import { withRawStore } from "../helpers/raw-store.js";
import { type DevnetFixture, makeDevnet } from "../helpers/server.js";
import { walkStore } from "./integrity.js";

const VIEW = { keyEncoding: "view", valueEncoding: "view" } as const;
let devnet: DevnetFixture;
let genesis: Uint8Array;
let copies = 0;

before(async () => {
  devnet = await makeDevnet({ epochs: 2, commitsPerEpoch: 20, txsPerBlock: 1, txBytes: 16 });
  genesis = new Uint8Array(await readFile(devnet.summary.genesisFile));
});
after(async () => devnet.remove());

/** A copy of validator 0's store, with `edit` applied to its certifier table. */
async function copyWith(
  edit: (certifiers: ReturnType<typeof certifierTable>) => Promise<void>,
): Promise<string> {
  const path = join(devnet.dir, `copy-${copies++}`);
  await cp(devnet.storePath(0), path, { recursive: true });
  await withRawStore(path, ({ chain }) => edit(certifierTable(chain)));
  return path;
}

function certifierTable(chain: Parameters<Parameters<typeof withRawStore>[1]>[0]["chain"]) {
  return chain.sublevel<Uint8Array, Uint8Array>("certifiers", VIEW);
}

test("a sound store passes, every commit's certifiers checked", async () => {
  const r = await walkStore(devnet.storePath(0), genesis);
  assert.equal(r.highest, devnet.summary.commits);
  assert.equal(r.certified, devnet.summary.commits);
});

test("a head without certifier blocks fails the walk", async () => {
  const path = await copyWith((t) => t.del(indexKey(devnet.summary.commits)));
  await assert.rejects(walkStore(path, genesis), /the head \(commit 40\) has no certifier blocks/);
});

test("a certifier set short of a quorum fails the walk", async () => {
  const path = await copyWith(async (t) => {
    const key = indexKey(10);
    const value = await t.get(key);
    assert.ok(value !== undefined);
    const blocks = fromBinary(WireFetchBlocksResponseSchema, value).blocks;
    await t.put(
      key,
      toBinary(
        WireFetchBlocksResponseSchema,
        create(WireFetchBlocksResponseSchema, { blocks: blocks.slice(0, 1) }),
      ),
    );
  });
  await assert.rejects(walkStore(path, genesis), /certifiers of commit 10/);
});
