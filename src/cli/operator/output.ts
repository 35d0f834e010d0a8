import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampMs, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { SingleBar } from "cli-progress";
import Table from "cli-table3";
import pc from "picocolors";

/**
 * How operator commands print: aligned tables for people, one JSON object per
 * line for scripts (--json), colours only on a terminal, times relative ("12 s
 * ago") with absolute ones under --wide.
 */
export interface OutputOptions {
  json: boolean;
  wide: boolean;
}

const colours = pc.createColors(process.stdout.isTTY === true && !("NO_COLOR" in process.env));

/** One protobuf message as a line of JSON (proto3 JSON mapping: camelCase names, enum names). */
export function printJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>) {
  process.stdout.write(`${JSON.stringify(toJson(schema, message))}\n`);
}

/** A table without borders: columns aligned with two spaces, a header line. */
export function printTable(head: string[], rows: string[][]) {
  const table = new Table({
    head: head.map((h) => colours.bold(h)),
    chars: {
      top: "", "top-mid": "", "top-left": "", "top-right": "",
      bottom: "", "bottom-mid": "", "bottom-left": "", "bottom-right": "",
      left: "", "left-mid": "", mid: "", "mid-mid": "", right: "", "right-mid": "", middle: "  ",
    },
    style: { head: [], border: [], "padding-left": 0, "padding-right": 0 },
  });
  table.push(...rows);
  process.stdout.write(`${table.toString()}\n`);
}

/** Label: value lines, labels aligned. */
export function printFields(fields: [string, string][]) {
  const width = Math.max(...fields.map(([label]) => label.length));
  for (const [label, value] of fields) process.stdout.write(`${colours.bold(label.padEnd(width))}  ${value}\n`);
}

const STATUS_COLOURS: Record<string, (text: string) => string> = {
  IDLE: colours.green,
  SUCCEEDED: colours.green,
  BUSY: colours.cyan,
  RUNNING: colours.cyan,
  PREPARING: colours.cyan,
  QUEUING: colours.yellow,
  REQUEUING: colours.yellow,
  UNKNOWN: colours.yellow,
  OFFLINE: colours.dim,
  CANCELLED: colours.dim,
  FAILED: colours.red,
  TIMEOUT: colours.red,
  UNRESPONSIVE: colours.red,
  QUARANTINED: colours.magenta,
};

/** An enum value's short name, coloured by what it means on a terminal. */
export function status(name: string | undefined): string {
  const text = name ?? "?";
  return (STATUS_COLOURS[text] ?? ((t: string) => t))(text);
}

/** "12 s ago", "3 min ago", "in 5 s"; "-" when unset. With `wide`, the ISO time follows. */
export function when(timestamp: Timestamp | undefined, wide: boolean, now = Date.now()): string {
  if (timestamp === undefined) return "-";
  const ms = timestampMs(timestamp);
  const relative = relativeTime(now - ms);
  return wide ? `${new Date(ms).toISOString()} (${relative})` : relative;
}

export function relativeTime(elapsedMs: number): string {
  const future = elapsedMs < 0;
  const seconds = Math.abs(elapsedMs) / 1000;
  const text =
    seconds < 60
      ? `${Math.floor(seconds)} s`
      : seconds < 3600
        ? `${Math.floor(seconds / 60)} min`
        : seconds < 86_400
          ? `${Math.floor(seconds / 3600)} h`
          : `${Math.floor(seconds / 86_400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

export function labelsText(labels: Record<string, string>): string {
  const entries = Object.entries(labels);
  return entries.length === 0 ? "-" : entries.map(([k, v]) => `${k}=${v}`).join(",");
}

/** Text cut to `max` characters, the cut marked with "…" so it is never taken for the whole. */
export const truncate = (text: string, max: number) => (text.length <= max ? text : `${text.slice(0, max - 1)}…`);

/** Table cells of results: this many characters, more under --wide. */
export const RESULT_CELL = { narrow: 40, wide: 200 } as const;

/** A google.protobuf.Value (a result, an input) as compact JSON, cut to `max` when given; "-" when unset. */
export function jsonText(value: Value | undefined, max?: number): string {
  if (value === undefined) return "-";
  const text = JSON.stringify(toJson(ValueSchema, value));
  return max === undefined ? text : truncate(text, max);
}

/** A bar on stderr when it is a terminal; nothing otherwise (pipes get no control characters). */
export function progressBar(what: string, total: number): SingleBar | undefined {
  if (process.stderr.isTTY !== true) return undefined;
  const bar = new SingleBar({ format: `{bar} {value}/{total} ${what} ({percentage}%, {duration_formatted})`, stream: process.stderr, hideCursor: true });
  bar.start(total, 0);
  return bar;
}
