/**
 * The layering of DESIGN.md §1, checked on the source: every relative import in `src/` points to
 * its own folder or to a folder below it, and folders of the same rank (server, sync, gossip,
 * discovery; client and store) never import each other: `node` wires them. `devnet` sits just
 * under `cli`, so only `cli` and the library surface (`src/index.ts`) may import it.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "../../src");

/** Lower imports nothing higher; equal ranks are siblings that must not import each other. */
const RANK: Record<string, number> = {
  gen: 0,
  core: 1,
  crypto: 2,
  client: 3,
  store: 3,
  archive: 4,
  server: 5,
  sync: 5,
  gossip: 5,
  discovery: 5,
  node: 6,
  devnet: 7,
  cli: 8,
  "(root)": 9,
};

function* sources(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* sources(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

/** The top folder of `path` under src/, or "(root)" for src/index.ts and its like. */
function folderOf(path: string): string {
  const parts = relative(SRC, path).split("/");
  return parts.length === 1 ? "(root)" : parts[0]!;
}

test("every import in src/ points to its own folder or one below it (DESIGN §1)", () => {
  const violations: string[] = [];
  let imports = 0;
  for (const file of sources(SRC)) {
    const from = folderOf(file);
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
      imports++;
      const to = folderOf(resolve(dirname(file), m[1]!));
      if (to === from) continue;
      const a = RANK[from];
      const b = RANK[to];
      assert.ok(a !== undefined, `${relative(SRC, file)}: folder ${from} has no rank in this test (add it)`);
      assert.ok(b !== undefined, `${relative(SRC, file)}: folder ${to} has no rank in this test (add it)`);
      if (b >= a) violations.push(`${relative(SRC, file)} (${from}) imports ${m[1]} (${to})`);
    }
  }
  assert.ok(imports > 100, `only ${imports} imports were found: is the pattern right?`);
  assert.deepEqual(violations, []);
});
