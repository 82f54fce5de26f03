#!/usr/bin/env node
// Runs every test/**/*.test.ts with node:test through tsx. Node 20's --test does not expand globs
// or pick up .ts files in a directory, so the file list is built here. Arguments filter by path.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

function find(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? find(join(dir, e.name)) : e.name.endsWith(".test.ts") ? [join(dir, e.name)] : [],
  );
}

const filters = process.argv.slice(2);
const files = find("test")
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(" ")}`);
  process.exit(1);
}
// The network fault tests (test/net) time recoveries on a live devnet of several processes: they
// run after the rest, alone, so that another heavy file sharing the two cores cannot stretch them.
const isNet = (f) => f.startsWith(join("test", "net"));
const run = (list, concurrency) =>
  list.length === 0
    ? 0
    : (spawnSync(
        process.execPath,
        [
          "--import",
          "tsx",
          "--import",
          "./test/helpers/exit-on-drain.ts",
          "--test",
          `--test-concurrency=${concurrency}`,
          "--test-timeout=300000",
          ...list,
        ],
        { stdio: "inherit" },
      ).status ?? 1);
const first = run(
  files.filter((f) => !isNet(f)),
  2,
);
const second = run(files.filter(isNet), 1);
process.exit(first !== 0 ? first : second);
