#!/usr/bin/env node
// The dagsync CLI. Runs the compiled modules in dist/ (`npm run build`; `npm ci` builds them) when
// they are newer than every source file, and the TypeScript sources through tsx's loader
// otherwise (tsx is a dev dependency), so that an edited checkout never runs stale code. dist/
// starts faster and keeps ≈20 MB less resident (no loader, no source transforms; BENCHMARKS.md).
import { existsSync, readdirSync, statSync } from "node:fs";
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
    const built = statSync(join(root, "dist/.built")).mtimeMs;
    // An installed package carries dist/ and no sources: nothing can be newer.
    if (!existsSync(join(root, "src"))) return true;
    return built >= newestSource(join(root, "src"));
  } catch {
    return false;
  }
}

/**
 * tsx's loader, or undefined where it is not installed: it is a dev dependency (running the
 * sources is for a checkout being worked on); an install without dev dependencies runs dist/.
 */
async function tsxLoader() {
  try {
    return await import("tsx/esm/api");
  } catch (e) {
    if (e?.code === "ERR_MODULE_NOT_FOUND") return undefined;
    throw e;
  }
}

let cli;
if (distIsCurrent()) {
  cli = await import("../dist/cli/main.js");
} else {
  const tsx = await tsxLoader();
  if (tsx !== undefined) {
    tsx.register();
    cli = await import("../src/cli/main.ts");
  } else {
    try {
      cli = await import("../dist/cli/main.js");
    } catch (e) {
      if (e?.code !== "ERR_MODULE_NOT_FOUND") throw e;
      console.error(
        "dagsync: not built: dist/ is missing and tsx (a dev dependency, to run the sources) is not installed; " +
          "run `npm ci` (or `npm install`) with dev dependencies, which builds dist/",
      );
      process.exit(1);
    }
    // dist/ exists but is older than src/: still the best there is without tsx.
    console.error(
      "dagsync: dist/ is older than src/ and tsx is not installed: running dist/ (npm run build)",
    );
  }
}
process.exitCode = await cli.main(process.argv);
