/** `dagsync archive export`: history as static files (DESIGN.md §10). */
import { existsSync } from "node:fs";
import type { Command } from "commander";
import type { ManifestChunk } from "../../archive/format.js";
import { DEFAULT_ARCHIVE_WRITER_OPTIONS } from "../../archive/options.js";
import { type ExportResult, exportArchive } from "../../archive/writer.js";
import { Store, StoreError } from "../../store/index.js";
import { integer } from "../options.js";

/** Adds the command group to `program`; returns it. */
export function addArchive(program: Command): Command {
  const archive = program.command("archive").description("history as static files any HTTP server can host");
  archive
    .command("export")
    .description(
      "append to ARCHIVE the chunks a stopped node's store completed since the last export (a running validator: serve --archive-out)",
    )
    .requiredOption("--store <dir>", "store directory (not in use by a running process)")
    .requiredOption("--out <dir>", "archive directory: manifest.json and chunks/ (created if missing)")
    .option(
      "--chunk-commits <n>",
      "most commits in one chunk; a chunk also ends at its epoch's last commit",
      integer(1, 1_000_000),
      DEFAULT_ARCHIVE_WRITER_OPTIONS.chunkCommits,
    )
    .action(async (opts: { store: string; out: string; chunkCommits: number }) => {
      const store = await openStore(opts.store);
      try {
        const result = await exportArchive(
          store,
          opts.out,
          { chunkCommits: opts.chunkCommits },
          { onChunk: (c) => console.log(chunkLine(c)) },
        );
        for (const line of summaryLines(result)) console.log(line);
      } finally {
        await store.close();
      }
    });
  return archive;
}

async function openStore(dir: string): Promise<Store> {
  try {
    return await Store.open(dir, { mustExist: true });
  } catch (e) {
    if (e instanceof StoreError && e.code === "not_found" && existsSync(dir))
      throw new Error(`--store ${dir} is not a dagsync store (it has no chain/ and blocks/ databases)`);
    throw e;
  }
}

/** One line per chunk written, as `archive export` prints it. */
export function chunkLine(c: ManifestChunk): string {
  return `wrote ${c.file}: commits ${c.first}..${c.last} of epoch ${c.epoch}, ${c.bytes} bytes`;
}

/** The summary after the chunk lines. */
export function summaryLines(r: ExportResult): string[] {
  const lines: string[] = [];
  if (r.startedFromPruned)
    lines.push(
      `the store holds no commits below ${r.first} (pruned, or started from a checkpoint): the archive begins at ${r.first}, and commits below it are in no chunk`,
    );
  const holds =
    r.first === undefined
      ? "holds no commits yet"
      : `holds commits ${r.first}..${r.last} in ${r.chunks} chunk${r.chunks === 1 ? "" : "s"}`;
  const wrote =
    r.written.length === 0
      ? "nothing new written"
      : `wrote ${r.written.length} chunk${r.written.length === 1 ? "" : "s"}, ${r.bytesWritten} bytes`;
  const waiting =
    r.waiting === undefined
      ? ""
      : `; commits ${r.waiting.first}..${r.waiting.last} wait for their chunk to be complete`;
  lines.push(`archive ${r.archive} ${holds}; ${wrote}${waiting}`);
  return lines;
}
