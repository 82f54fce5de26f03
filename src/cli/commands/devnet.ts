/** `dagsync devnet`: a local committee, genesis and synthetic chain, one store per validator. */
import { join } from "node:path";
import type { Command } from "commander";
import { DEFAULT_DEVNET_OPTIONS } from "../../devnet/chain.js";
import { writeDevnet } from "../../devnet/write.js";
import { collect, integer, ipv4Address } from "../options.js";

/** Adds the command to `program`; returns it. */
export function addDevnet(program: Command): Command {
  return program
    .command("devnet")
    .description(
      "generate a local committee, genesis and a synthetic multi-epoch chain, one store per validator",
    )
    .requiredOption("--out <dir>", "directory to create (must be empty or absent)")
    .option("--validators <n>", "committee size", integer(1, 64), DEFAULT_DEVNET_OPTIONS.validators)
    .option("--epochs <n>", "epochs to generate", integer(1, 10_000), DEFAULT_DEVNET_OPTIONS.epochs)
    .option(
      "--commits-per-epoch <n>",
      "commits in each epoch",
      integer(1),
      DEFAULT_DEVNET_OPTIONS.commitsPerEpoch,
    )
    .option(
      "--txs-per-block <n>",
      "transactions in each block",
      integer(0, 100_000),
      DEFAULT_DEVNET_OPTIONS.txsPerBlock,
    )
    .option("--tx-bytes <n>", "bytes per transaction", integer(1, 1 << 20), DEFAULT_DEVNET_OPTIONS.txBytes)
    .option(
      "--seed <n>",
      "seed: the same seed gives the same chain",
      integer(0, 2 ** 31),
      DEFAULT_DEVNET_OPTIONS.seed,
    )
    .option(
      "--base-port <n>",
      "validator i serves sync on base+2i, gossip on base+2i+1",
      integer(1, 65000),
      DEFAULT_DEVNET_OPTIONS.basePort,
    )
    .option(
      "--hosts <ips>",
      "one host per validator, comma-separated (e.g. 127.0.0.11,127.0.0.12,…), so that they look like distinct machines (default: 127.0.0.1 for all)",
      collect(ipv4Address),
    )
    .option(
      "--move-rotated",
      "a validator that rotates its keys at an epoch change also moves to new ports (base+2(n+r-1) from epoch r on), so the committee's addresses change across epochs",
      DEFAULT_DEVNET_OPTIONS.moveRotated,
    )
    .action(
      async (opts: {
        out: string;
        validators: number;
        epochs: number;
        commitsPerEpoch: number;
        txsPerBlock: number;
        txBytes: number;
        seed: number;
        basePort: number;
        hosts?: string[];
        moveRotated: boolean;
      }) => {
        if (opts.hosts !== undefined && opts.hosts.length !== opts.validators)
          throw new Error(
            `--hosts: ${opts.hosts.length} hosts for ${opts.validators} validators (give one per validator)`,
          );
        const started = performance.now();
        const { out, ...devnetOptions } = opts;
        const s = await writeDevnet(out, devnetOptions);
        const secs = ((performance.now() - started) / 1000).toFixed(1);
        console.log(
          `devnet "${s.chainId}" in ${s.dir} (${secs} s)\n` +
            `  genesis   ${s.genesisFile} (digest ${s.genesisDigest.slice(0, 16)}…)\n` +
            `  chain     ${s.commits} commits, ${s.blocks} blocks (${(s.blockBytes / 1e6).toFixed(1)} MB), ${s.epochs} epochs\n` +
            `  summary   ${join(s.dir, "devnet.json")}\n` +
            s.validators
              .map(
                (v) =>
                  `  validator ${v.index}  store ${v.store}  sync ${v.syncAddress}  gossip ${v.gossipAddress}`,
              )
              .join("\n"),
        );
      },
    );
}
