/**
 * A test file's process should exit once its tests and hooks are done. Two ways it may not:
 *
 * - Node's own exit path spins. Seen in this file's process (CI twice, locally once, after its
 *   test passed): the event loop had drained, and the main thread was in
 *   `node::Environment::CleanupHandles`, called from `FreeEnvironment`, calling `uv_run` over and
 *   over at 100 % CPU (gdb backtrace and perf profile, 2026-12-05): some libuv request never
 *   completed, and Node waits for every one at a natural exit. The runner's per-file timeout then
 *   cancels the file, failing the run. `process.exit()` does not take that path, so the watch ends
 *   the process with it as soon as the loop drains (`beforeExit`), with the exit code the runner
 *   has set (1 when a test failed): every test and hook has run and reported by then.
 * - Something keeps the event loop alive. If the process is still running a while later, this
 *   prints what (the active handles) and which functions are running (a short CPU profile,
 *   written beside the report), then ends it the same way, so a hang seen only in CI leaves
 *   evidence instead of a bare runner timeout.
 */
import { writeFileSync, writeSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Arms the watch; call at the end of the file's last `after` hook. The timer never holds the process. */
export function watchForHang(label: string, afterMs = 10_000, profileMs = 3_000): void {
  process.once("beforeExit", () => process.exit());
  const timer = setTimeout(async () => {
    await report(label, afterMs, profileMs);
    writeSync(2, `hang-watch ${label}: ending the process (exit code ${process.exitCode ?? 0})\n`);
    process.exit();
  }, afterMs);
  timer.unref();
}

async function report(label: string, afterMs: number, profileMs: number): Promise<void> {
  const say = (line: string) => writeSync(2, `hang-watch ${label}: ${line}\n`);
  say(
    `still running ${afterMs} ms after its tests; active: ${JSON.stringify(process.getActiveResourcesInfo())}`,
  );
  const session = new Session();
  session.connect();
  try {
    await session.post("Profiler.enable");
    await session.post("Profiler.start");
    await new Promise((r) => setTimeout(r, profileMs).unref());
    const { profile } = await session.post("Profiler.stop");
    const file = join(tmpdir(), `dagsync-hang-${process.pid}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    const self = new Map<string, number>();
    for (const node of profile.nodes) {
      const f = node.callFrame;
      const key = `${f.functionName || "(anonymous)"} ${f.url.split("/").slice(-2).join("/")}:${f.lineNumber + 1}`;
      self.set(key, (self.get(key) ?? 0) + (node.hitCount ?? 0));
    }
    const total = [...self.values()].reduce((a, b) => a + b, 0) || 1;
    const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 15);
    say(
      `profile ${file}; self time:\n${top.map(([k, n]) => `  ${((100 * n) / total).toFixed(1)}% ${k}`).join("\n")}`,
    );
  } catch (e) {
    say(`profile failed: ${String(e)}`);
  } finally {
    session.disconnect();
  }
}
