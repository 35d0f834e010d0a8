import type { JsonValue } from "@bufbuild/protobuf";
import { RESULT_MAX_BYTES, resultBoundViolation } from "../common/attempt-result.js";

/**
 * How `runnerline runner` turns a command's stdout into the attempt's result:
 * - json: stdout is one JSON document (empty stdout: no result); anything else,
 *   or more than RESULT_MAX_BYTES of it, fails the attempt with the reason;
 * - text: one JSON document as in json mode, otherwise the end of stdout as a
 *   string (cut to fit the bound);
 * - none: no result; stdout passes through to the runner's stdout.
 */
export type ResultMode = "json" | "text" | "none";
export const RESULT_MODES: readonly ResultMode[] = ["json", "text", "none"];

/** Keeps the last `limit` bytes written to it, and how many were written in all. */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  total = 0;

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.total += chunk.length;
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.chunks.length > 1 && this.size - this.chunks[0]!.length >= this.limit) {
      this.size -= this.chunks.shift()!.length;
    }
  }

  get truncated(): boolean {
    return this.total > this.limit;
  }

  text(): string {
    const all = Buffer.concat(this.chunks);
    const tail = all.subarray(Math.max(0, all.length - this.limit));
    // Dropping a partial UTF-8 sequence at the cut keeps the text free of replacement characters.
    let start = 0;
    while (this.truncated && start < tail.length && start < 3 && (tail[start]! & 0xc0) === 0x80) start++;
    return (this.truncated ? "…" : "") + tail.subarray(start).toString("utf8");
  }
}

/** A buffer for the stdout of one attempt in `mode` (none: undefined, stdout is not captured). */
export function stdoutBuffer(mode: ResultMode): TailBuffer | undefined {
  return mode === "none" ? undefined : new TailBuffer(RESULT_MAX_BYTES);
}

export type CommandResult = { result: JsonValue | undefined } | { error: string };

/** The result of a command that exited 0, or why its stdout cannot be one. */
export function resultFromStdout(mode: ResultMode, stdout: TailBuffer | undefined): CommandResult {
  if (mode === "none" || stdout === undefined) return { result: undefined };
  if (stdout.truncated) {
    if (mode === "json") {
      return { error: `stdout is ${stdout.total} bytes, over the ${RESULT_MAX_BYTES}-byte bound on a result (--result json)` };
    }
    return { result: fitToBound(stdout.text()) };
  }
  const text = stdout.text();
  if (text.trim() === "") return { result: undefined };
  let parsed: JsonValue;
  try {
    parsed = JSON.parse(text) as JsonValue;
  } catch (error) {
    if (mode === "text") return { result: fitToBound(text) };
    return {
      error:
        `stdout is not one JSON document (${error instanceof Error ? error.message : String(error)}): ` +
        `${JSON.stringify(preview(text))}; print JSON, or run the runner with --result text or --result none`,
    };
  }
  const violation = resultBoundViolation(parsed);
  if (violation === undefined) return { result: parsed };
  if (mode === "text") return { result: fitToBound(text) };
  return { error: `${violation.message} (--result json)` };
}

/** Cuts text from the front until its JSON encoding fits the bound (escapes can make it longer than its bytes). */
function fitToBound(text: string): string {
  let fitted = text;
  while (resultBoundViolation(fitted) !== undefined) {
    const excess = Buffer.byteLength(JSON.stringify(fitted)) - RESULT_MAX_BYTES;
    // Each character dropped shrinks the encoding by at least one byte; three more pay for the "…".
    const rest = fitted.startsWith("…") ? fitted.slice(1) : fitted;
    fitted = `…${rest.slice(excess + 3)}`;
  }
  return fitted;
}

function preview(text: string): string {
  const trimmed = text.trim();
  return trimmed.length > 80 ? `${trimmed.slice(0, 80)}…` : trimmed;
}
