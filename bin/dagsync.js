#!/usr/bin/env node
// The dagsync CLI. Runs the compiled modules in dist/ (`npm run build`; `npm ci` builds them) when
// they are newer than every source file, and the TypeScript sources through tsx's loader
// otherwise, so that an edited checkout never runs stale code. dist/ starts faster and keeps
// ≈20 MB less resident (no loader, no source transforms; BENCHMARKS.md).
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;

function newestSource(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
  }
  return newest;
}

function distIsCurrent() {
  try {
    return statSync(join(root, "dist/.built")).mtimeMs >= newestSource(join(root, "src"));
  } catch {
    return false;
  }
}

let cli;
if (distIsCurrent()) {
  cli = await import("../dist/cli/main.js");
} else {
  const { register } = await import("tsx/esm/api");
  register();
  cli = await import("../src/cli/main.ts");
}
process.exitCode = await cli.main(process.argv);
