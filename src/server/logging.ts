import { pino, type Logger as PinoLogger, type DestinationStream } from "pino";
import pretty from "pino-pretty";

/**
 * The server's structured log: pino, one JSON object per line (ids as fields,
 * so logs can be searched by worker, rollout or attempt), or readable lines
 * when the output is a terminal.
 */
export type Logger = PinoLogger;

import type { LogLevel } from "./log-levels.js";

export { LOG_LEVELS, type LogLevel } from "./log-levels.js";

export interface LoggerOptions {
  level?: LogLevel;
  /** Readable lines instead of JSON; default: whether stdout is a terminal. */
  pretty?: boolean;
  /** Where lines go; default stdout. */
  destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? "info";
  const readable = options.pretty ?? process.stdout.isTTY === true;
  if (readable) {
    // Synchronous, in this thread: log lines and the process's own output stay in order.
    const stream = pretty({ sync: true, singleLine: true, colorize: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", destination: options.destination ?? 1 });
    return pino({ level, base: undefined }, stream);
  }
  return pino(
    // Level names, not pino's numbers: a log line should read without a lookup table.
    { level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } },
    // Written asynchronously (sonic-boom): a line goes out at once when none is being written, and lines that come
    // while one is are written together, instead of one blocking write(2) each on the dispatch path (failed
    // attempts and retries log a line each). pino flushes what is pending when the process exits.
    options.destination ?? pino.destination({ sync: false }),
  );
}

/**
 * A logger whose lines are handed to `log` as plain text (message and fields),
 * for callers that still configure the server with `log: (line) => …`
 * (tests silence the server with `log: () => {}`).
 */
export function loggerForLines(log: (line: string) => void, level: LogLevel = "info"): Logger {
  return pino(
    { level, base: undefined, timestamp: false },
    {
      write(json: string) {
        const { level: _level, msg, ...fields } = JSON.parse(json) as Record<string, unknown>;
        const extra = Object.entries(fields).map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`);
        log([msg, ...extra].filter((part) => part !== undefined && part !== "").join(" "));
      },
    },
  );
}

/** The `log(line)` shape older call sites use: one info line. */
export const lineLog =
  (logger: Logger) =>
  (line: string): void =>
    logger.info(line);
