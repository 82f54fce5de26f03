/**
 * Sync progress for people: a progress bar (commits, blocks, MB/s, ETA, peers) when stderr is a
 * terminal, a log line every few seconds otherwise. cli-progress is loaded only for the bar
 * (optional-module.ts); without it a terminal gets the log lines too.
 */
import type CliProgress from "cli-progress";
import type { Logger } from "pino";
import type { SyncEngine } from "../sync/index.js";
import { loadOptional } from "./optional-module.js";

/** Known peers by source and how many of them are working, e.g. "committee 3/3, bootstrap 1/1, exchange 2/4". */
export function peersBySource(engine: SyncEngine): Record<string, string> {
  const out: Record<string, [number, number]> = {};
  for (const p of engine.peerStatuses()) {
    const c = out[p.source] ?? [0, 0];
    out[p.source] = c;
    c[1]++;
    if (p.working) c[0]++;
  }
  return Object.fromEntries(Object.entries(out).map(([s, [w, k]]) => [s, `${w}/${k}`]));
}

function peersText(engine: SyncEngine): string {
  const by = peersBySource(engine);
  const parts = Object.entries(by).map(([s, n]) => `${s} ${n}`);
  return parts.length === 0 ? "none" : parts.join(", ");
}

export interface ProgressReporter {
  stop(): void;
}

/** Interval of progress log lines when stderr is not a terminal, ms. */
const LOG_INTERVAL_MS = 5_000;
/** Refresh interval of the bar, ms. */
const BAR_INTERVAL_MS = 250;

export function reportProgress(
  engine: SyncEngine,
  log: Logger,
  tty = process.stderr.isTTY === true,
): ProgressReporter {
  const started = performance.now();
  const startHeight = engine.progress.highestSynced;
  const rate = () => {
    const p = engine.progress;
    const secs = Math.max((performance.now() - started) / 1000, 0.001);
    const commitsPerSec = p.commitsApplied / secs;
    return {
      p,
      commitsPerSec,
      blocksPerSec: p.blocksApplied / secs,
      mbPerSec: p.bytesApplied / secs / 1e6,
      etaSecs: commitsPerSec > 0 ? Math.max(0, p.target - p.highestSynced) / commitsPerSec : Number.NaN,
    };
  };
  const cliProgress = tty ? loadOptional<typeof CliProgress>("cli-progress") : undefined;
  if (tty && cliProgress === undefined)
    log.info("cli-progress is not installed: sync progress as log lines instead of a bar");
  if (cliProgress === undefined) {
    const timer = setInterval(() => {
      const r = rate();
      log.info(
        {
          commit: r.p.highestSynced,
          target: r.p.target,
          commitsPerSec: Math.round(r.commitsPerSec),
          blocksPerSec: Math.round(r.blocksPerSec),
          mbPerSec: Number(r.mbPerSec.toFixed(1)),
          peers: r.p.usablePeers,
          peersBySource: peersBySource(engine),
          ...(r.p.stall === undefined ? {} : { stalled: r.p.stall.reason }),
        },
        r.p.stall === undefined ? "sync progress" : "sync progress (stalled: see the warning above)",
      );
    }, LOG_INTERVAL_MS);
    return { stop: () => clearInterval(timer) };
  }
  const bar = new cliProgress.SingleBar(
    {
      format:
        " {bar} {value}/{total} commits | {blocks} blocks | {mbps} MB/s | ETA {eta_s} | {peers} peers ({sources}) | {phase}",
      hideCursor: true,
      etaBuffer: 50,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(Math.max(engine.progress.target, 1), startHeight, {
    blocks: 0,
    mbps: "0.0",
    peers: 0,
    sources: peersText(engine),
    phase: "starting",
    eta_s: "?",
  });
  const timer = setInterval(() => {
    const r = rate();
    bar.setTotal(Math.max(r.p.target, r.p.highestSynced, 1));
    bar.update(r.p.highestSynced, {
      blocks: r.p.blocksApplied,
      mbps: r.mbPerSec.toFixed(1),
      peers: r.p.usablePeers,
      sources: peersText(engine),
      phase: r.p.phase,
      eta_s: Number.isNaN(r.etaSecs) ? "?" : `${r.etaSecs.toFixed(0)}s`,
    });
  }, BAR_INTERVAL_MS);
  return {
    stop: () => {
      clearInterval(timer);
      const p = engine.progress;
      bar.update(p.highestSynced, { phase: p.phase });
      bar.stop();
    },
  };
}
