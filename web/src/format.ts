// Pure formatting for the tables; unit-tested in test/web/format.test.ts.
import { toJson } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";

/** "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "in 4 s" for a time ahead of the page's clock. */
export function formatRelative(ms: number | undefined, nowMs: number): string {
  if (ms === undefined) return "never";
  const delta = nowMs - ms;
  const ahead = delta < 0;
  const seconds = Math.floor(Math.abs(delta) / 1000);
  if (seconds < 1) return "just now";
  const text =
    seconds < 60
      ? `${seconds} s`
      : seconds < 3600
        ? `${Math.floor(seconds / 60)} min`
        : seconds < 86_400
          ? `${Math.floor(seconds / 3600)} h`
          : `${Math.floor(seconds / 86_400)} d`;
  return ahead ? `in ${text}` : `${text} ago`;
}

/** Absolute time for tooltips: "2026-12-03 03:16:21 UTC" (UTC so that shared screenshots agree). */
export function formatAbsolute(ms: number | undefined): string {
  if (ms === undefined) return "never";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** "1 h 2 min", "3 min 4 s", "5.2 s", "120 ms". */
export function formatDuration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** Binary units with three significant digits: "512 B", "1.50 GiB", "80.0 GiB". */
export function formatBytes(bytes: number | bigint | undefined): string {
  if (bytes === undefined) return "—";
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${value} B`;
  return `${value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)} ${UNITS[unit]}`;
}

/** "42 %", or "—" when unknown. */
export function formatPercent(percent: number | undefined): string {
  if (percent === undefined || !Number.isFinite(percent)) return "—";
  return `${Math.round(percent)} %`;
}

/** used / total as 0-100, or undefined when the total is unknown. */
export function percentOf(used: number | bigint | undefined, total: number | bigint | undefined): number | undefined {
  const t = Number(total ?? 0);
  if (t <= 0) return undefined;
  return Math.min(100, Math.max(0, (Number(used ?? 0) / t) * 100));
}

/** "WORKER_STATUS_IDLE" style enum names → "IDLE". */
export function enumLabel(names: Record<number, string>, value: number, prefix: string): string {
  const name = names[value];
  return name === undefined ? String(value) : name.startsWith(prefix) ? name.slice(prefix.length) : name;
}

/** One line of JSON for previews, cut at `max` characters. */
export function previewJson(value: unknown, max = 80): string {
  if (value === undefined || value === null) return "";
  const text = JSON.stringify(value) ?? "";
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A google.protobuf.Value (a rollout's or attempt's result, an input) as plain JSON; undefined when unset. */
export function jsonOfValue(value: Value | undefined): unknown {
  return value === undefined ? undefined : toJson(ValueSchema, value);
}
