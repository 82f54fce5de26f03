/**
 * Logs: pino JSON on stderr (stdout stays free for command output such as `checkpoint export`),
 * pretty and colored when stderr is a terminal. DAGSYNC_LOG_LEVEL sets the level (default info).
 * pino-pretty is loaded only then (optional-module.ts); without it the terminal gets JSON too.
 */
import pino, { type Logger } from "pino";
import type PinoPretty from "pino-pretty";
import { loadOptional } from "./optional-module.js";

export function createLogger(name: string, options: { level?: string; pretty?: boolean } = {}): Logger {
  const level = options.level ?? process.env.DAGSYNC_LOG_LEVEL ?? "info";
  const usePretty = options.pretty ?? process.stderr.isTTY === true;
  const pretty = usePretty ? loadOptional<typeof PinoPretty>("pino-pretty") : undefined;
  const stream =
    pretty !== undefined
      ? pretty({
          destination: 2,
          sync: true,
          colorize: true,
          translateTime: "HH:MM:ss.l",
          ignore: "pid,hostname",
        })
      : pino.destination({ dest: 2, sync: true });
  const log = pino({ name, level }, stream);
  if (usePretty && pretty === undefined)
    log.debug("pino-pretty is not installed: logging JSON (npm install pino-pretty for readable logs)");
  return log;
}

/** A logger that drops everything, for tests and embedded use. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
