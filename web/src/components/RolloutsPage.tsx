import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { Attempt } from "../../../src/gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutMode, RolloutStatus } from "../../../src/gen/runnerline/v1/rollout_pb.js";
import { attemptClient, errorText, rolloutClient } from "../api.js";
import { formatDuration, jsonOfValue, previewJson } from "../format.js";
import { navigate, rolloutPath, runnerPath } from "../route.js";
import {
  listRolloutsRequest,
  ROLLOUT_STATUSES,
  type RolloutsView,
  rolloutsViewFromUrl,
  rolloutsViewToUrl,
  toggleSort,
  unroutableAmongRequest,
} from "../table-query.js";
import { Badge, CopyButton, Link, msOf, Notice, RelativeTime, useNow } from "./common.js";
import { Pager } from "./Pager.js";
import { RolloutDetail } from "./RolloutDetail.js";

const REFRESH_MS = 3_000;

const COLUMNS: { title: string; field?: string; class?: string }[] = [
  { title: "Rollout ID", field: "rollout_id" },
  { title: "Status", field: "status" },
  { title: "Mode", field: "mode", class: "wide-only" },
  { title: "Priority", field: "priority", class: "wide-only" },
  { title: "Attempts" },
  { title: "Worker" },
  { title: "Requires", class: "wide-only" },
  { title: "Created", field: "create_time" },
  { title: "Duration", class: "wide-only" },
  { title: "Input", class: "wide-only" },
  { title: "Result", class: "wide-only" },
];

export const TERMINAL_ROLLOUT = new Set([RolloutStatus.SUCCEEDED, RolloutStatus.FAILED, RolloutStatus.CANCELLED]);

/**
 * Latest attempts of the listed rollouts, for the worker column (a Rollout
 * does not name its worker; its result is on the Rollout itself). An
 * attempt's worker never changes, so each attempt is asked for once.
 */
const attemptCache = new Map<string, Attempt>();

async function latestAttempts(rollouts: Rollout[], signal: AbortSignal): Promise<void> {
  const wanted = rollouts
    .map((r) => r.latestAttemptId)
    .filter((id) => id !== "" && !attemptCache.has(id));
  await Promise.all(
    wanted.map(async (attemptId) => {
      try {
        const { attempt } = await attemptClient.getAttempt({ attemptId }, { signal });
        if (attempt) attemptCache.set(attemptId, attempt);
      } catch {
        // The column shows "—"; the next refresh asks again.
      }
    }),
  );
  while (attemptCache.size > 5_000) attemptCache.delete(attemptCache.keys().next().value!);
}

interface RolloutsState {
  rows: Rollout[];
  total: number;
  loaded: boolean;
  error?: string;
  pageIndex: number;
  hasNext: boolean;
  /** The listed rollouts that no connected runner can take now (their required labels). */
  unroutable: ReadonlySet<string>;
}

/** Which listed rollouts are unroutable: all of them in the unroutable view, else one call for the candidates. */
async function unroutableAmong(rollouts: Rollout[], unroutableView: boolean, signal: AbortSignal): Promise<Set<string>> {
  if (unroutableView) return new Set(rollouts.map((r) => r.rolloutId));
  const request = unroutableAmongRequest(rollouts);
  if (request === undefined) return new Set();
  const page = await rolloutClient.listRollouts(request, { signal });
  return new Set(page.rollouts.map((r) => r.rolloutId));
}

