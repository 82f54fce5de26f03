/**
 * Logs: pino JSON on stderr (stdout stays free for command output such as `checkpoint export`),
 * pretty and colored when stderr is a terminal. DAGSYNC_LOG_LEVEL sets the level (default info).
 */
import pino, { type Logger } from "pino";
import pretty from "pino-pretty";

export function createLogger(name: string, options: { level?: string; pretty?: boolean } = {}): Logger {
  const level = options.level ?? process.env.DAGSYNC_LOG_LEVEL ?? "info";
  const usePretty = options.pretty ?? process.stderr.isTTY === true;
  const stream = usePretty
    ? pretty({
        destination: 2,
        sync: true,
        colorize: true,
        translateTime: "HH:MM:ss.l",
        ignore: "pid,hostname",
      })
    : pino.destination({ dest: 2, sync: true });
  return pino({ name, level }, stream);
}

/** A logger that drops everything, for tests and embedded use. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
