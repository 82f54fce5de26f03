/**
 * What the strict wire check (src/core/wire-check.ts, issue 10) costs on the catch-up path:
 * checkWire alone, protobuf-es fromBinary alone, and parseSignedBlock / parseCommit (check +
 * decode + SHA-256) over 100k typical devnet blocks; and the client's strict response decoding
 * (Empty + reassemble + decodeStrict) against a plain fromBinary of a 4 MiB FetchBlocks response.
 *
 *   node --import tsx bench/wire-check.ts [blocks=100000] [validators=4]
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { reassemble } from "../src/client/strict-response.js";
import {
  checkWire,
  decodeStrict,
  parseCommit,
  parseSignedBlock,
  sha256,
  splitSignedBlock,
} from "../src/core/index.js";
import { DevnetChain } from "../src/devnet/chain.js";
import { BlockSchema, CommitSchema } from "../src/gen/dagsync/v1/types_pb.js";
import { WireFetchBlocksResponseSchema } from "../src/gen/dagsync/wire/v1/wire_pb.js";

const N = Number(process.argv[2] ?? 100_000);
const VALIDATORS = Number(process.argv[3] ?? 4);

const chain = new DevnetChain({ validators: VALIDATORS, epochs: 1, commitsPerEpoch: 500, seed: 9 });
const signed: Uint8Array[] = [];
const commits: Uint8Array[] = [];
for (const c of chain.commits()) {
  commits.push(c.commitBytes);
  for (const b of c.blocks) signed.push(b.bytes);
  if (signed.length >= 2000) break;
}
const blocks = signed.map((b) => splitSignedBlock(b).blockBytes);
const avg = blocks.reduce((s, b) => s + b.length, 0) / blocks.length;

function time(name: string, count: number, run: (i: number) => unknown): number {
  for (let i = 0; i < Math.min(count, 5000); i++) run(i); // warm-up
  const started = performance.now();
  for (let i = 0; i < count; i++) run(i);
  const ms = performance.now() - started;
  console.log(
    `${name.padEnd(48)} ${ms.toFixed(1).padStart(8)} ms  ${((ms * 1000) / count).toFixed(2).padStart(7)} µs each`,
  );
  return ms;
}

console.log(
  `${N} blocks (${blocks.length} distinct, ${VALIDATORS} validators, ≈${avg.toFixed(0)} bytes each)`,
);
const check = time("checkWire(Block)", N, (i) => checkWire(BlockSchema, blocks[i % blocks.length]!));
const decode = time("fromBinary(Block)", N, (i) => fromBinary(BlockSchema, blocks[i % blocks.length]!));
time("decodeStrict(Block)", N, (i) => decodeStrict(BlockSchema, blocks[i % blocks.length]!));
time("sha256(SignedBlock)", N, (i) => sha256(signed[i % signed.length]!));
const parse = time("parseSignedBlock (split + decodeStrict + sha256)", N, (i) =>
  parseSignedBlock(signed[i % signed.length]!),
);
console.log(
  `checkWire is ${((100 * check) / decode).toFixed(0)}% of fromBinary and ${((100 * check) / parse).toFixed(0)}% of parseSignedBlock`,
);
time("checkWire(Commit)", N, (i) => checkWire(CommitSchema, commits[i % commits.length]!));
time("parseCommit", N, (i) => parseCommit(commits[i % commits.length]!));

// The client side: a FetchBlocks response of ≈ 4 MiB.
const many: Uint8Array[] = [];
for (let size = 0, i = 0; size < 4 * 1024 * 1024; i++) {
  const b = signed[i % signed.length]!;
  many.push(b);
  size += b.length + 3;
}
const response = toBinary(
  WireFetchBlocksResponseSchema,
  create(WireFetchBlocksResponseSchema, { blocks: many }),
);
console.log(
  `a FetchBlocks response of ${many.length} blocks, ${(response.length / 1048576).toFixed(2)} MiB:`,
);
const R = 200;
time("fromBinary(WireFetchBlocksResponse) (before)", R, () =>
  fromBinary(WireFetchBlocksResponseSchema, response),
);
time("Empty + reassemble + decodeStrict (now)", R, () =>
  decodeStrict(WireFetchBlocksResponseSchema, reassemble(fromBinary(EmptySchema, response).$unknown)),
);
