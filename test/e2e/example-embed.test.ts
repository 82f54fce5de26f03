/**
 * The library as a user meets it (issue 12):
 * - `npm run example` (examples/embed.ts) runs by itself and exits 0: a full node embedded with
 *   createFullNode and a subscribeVerified stream each deliver N verified sub-DAGs, in order from
 *   commit 1, across the epoch boundary and past the generated chain into live commits;
 * - a TypeScript program can `import { createFullNode } from "dagsync"` (and "dagsync/client",
 *   "dagsync/core"): a fixture is compiled with tsc against the emitted declarations, resolved
 *   through package.json "exports".
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const tsc = join(
  dirname(createRequire(join(root, "package.json")).resolve("typescript/package.json")),
  "bin/tsc",
);
const N = 25;

function run(
  command: string,
  args: readonly string[],
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(`${command} ${args.join(" ")} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`),
      );
    }, timeoutMs);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("npm run example: the embedded full node and the verified subscriber each print N sub-DAGs, then it exits 0", async () => {
  const r = await run("npm", ["run", "-s", "example", "--", String(N)], 120_000);
  assert.equal(r.code, 0, `exit code\n${r.stdout}\n${r.stderr}`);
  const lines = r.stdout.split("\n");
  for (const who of ["full-node", "subscriber"]) {
    const indices = lines.filter((l) => l.startsWith(who)).map((l) => Number(/commit (\d+) /.exec(l)?.[1]));
    assert.deepEqual(
      indices,
      Array.from({ length: N }, (_, k) => k + 1),
      `${who}: commits 1..${N} in order\n${r.stdout}`,
    );
    const epochs = new Set(lines.filter((l) => l.startsWith(who)).map((l) => /epoch (\d+)/.exec(l)?.[1]));
    assert.ok(epochs.has("0") && epochs.has("1"), `${who}: across the epoch boundary (${[...epochs]})`);
  }
  assert.match(r.stdout, new RegExp(`^done: ${N} sub-DAGs from the full node .*, ${N} verified from `, "m"));
});

test('a TypeScript program type-checks against the emitted declarations: import { createFullNode } from "dagsync"', async () => {
  // Declarations only: the compiled JavaScript in dist/ (which bin/dagsync may be running) is left alone.
  const emit = await run(
    process.execPath,
    [tsc, "-p", "tsconfig.build.json", "--emitDeclarationOnly"],
    120_000,
  );
  assert.equal(emit.code, 0, `declaration build\n${emit.stdout}\n${emit.stderr}`);
  const check = await run(
    process.execPath,
    [tsc, "-p", join("test", "fixtures", "library-consumer", "tsconfig.json")],
    120_000,
  );
  assert.equal(check.code, 0, `the consumer fixture\n${check.stdout}\n${check.stderr}`);
});
