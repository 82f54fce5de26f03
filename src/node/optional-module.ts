/**
 * Loads a CommonJS package that only improves the output for people (pino-pretty, cli-progress)
 * when it is first needed, and not at all otherwise: a process whose stderr is not a terminal
 * (services, tests, pipes) never loads it, and an install without it still runs, with plain
 * output instead (the callers say so once).
 */
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/** The package `name`, or undefined when it is not installed. */
export function loadOptional<T>(name: string): T | undefined {
  try {
    return require(name) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND") return undefined;
    throw e;
  }
}
