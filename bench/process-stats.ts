/**
 * CPU and memory of bench child processes, from Linux's /proc (NaN or zero elsewhere): shared by
 * the catch-up sections of bench/run.ts and bench/network.ts.
 */
import { readFileSync } from "node:fs";

/** User + system CPU of a process so far, seconds (Linux /proc; NaN elsewhere). */
export function processCpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return Number.NaN;
  }
}

/**
 * Samples /proc/PID/status every 50 ms for the peaks of RssAnon (the process's own memory) and
 * RssFile (file pages mapped into it: the node binary and LevelDB's memory-mapped table files,
 * which the kernel can reclaim). maxRSS adds the two, so it grows with the store's size even
 * when the process's own memory does not. Zero where /proc is absent.
 */
export function peakMemory(pid: number): { stop: () => { anonMb: number; fileMb: number } } {
  let anon = 0;
  let file = 0;
  const sample = () => {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
      anon = Math.max(anon, kb("RssAnon"));
      file = Math.max(file, kb("RssFile"));
    } catch {
      // the process has exited, or no /proc
    }
  };
  const timer = setInterval(sample, 50);
  return {
    stop: () => {
      clearInterval(timer);
      return { anonMb: anon / 1024, fileMb: file / 1024 };
    },
  };
}

/** The CPU of several processes so far, summed. */
export const processesCpuSeconds = (pids: readonly (number | undefined)[]): number =>
  pids.reduce<number>((sum, pid) => sum + processCpuSeconds(pid), 0);
