/**
 * Embedding dagsync: a program that consumes verified sub-DAGs in-process.
 *
 *   npm run example -- [N]        (default N = 30)
 *
 * It writes a small devnet to a temporary directory and starts two of its validators in this
 * process, producing new rounds live (the devnet helpers below are for the demo only; a real
 * program points at a chain's validators). Then, through the package's public entry:
 * - `createFullNode` syncs from validator 0 into its own store and hands over each verified
 *   sub-DAG (`subDags(1)`: replayed from its store, then live);
 * - `subscribeVerified` follows validator 1's SubscribeCommits stream and verifies every sub-DAG
 *   itself (links from genesis, certifier quorums, block digests) — it trusts no node.
 * It prints each sub-DAG of both and exits 0 once each has delivered N of them.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { devnetProducer } from "../src/devnet/live.js";
// Demo scaffolding only (not part of the library surface): a devnet and in-process validators.
import { writeDevnet } from "../src/devnet/write.js";
import { type CommittedSubDag, createFullNode, subscribeVerified } from "../src/index.js";
import { silentLogger } from "../src/node/logger.js";
import { startServe } from "../src/node/serve.js";

const N = Number(process.argv[2] ?? 30);

function describe(sub: CommittedSubDag): string {
  const c = sub.commit!;
  const txs = sub.blocks.reduce((n, b) => n + (b.block?.transactions.length ?? 0), 0);
  return `commit ${c.index} epoch ${c.epoch} leader r${c.leader?.round}/v${c.leader?.author} blocks ${sub.blocks.length} txs ${txs}`;
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), "dagsync-example-"));
  const stops: (() => Promise<void>)[] = [];
  try {
    const devnet = await writeDevnet(join(root, "devnet"), {
      validators: 4,
      epochs: 2,
      commitsPerEpoch: 10,
      txsPerBlock: 2,
      txBytes: 64,
    });
    const validators = [];
    for (const index of [0, 1]) {
      const v = await startServe({
        store: devnet.validators[index]!.store,
        listen: "127.0.0.1:0",
        log: silentLogger(),
        producer: devnetProducer({
          devnetDir: devnet.dir,
          index,
          roundMs: 200,
          txsPerRound: 0,
          followers: [],
        }),
      });
      stops.push(() => v.stop());
      validators.push(`127.0.0.1:${v.port}`);
    }
    console.log(
      `devnet ${devnet.chainId}: ${devnet.commits} commits, validators at ${validators.join(", ")}`,
    );
    const genesis = new Uint8Array(await readFile(devnet.genesisFile));

    // 1. A full node in this process, syncing from validator 0.
    await using node = await createFullNode({
      store: join(root, "node-store"),
      genesis,
      peers: [validators[0]!],
      options: { sync: { peerQueryIntervalMs: 300 } },
    });
    const embedded = (async () => {
      let n = 0;
      for await (const sub of node.subDags(1)) {
        console.log(`full-node   ${describe(sub)}`);
        if (++n >= N) return n;
      }
      return n;
    })();

    // 2. A remote stream from validator 1, verified here.
    const remote = (async () => {
      let n = 0;
      for await (const sub of subscribeVerified(validators[1]!, 1, { genesis })) {
        console.log(`subscriber  ${describe(sub)}`);
        if (++n >= N) return n;
      }
      return n;
    })();

    const [a, b] = await Promise.all([embedded, remote]);
    const s = node.status();
    console.log(
      `done: ${a} sub-DAGs from the full node (synced to ${s.highestSynced}), ${b} verified from ${validators[1]}`,
    );
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await rm(root, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