export function RolloutsPage({ query, rolloutId }: { query: string; rolloutId?: string }) {
  const view = useMemo(() => rolloutsViewFromUrl(query), [query]);
  const viewKey = rolloutsViewToUrl(view);
  const [state, setState] = useState<RolloutsState>({ rows: [], total: 0, loaded: false, pageIndex: 0, hasNext: false, unroutable: new Set() });
  const tokens = useRef<string[]>([""]);
  const nextToken = useRef("");
  const [pageIndex, setPageIndex] = useState(0);
  const [reload, setReload] = useState(0);
  const now = useNow();

  useEffect(() => {
    tokens.current = [""];
    setPageIndex(0);
  }, [viewKey]);

  useEffect(() => {
    const abort = new AbortController();
    const load = async () => {
      try {
        const page = await rolloutClient.listRollouts(listRolloutsRequest(view, tokens.current[pageIndex] ?? ""), { signal: abort.signal });
        const [unroutable] = await Promise.all([unroutableAmong(page.rollouts, view.unroutable, abort.signal), latestAttempts(page.rollouts, abort.signal)]);
        if (abort.signal.aborted) return;
        nextToken.current = page.nextPageToken;
        setState({ rows: page.rollouts, total: page.totalSize, loaded: true, pageIndex, hasNext: page.nextPageToken !== "", unroutable });
      } catch (error) {
        if (!abort.signal.aborted) setState((s) => ({ ...s, loaded: true, error: errorText(error) }));
      }
    };
    void load();
    const timer = setInterval(() => void load(), REFRESH_MS);
    return () => {
      abort.abort();
      clearInterval(timer);
    };
  }, [viewKey, pageIndex, reload]);

  const show = (next: RolloutsView) => {
    const q = rolloutsViewToUrl(next);
    navigate(`/rollouts${rolloutId ? `/${encodeURIComponent(rolloutId)}` : ""}${q ? `?${q}` : ""}`, true);
  };

  return (
    <main class="page">
      <RolloutsToolbar view={view} onChange={show} />
      {state.error && <Notice kind="error">Could not load rollouts: {state.error}. Is the server running? Retrying every 3 s.</Notice>}
      {!state.loaded ? (
        <p class="muted loading">Loading rollouts…</p>
      ) : state.rows.length === 0 && !state.error ? (
        viewKey === "" ? (
          <Notice kind="info">
            No rollouts yet: enqueue one with <code>RolloutService/EnqueueRollout</code> (see the README's quickstart for the curl line).
          </Notice>
        ) : (
          <Notice kind="info">
            No rollouts match this view. <Link href="/rollouts">Clear the filters</Link>.
          </Notice>
        )
      ) : (
        <>
          <div class="table-wrap">
            <table class="rollouts">
              <thead>
                <tr>
                  {COLUMNS.map((column) =>
                    column.field === undefined ? (
                      <th key={column.title} class={column.class}>{column.title}</th>
                    ) : (
                      <th key={column.title} class={column.class} aria-sort={view.sort.field === column.field ? (view.sort.descending ? "descending" : "ascending") : "none"}>
                        <button type="button" class="sort" onClick={() => show({ ...view, sort: toggleSort(view.sort, column.field!) })}>
                          {column.title}
                          <span class="sort-mark">{view.sort.field === column.field ? (view.sort.descending ? "▼" : "▲") : ""}</span>
                        </button>
                      </th>
                    ),
                  )}
                </tr>
              </thead>
              <tbody>
                {state.rows.map((rollout) => (
                  <RolloutRow key={rollout.rolloutId} rollout={rollout} now={now} query={query} unroutable={state.unroutable.has(rollout.rolloutId)} />
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            pageIndex={state.pageIndex}
            pageSize={view.pageSize}
            shown={state.rows.length}
            total={state.total}
            hasNext={state.hasNext}
            onPrevious={() => setPageIndex((i) => Math.max(0, i - 1))}
            onNext={() => {
              if (!state.hasNext) return;
              tokens.current = [...tokens.current.slice(0, pageIndex + 1), nextToken.current];
              setPageIndex(pageIndex + 1);
            }}
            onPageSize={(pageSize) => show({ ...view, pageSize })}
            noun="rollouts"
          />
        </>
      )}
      {rolloutId !== undefined && (
        <RolloutDetail rolloutId={rolloutId} onChanged={() => setReload((n) => n + 1)} onClose={() => navigate(`/rollouts${query ? `?${query}` : ""}`)} />
      )}
    </main>
  );
}

function RolloutsToolbar({ view, onChange }: { view: RolloutsView; onChange: (view: RolloutsView) => void }) {
  const [search, setSearch] = useState(view.search);
  useEffect(() => setSearch(view.search), [view.search]);
  useEffect(() => {
    if (search === view.search) return;
    const timer = setTimeout(() => onChange({ ...view, search }), 250);
    return () => clearTimeout(timer);
  }, [search]);
  const toggle = (status: RolloutStatus) => {
    const has = view.statuses.includes(status);
    onChange({ ...view, statuses: has ? view.statuses.filter((s) => s !== status) : [...view.statuses, status] });
  };
  return (
    <div class="toolbar">
      <input
        type="search"
        placeholder="Search rollout id"
        aria-label="Search rollout id"
        value={search}
        onInput={(e) => setSearch((e.currentTarget as HTMLInputElement).value)}
      />
      <div class="chips" role="group" aria-label="Status filter (none selected: all)">
        {ROLLOUT_STATUSES.map((status) => (
          <button
            type="button"
            key={status}
            class={`chip chip-${RolloutStatus[status].toLowerCase()}`}
            aria-pressed={view.statuses.includes(status)}
            onClick={() => toggle(status)}
          >
            {RolloutStatus[status]}
          </button>
        ))}
        <button
          type="button"
          class="chip chip-unroutable"
          aria-pressed={view.unroutable}
          title="Only queued rollouts that no connected runner can take: none carries the labels they require"
          onClick={() => onChange({ ...view, unroutable: !view.unroutable })}
        >
          UNROUTABLE
        </button>
      </div>
    </div>
  );
}

export function rolloutBadge(rollout: Rollout) {
  const name = RolloutStatus[rollout.status] ?? String(rollout.status);
  return <Badge kind={`rollout-${name}`} label={name} title={rollout.failureReason || undefined} />;
}

export function rolloutDuration(rollout: Rollout, now: number): number | undefined {
  const start = msOf(rollout.startTime);
  if (start === undefined) return undefined;
  return (msOf(rollout.endTime) ?? now) - start;
}

function RolloutRow({ rollout, now, query, unroutable }: { rollout: Rollout; now: number; query: string; unroutable: boolean }) {
  const latest = attemptCache.get(rollout.latestAttemptId);
  const required = Object.entries(rollout.config?.requiredLabels ?? {});
  const requiredText = required.map(([k, v]) => `${k}=${v}`).join(", ");
  return (
    <tr data-rollout-id={rollout.rolloutId} data-status={RolloutStatus[rollout.status]}>
      <td class="id">
        <Link href={rolloutPath(rollout.rolloutId, query)}>{rollout.rolloutId}</Link>
        <CopyButton text={rollout.rolloutId} />
      </td>
      <td>
        {rolloutBadge(rollout)}
        {unroutable && <Badge kind="unroutable" label="UNROUTABLE" title={`no connected runner carries ${requiredText}: it waits until one connects`} />}
        {rollout.nextAttemptTime && !TERMINAL_ROLLOUT.has(rollout.status) && (
          <span class="muted small next-attempt">
            {" "}retry <RelativeTime time={rollout.nextAttemptTime} />
          </span>
        )}
      </td>
      <td class="wide-only">{rollout.mode === RolloutMode.UNSPECIFIED ? "—" : RolloutMode[rollout.mode]}</td>
      <td class="wide-only priority">{rollout.priority}</td>
      <td>
        {rollout.attemptCount}
        {rollout.config?.maxAttempts ? ` / ${rollout.config.maxAttempts}` : ""}
      </td>
      <td class="mono">{latest?.workerId ? <Link href={runnerPath(latest.workerId)}>{latest.workerId}</Link> : <span class="muted">—</span>}</td>
      <td class="wide-only labels" title={required.length === 0 ? "any runner may take it" : `only runners carrying ${requiredText}`}>
        {required.length === 0 ? (
          <span class="muted">any</span>
        ) : (
          required.map(([k, v]) => (
            <span class="label" key={k}>
              {k}={v}
            </span>
          ))
        )}
      </td>
      <td>
        <RelativeTime time={rollout.createTime} />
      </td>
      <td class="wide-only">{formatDuration(rolloutDuration(rollout, now))}</td>
      <td class="wide-only mono preview">{previewJson(jsonOfValue(rollout.input), 48)}</td>
      <td class="wide-only mono preview result">{previewJson(jsonOfValue(rollout.result), 48) || <span class="muted">—</span>}</td>
    </tr>
  );
}
