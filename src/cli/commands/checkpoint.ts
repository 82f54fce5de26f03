/** `dagsync checkpoint export|import`: trusted checkpoints. */
import { readdir } from "node:fs/promises";
import type { Command } from "commander";
import { parseGenesis } from "../../core/genesis.js";
import { exportCheckpoint, readCheckpoint } from "../../node/checkpoint.js";
import { readGenesisFile } from "../../node/full-node.js";
import { Store } from "../../store/index.js";
import { integer } from "../options.js";

/** Adds the command to `program`; returns it. */
export function addCheckpoint(program: Command): Command {
  const checkpoint = program.command("checkpoint").description("trusted checkpoints");
  checkpoint
    .command("export")
    .description(
      "print a checkpoint (JSON) of a store's highest synced commit, for `dagsync sync --checkpoint`",
    )
    .requiredOption("--store <dir>", "store of a node you trust (not in use by a running process)")
    .option("--index <n>", "the commit to export (default: the highest synced)", integer(1))
    .action(async (opts: { store: string; index?: number }) => {
      const store = await Store.open(opts.store, { mustExist: true });
      try {
        process.stdout.write(`${JSON.stringify(await exportCheckpoint(store, opts.index), null, 2)}\n`);
      } finally {
        await store.close();
      }
    });

  checkpoint
    .command("import")
    .description(
      "start a new store from a trusted checkpoint; `dagsync sync --store DIR …` then syncs from it",
    )
    .requiredOption("--store <dir>", "store directory to create (must not exist yet)")
    .requiredOption("--genesis <file>", "genesis.pb of the chain")
    .argument("<checkpoint.json>", "a checkpoint from `dagsync checkpoint export` on a node you trust")
    .action(async (file: string, opts: { store: string; genesis: string }) => {
      if (await isNonEmptyDir(opts.store))
        throw new Error(`--store ${opts.store}: already exists; a checkpoint starts a new store`);
      const genesis = await readGenesisFile(opts.genesis);
      const cp = await readCheckpoint(file, parseGenesis(genesis).digest);
      const store = await Store.open(opts.store, { genesis, checkpoint: cp });
      try {
        console.log(
          `initialized ${opts.store} at checkpoint ${cp.index} (next epoch ${cp.committee.epoch}); ` +
            `run dagsync sync --store ${opts.store} --genesis ${opts.genesis} --peer …`,
        );
      } finally {
        await store.close();
      }
    });
  return checkpoint;
}

async function isNonEmptyDir(path: string): Promise<boolean> {
  try {
    return (await readdir(path)).length > 0;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    if ((e as NodeJS.ErrnoException).code === "ENOTDIR") return true;
    throw e;
  }
}
