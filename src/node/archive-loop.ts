/**
 * `serve --archive-out`: keeps an archive (DESIGN.md §10) current while the store is served. The
 * export runs at start and then `exportIntervalMs` after each run ends, so never two at once; what
 * it writes is logged, and its errors are logged and retried at the next interval, never fatal.
 * stop() aborts a run between commits (the chunk being written stays unpublished) and waits for it.
 */
import type { Logger } from "pino";
import { type ArchiveWriterOptions, resolveArchiveWriterOptions } from "../archive/options.js";
import { exportArchive } from "../archive/writer.js";
import type { Store } from "../store/index.js";

export interface ArchiveLoopConfig {
  readonly store: Store;
  /** The archive directory. */
  readonly out: string;
  readonly log: Logger;
  readonly options?: Partial<ArchiveWriterOptions> | undefined;
}

export interface RunningArchiveLoop {
  /** Resolves when the run in progress (if any) has ended; for tests and `serve` status. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

export function startArchiveLoop(config: ArchiveLoopConfig): RunningArchiveLoop {
  const { store, out, log } = config;
  const options = resolveArchiveWriterOptions(config.options);
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();

  const runOnce = async () => {
    try {
      const r = await exportArchive(store, out, options, {
        signal: abort.signal,
        onChunk: (c) =>
          log.info(
            { archive: out, file: c.file, first: c.first, last: c.last, epoch: c.epoch, bytes: c.bytes },
            "archive chunk written",
          ),
      });
      if (r.startedFromPruned)
        log.warn(
          { archive: out, first: r.first },
          "archive begins at the store's lowest commit: the store is pruned, commits below it are in no chunk",
        );
      if (r.written.length > 0)
        log.info(
          {
            archive: out,
            chunks: r.written.length,
            bytes: r.bytesWritten,
            commits: `${r.first}..${r.last}`,
            waiting: r.waiting === undefined ? undefined : `${r.waiting.first}..${r.waiting.last}`,
          },
          "archive export",
        );
    } catch (e) {
      if (abort.signal.aborted) return;
      log.error(
        {
          archive: out,
          err: e instanceof Error ? e.message : String(e),
          retryInMs: options.exportIntervalMs,
        },
        "archive export failed",
      );
    }
  };

  const schedule = (delayMs: number) => {
    timer = setTimeout(() => {
      timer = undefined;
      running = runOnce().finally(() => {
        if (!abort.signal.aborted) schedule(options.exportIntervalMs);
      });
    }, delayMs);
  };
  schedule(0);

  return {
    idle: () => running,
    async stop() {
      abort.abort();
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
  };
}
