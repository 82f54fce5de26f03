/** `dagsync demo` (`npm start`): a local devnet served by validator processes and a full node. */
import type { Command } from "commander";
import { DEFAULT_DEVNET_OPTIONS } from "../../devnet/chain.js";
import { runDemo } from "../../devnet/demo.js";
import { createLogger } from "../../node/logger.js";
import { hostPort, integer } from "../options.js";

/** Adds the command to `program`; returns it. */
export function addDemo(program: Command): Command {
  return program
    .command("demo")
    .description(
      "npm start: a local devnet served by validator processes and a full node catching up from them",
    )
    .option("--dir <dir>", "devnet folder (generated on first run)", ".devnet")
    .option("--once", "exit after the catch-up summary instead of following")
    .option("--listen <host:port>", "the full node's own sync address", hostPort, "127.0.0.1:9200")
    .option("--epochs <n>", "epochs, when generating", integer(1, 10_000), 4)
    .option("--commits-per-epoch <n>", "commits per epoch, when generating", integer(1), 1500)
    .option(
      "--base-port <n>",
      "validator i serves sync on base+2i",
      integer(1, 65000),
      DEFAULT_DEVNET_OPTIONS.basePort,
    )
    .option(
      "--round-ms <n>",
      "live round interval after catch-up, ms (0: no live production)",
      integer(0, 60_000),
      500,
    )
    .action(
      async (opts: {
        dir: string;
        once?: boolean;
        listen: string;
        epochs: number;
        commitsPerEpoch: number;
        basePort: number;
        roundMs: number;
      }) => {
        await runDemo({
          roundMs: opts.roundMs,
          dir: opts.dir,
          once: opts.once === true,
          listen: opts.listen,
          log: createLogger("dagsync"),
          devnet: { epochs: opts.epochs, commitsPerEpoch: opts.commitsPerEpoch, basePort: opts.basePort },
        });
      },
    );
}
