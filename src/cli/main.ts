/**
 * The `dagsync` command. Each subcommand (one file each in commands/) parses and checks its flags,
 * then hands over to a module; every failure a user can cause ends as one line naming the flag,
 * file or peer, and exit code 1. Importing this module starts nothing: bin/dagsync.js calls main.
 */
import { readFileSync } from "node:fs";
import { logVerbosity, setLogVerbosity } from "@grpc/grpc-js";
import { Command, CommanderError } from "commander";
import { addArchive } from "./commands/archive.js";
import { addCheckpoint } from "./commands/checkpoint.js";
import { addDemo } from "./commands/demo.js";
import { addDevnet } from "./commands/devnet.js";
import { addKeygen } from "./commands/keygen.js";
import { addPrune } from "./commands/prune.js";
import { addServe } from "./commands/serve.js";
import { addStatus } from "./commands/status.js";
import { addSync } from "./commands/sync.js";

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/** The `dagsync` program with every subcommand, in the order `--help` lists them. */
export function createProgram(): Command {
  const program = new Command()
    .name("dagsync")
    .description(
      "State sync and checkpoints for DAG-BFT chains: serve, fetch, verify and stream committed sub-DAGs.",
    )
    .version(packageVersion(), "-V, --version", "print the dagsync version")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  addKeygen(program);
  addDevnet(program);
  addServe(program);
  addSync(program);
  addCheckpoint(program);
  addPrune(program);
  addArchive(program);
  addStatus(program);
  addDemo(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // grpc-js writes its own errors to stderr, e.g. "E No address added out of total 1 resolved" on
  // top of our one-line "cannot listen on …: the port is already in use". Its log stays available
  // with GRPC_VERBOSITY (or GRPC_NODE_VERBOSITY) or DAGSYNC_DEBUG.
  if (!process.env.GRPC_VERBOSITY && !process.env.GRPC_NODE_VERBOSITY && !process.env.DAGSYNC_DEBUG)
    setLogVerbosity(logVerbosity.NONE);
  try {
    await createProgram().parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode; // commander already printed the message
    const message = e instanceof Error ? e.message : String(e);
    console.error(`dagsync: ${message}`);
    if (process.env.DAGSYNC_DEBUG) console.error(e);
    return 1;
  }
}
