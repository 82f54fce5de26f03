#!/usr/bin/env node
// Compiles src/ to dist/ (tsconfig.build.json, with .d.ts for the library's `exports`) for the
// `dagsync` command and the library. bin/dagsync.js runs dist/ when it is current, and the
// TypeScript sources through tsx (a dev dependency) in an edited checkout. `npm ci` and `npm pack`
// run this through `prepare`; the published package carries dist/ ("files" in package.json).
// Without TypeScript (an install that omits dev dependencies) it does nothing.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
let tsc;
try {
  tsc = join(
    dirname(createRequire(join(root, "package.json")).resolve("typescript/package.json")),
    "bin/tsc",
  );
} catch {
  console.error("compile: typescript is not installed; dagsync will run its sources through tsx");
  process.exit(0);
}
const dist = join(root, "dist");
rmSync(dist, { recursive: true, force: true });
const result = spawnSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], {
  stdio: "inherit",
});
if (result.status !== 0) {
  rmSync(dist, { recursive: true, force: true });
  process.exit(result.status ?? 1);
}
// Files the code reads at run time, next to the modules that read them.
copyFileSync(join(root, "src/gen/dagsync.binpb"), join(dist, "gen/dagsync.binpb"));
// Written last: bin/dagsync.js runs dist/ only when this is newer than every source file.
if (existsSync(join(dist, "cli/main.js")))
  writeFileSync(join(dist, ".built"), `${new Date().toISOString()}\n`);
