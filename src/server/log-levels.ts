/** pino's levels, most severe first; `silent` logs nothing. Kept apart from logging.ts so the CLI can name them without loading pino. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
