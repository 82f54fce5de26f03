/**
 * Configuration of the long-running commands (`serve`, `sync`) from three places, the first that
 * sets an option winning:
 *
 *   1. a flag:                    --peer 10.0.0.1:9100 --peer 10.0.0.2:9100
 *   2. the environment:           DAGSYNC_PEER=10.0.0.1:9100,10.0.0.2:9100   (DAGSYNC_ + flag in SNAKE_CASE)
 *   3. a JSON file (--config F):  { "peer": ["10.0.0.1:9100", "10.0.0.2:9100"], "max-inflight-mib": 256 }
 *   4. the option's default.
 *
 * Keys of the file are the flag names without dashes' prefix (kebab-case, or camelCase); values
 * are strings, numbers, booleans, or arrays for repeatable flags. Every value goes through the
 * flag's own parser, so a bad value is reported like a bad flag, naming the key and the file.
 * Repeatable flags given on the command line replace the file's list rather than extend it.
 */
import { readFile } from "node:fs/promises";
import { type Command, InvalidArgumentError, type Option } from "commander";

/** The environment variable of a flag: `--max-inflight-mib` → `DAGSYNC_MAX_INFLIGHT_MIB`. */
export function envName(option: Option): string {
  return `DAGSYNC_${option.name().replaceAll("-", "_").toUpperCase()}`;
}

/**
 * Adds `--config <file>` and environment variables to `command`. `required` lists flags (long
 * names without dashes) that must be set by one of the sources; commander's own `requiredOption`
 * cannot be used for them because it is checked before the file is read.
 */
export function withConfig(command: Command, required: readonly string[]): Command {
  // Commander's own Option.env() would apply a repeatable flag's variable on top of its default
  // list and is checked before the file is read; the hook below applies both in order instead.
  for (const option of command.options) option.description += ` (env: ${envName(option)})`;
  command.option("--config <file>", "JSON file of options (flags and DAGSYNC_* variables override it)");
  command.hook("preAction", async (cmd) => {
    applyEnvironment(cmd);
    const file = cmd.getOptionValue("config") as string | undefined;
    if (file !== undefined) await applyConfigFile(cmd, file);
    for (const name of required) {
      const option = findOption(cmd, name)!;
      const value: unknown = cmd.getOptionValue(option.attributeName());
      if (value === undefined || (Array.isArray(value) && value.length === 0))
        throw new Error(
          `missing ${option.long}: give it as a flag, as ${envName(option)}, or as "${name}" in a --config file`,
        );
    }
  });
  return command;
}

function findOption(cmd: Command, key: string): Option | undefined {
  return cmd.options.find((o) => o.name() === key || o.attributeName() === key);
}

function applyEnvironment(cmd: Command): void {
  for (const option of cmd.options) {
    const name = envName(option);
    const raw = process.env[name];
    if (raw === undefined || option.name() === "config") continue;
    if (cmd.getOptionValueSource(option.attributeName()) === "cli") continue;
    const value = !option.required && !option.optional ? parseBoolean(raw, name) : raw;
    cmd.setOptionValueWithSource(option.attributeName(), parseValue(option, value, name), "env");
  }
}

function parseBoolean(raw: string, name: string): boolean {
  if (/^(1|true|yes)$/i.test(raw)) return true;
  if (/^(0|false|no|)$/i.test(raw)) return false;
  throw new Error(`${name}=${raw}: expected true or false`);
}

async function applyConfigFile(cmd: Command, file: string): Promise<void> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(
      `--config ${file}: ${code === "ENOENT" ? "file not found" : code !== undefined ? "cannot be read" : `not valid JSON (${(e as Error).message})`}`,
    );
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new Error(`--config ${file}: expected a JSON object of options, e.g. {"store": "node-store"}`);
  const settable = cmd.options.filter((o) => o.name() !== "config" && o.name() !== "help");
  for (const [key, raw] of Object.entries(parsed)) {
    const option = findOption(cmd, key);
    if (option === undefined || option.name() === "config")
      throw new Error(
        `--config ${file}: unknown option "${key}" (known: ${settable.map((o) => o.name()).join(", ")})`,
      );
    const source = cmd.getOptionValueSource(option.attributeName());
    if (source === "cli" || source === "env") continue;
    cmd.setOptionValueWithSource(
      option.attributeName(),
      parseValue(option, raw, `--config ${file}: "${key}"`),
      "config",
    );
  }
}

/** Runs `raw` through the flag's parser; errors start with `where` (the variable or file key). */
function parseValue(option: Option, raw: unknown, where: string): unknown {
  const bad = (why: string) => new Error(`${where}: ${why}`);
  if (!option.required && !option.optional) {
    if (typeof raw !== "boolean") throw bad("expected true or false");
    return raw;
  }
  const repeatable = Array.isArray(option.defaultValue);
  const items = Array.isArray(raw) ? raw : [raw];
  if (!repeatable && items.length !== 1) throw bad("expected one value, not a list");
  let value: unknown = repeatable ? [] : undefined;
  for (const item of items) {
    if (typeof item !== "string" && typeof item !== "number") throw bad("expected a string or a number");
    try {
      value = option.parseArg === undefined ? String(item) : option.parseArg(String(item), value);
    } catch (e) {
      if (e instanceof InvalidArgumentError) throw bad(`${String(item)}: ${e.message}`);
      throw e;
    }
  }
  return value;
}
