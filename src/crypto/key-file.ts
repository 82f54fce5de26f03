/**
 * Key files: JSON `{"type":"ed25519","private_key":"<64 hex>","public_key":"<64 hex>"}`, written
 * with mode 0600 (they hold a private key). Reading one checks every field and that the public
 * key matches the private key, and names the file in every error.
 */
import { chmod, readFile, writeFile } from "node:fs/promises";
import { fromHex, toHex } from "../core/bytes.js";
import { DagsyncError } from "../core/errors.js";
import { Ed25519Signer } from "./keys.js";

export class KeyFileError extends DagsyncError {
  override readonly name = "KeyFileError";
  constructor(message: string) {
    super("bad_key_file", message);
  }
}

export async function writeKeyFile(path: string, signer: Ed25519Signer): Promise<void> {
  const body = {
    type: "ed25519",
    private_key: toHex(signer.seed),
    public_key: toHex(signer.publicKey),
  };
  await writeFile(path, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
  await chmod(path, 0o600); // writeFile's mode applies only when it creates the file
}

export async function readKeyFile(path: string): Promise<Ed25519Signer> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new KeyFileError(
      `key file ${path}: ${code === "ENOENT" ? "not found" : `cannot be read (${code})`}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new KeyFileError(
      `key file ${path}: not JSON (expected {"type":"ed25519","private_key":…,"public_key":…})`,
    );
  }
  const obj = parsed as Record<string, unknown>;
  if (typeof obj !== "object" || obj === null || obj.type !== "ed25519")
    throw new KeyFileError(`key file ${path}: "type" must be "ed25519"`);
  const hex = obj.private_key;
  if (typeof hex !== "string" || !/^[0-9a-f]{64}$/i.test(hex))
    throw new KeyFileError(`key file ${path}: "private_key" must be 64 hex digits`);
  const signer = new Ed25519Signer(fromHex(hex));
  if (
    obj.public_key !== undefined &&
    (typeof obj.public_key !== "string" || obj.public_key.toLowerCase() !== toHex(signer.publicKey))
  )
    throw new KeyFileError(`key file ${path}: "public_key" does not match "private_key"`);
  return signer;
}
