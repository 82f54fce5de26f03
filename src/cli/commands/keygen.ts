/** `dagsync keygen`: a new Ed25519 key file. */
import type { Command } from "commander";
import { toHex } from "../../core/bytes.js";
import { writeKeyFile } from "../../crypto/key-file.js";
import { Ed25519Signer } from "../../crypto/keys.js";

/** Adds the command to `program`; returns it. */
export function addKeygen(program: Command): Command {
  return program
    .command("keygen")
    .description("write a new Ed25519 key file (mode 0600) and print its public key")
    .requiredOption("--out <file>", "key file to write")
    .action(async (opts: { out: string }) => {
      const signer = Ed25519Signer.generate();
      await writeKeyFile(opts.out, signer);
      console.log(`wrote ${opts.out}\npublic key ${toHex(signer.publicKey)}`);
    });
}
