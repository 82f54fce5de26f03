/** `dagsync prune`: delete history below a commit from a stopped node's store. */
import type { Command } from "commander";
import { Store } from "../../store/index.js";
import { integer } from "../options.js";

/** Adds the command to `program`; returns it. */
export function addPrune(program: Command): Command {
  return program
    .command("prune")
    .description("delete commits, their blocks and certifiers below a commit (a stopped node's store)")
    .requiredOption("--store <dir>", "store directory (not in use by a running process)")
    .requiredOption(
      "--keep-from <n>",
      "the lowest commit to keep (never above the highest synced)",
      integer(1),
    )
    .action(async (opts: { store: string; keepFrom: number }) => {
      const store = await Store.open(opts.store, { mustExist: true });
      try {
        const pruned = await store.prune(opts.keepFrom);
        const m = store.watermarks;
        console.log(
          `pruned ${pruned} commits; ${opts.store} now holds ${m.lowestAvailable}..${m.highestSynced}`,
        );
      } finally {
        await store.close();
      }
    });
}
