import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { type Action, deniedTitle, useAuth } from "../auth.js";
import { formatAbsolute, formatRelative } from "../format.js";
import { onLinkClick } from "../route.js";

export function msOf(timestamp: Timestamp | undefined): number | undefined {
  return timestamp === undefined ? undefined : Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6);
}

// One timer for every relative time on the page, so 500 rows tick with one render.
const nowListeners = new Set<(now: number) => void>();
setInterval(() => {
  const now = Date.now();
  for (const listener of nowListeners) listener(now);
}, 1000);

export function useNow(): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    nowListeners.add(setNow);
    return () => void nowListeners.delete(setNow);
  }, []);
  return now;
}

/** "12 s ago", ticking, with the absolute time on hover; `staleAfterMs` marks old times. */
export function RelativeTime({ time, staleAfterMs }: { time: Timestamp | undefined; staleAfterMs?: number }) {
  // Each time subscribes to the ticker itself, so a tick re-renders the times and not the rows around them.
  const now = useNow();
  const ms = msOf(time);
  const stale = ms !== undefined && staleAfterMs !== undefined && now - ms > staleAfterMs;
  return (
    <time class={stale ? "stale" : undefined} title={formatAbsolute(ms) + (stale ? " (late: older than the heartbeat grace)" : "")} dateTime={ms === undefined ? undefined : new Date(ms).toISOString()}>
      {formatRelative(ms, now)}
    </time>
  );
}

export function Badge({ kind, label, title }: { kind: string; label: string; title?: string }) {
  return (
    <span class={`badge badge-${kind.toLowerCase()}`} data-status={label} title={title}>
      {label}
    </span>
  );
}

/** A small horizontal bar for a 0-100 value. */
export function Bar({ percent, label, title }: { percent: number | undefined; label: string; title?: string }) {
  if (percent === undefined) return <span class="muted">—</span>;
  const level = percent >= 90 ? "high" : percent >= 60 ? "mid" : "low";
  return (
    <span class="bar" title={title ?? label}>
      <span class="bar-track">
        <span class={`bar-fill ${level}`} style={{ width: `${percent.toFixed(1)}%` }} />
      </span>
      <span class="bar-label">{label}</span>
    </span>
  );
}

/** A polyline of values 0-100 (or 0-max), newest on the right. */
export function Sparkline({ values, max = 100, label }: { values: number[]; max?: number; label: string }) {
  const width = 160;
  const height = 32;
  if (values.length === 0) return <span class="muted">no samples yet</span>;
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const points = values
    .map((v, i) => `${(i * step).toFixed(1)},${(height - (Math.min(max, Math.max(0, v)) / max) * height).toFixed(1)}`)
    .join(" ");
  return (
    <svg class="sparkline" viewBox={`0 0 ${width} ${height}`} width={width} height={height} role="img" aria-label={label} data-points={values.length}>
      <polyline points={points} fill="none" stroke="currentColor" stroke-width="1.5" />
    </svg>
  );
}

export function CopyButton({ text }: { text: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      class="copy"
      type="button"
      title="Copy"
      aria-label={`Copy ${text}`}
      onClick={(event) => {
        event.stopPropagation();
        void navigator.clipboard?.writeText(text).then(() => {
          setCopied(true);
          setTimeout(() => setCopied(false), 1200);
        });
      }}
    >
      {copied ? (
        "✓"
      ) : (
        <svg width="12" height="12" viewBox="0 0 16 16" aria-hidden="true">
          <rect x="5" y="5" width="9" height="9" rx="1.5" fill="none" stroke="currentColor" stroke-width="1.5" />
          <path d="M11 3.5V3a1 1 0 0 0-1-1H3a1 1 0 0 0-1 1v7a1 1 0 0 0 1 1h.5" fill="none" stroke="currentColor" stroke-width="1.5" />
        </svg>
      )}
    </button>
  );
}

/** `title`: the hover text (defaults to `label`); give it whenever the text may be cut short, so the whole value stays readable. */
export function Link({ href, children, class: className, label, title }: { href: string; children: ComponentChildren; class?: string; label?: string; title?: string }) {
  return (
    <a href={href} class={className} onClick={onLinkClick} aria-label={label} title={title ?? label}>
      {children}
    </a>
  );
}

export function Notice({ kind, children }: { kind: "error" | "info" | "warn"; children: ComponentChildren }) {
  return (
    <div class={`notice notice-${kind}`} role={kind === "error" ? "alert" : "status"}>
      {children}
    </div>
  );
}

/**
 * A button for an action the token may not be allowed to take: disabled, with
 * the server's reason as its tooltip, once the page knows the token may not.
 */
export function ActionButton({ action, class: className, onClick, children }: { action: Action; class?: string; onClick(): void; children: ComponentChildren }) {
  const title = deniedTitle(useAuth().permissions[action]);
  // The tooltip sits on a wrapper too: some browsers show none for a disabled button.
  return (
    <span class="action" title={title}>
      <button type="button" class={className} disabled={title !== undefined} title={title} onClick={onClick} data-action={action}>
        {children}
      </button>
    </span>
  );
}
