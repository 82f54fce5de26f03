/** `dagsync prune`: delete history below a commit from a stopped node's store. */
import type { Command } from "commander";
import { DEFAULT_PRUNE_OPTIONS, diskBytes, Store } from "../../store/index.js";
import { integer } from "../options.js";

/** Bytes as people read them: B, kB, MB or GB (powers of 1000, as `du --si`), 3 significant digits. */
export function formatBytes(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** Adds the command to `program`; returns it. */
export function addPrune(program: Command): Command {
  return program
    .command("prune")
    .description(
      "delete commits, their blocks and certifiers below a commit, and compact the store (a stopped node's store)",
    )
    .requiredOption("--store <dir>", "store directory (not in use by a running process)")
    .requiredOption(
      "--keep-from <n>",
      "the lowest commit to keep (never above the highest synced)",
      integer(1),
    )
    .option(
      "--commits-per-batch <n>",
      "commits deleted and compacted per step (bounds memory and the work of one step)",
      integer(1),
      DEFAULT_PRUNE_OPTIONS.commitsPerBatch,
    )
    .action(async (opts: { store: string; keepFrom: number; commitsPerBatch: number }) => {
      const before = await diskBytes(opts.store);
      const store = await Store.open(opts.store, { mustExist: true });
      let line: string;
      try {
        const lowest = store.watermarks.lowestAvailable;
        const pruned = await store.prune(opts.keepFrom, { commitsPerBatch: opts.commitsPerBatch });
        const m = store.watermarks;
        const what =
          m.lowestAvailable > lowest
            ? `pruned commits ${lowest}..${m.lowestAvailable - 1} (${pruned} commits deleted)`
            : pruned > 0
              ? `finished an interrupted prune below ${lowest} (${pruned} commits deleted)`
              : `nothing to prune below ${Math.min(opts.keepFrom, m.highestSynced)}`;
        line = `${what}; ${opts.store} now holds ${m.lowestAvailable}..${m.highestSynced}`;
      } finally {
        await store.close();
      }
      // Measured after close: LevelDB deletes obsolete files and its log then.
      const after = await diskBytes(opts.store);
      console.log(`${line}; store ${formatBytes(before)} → ${formatBytes(after)}`);
    });
}
