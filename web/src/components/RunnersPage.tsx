import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { type Worker, WorkerStatus } from "../../../src/gen/runnerline/v1/worker_pb.js";
import { formatAbsolute, formatBytes, formatPercent, formatRelative, percentOf } from "../format.js";
import { LiveRunners, type RunnersState } from "../live-runners.js";
import { navigate, rolloutPath, runnerPath } from "../route.js";
import {
  type PageSize,
  type RunnersView,
  runnersViewFromUrl,
  runnersViewToUrl,
  toggleSort,
  WORKER_STATUSES,
} from "../table-query.js";
import { memo } from "preact/compat";
import { cordonLabel, cordonSummary } from "../cordon.js";
import { isQuarantined, timestampMs } from "../quarantine.js";
import { SERVER_GONE } from "../api.js";
import { Bar, Badge, CopyButton, Link, Notice, RelativeTime, useNow } from "./common.js";
import { Pager } from "./Pager.js";
import { RunnerDetail } from "./RunnerDetail.js";

/** Column header → server order_by field; columns without one cannot be sorted by the server. */
/** Widths live in styles.css (table.runners col-N): fixed, so the table lays out once, not on every changed cell. */
const COLUMNS: { title: string; field?: string; class?: string }[] = [
  { title: "Runner ID", field: "worker_id" },
  { title: "Status", field: "status" },
  { title: "Current Rollout" },
  { title: "Current Attempt", class: "wide-only" },
  { title: "Heartbeat", field: "last_heartbeat_time" },
  { title: "Last Busy", field: "last_busy_time", class: "wide-only" },
  { title: "Last Idle", field: "last_idle_time", class: "wide-only" },
  { title: "Last Dequeue", field: "last_dequeue_time", class: "wide-only" },
  { title: "Labels", class: "wide-only" },
  { title: "Slots", field: "capacity" },
  { title: "CPU · Mem", class: "wide-only" },
  { title: "GPUs", class: "wide-only" },
  { title: "", class: "wide-only" },
];

export function RunnersPage({ query, workerId }: { query: string; workerId?: string }) {
  const view = useMemo(() => runnersViewFromUrl(query), [query]);
  const viewKey = runnersViewToUrl(view);
  const [state, setState] = useState<RunnersState | undefined>(undefined);
  const live = useRef<LiveRunners>();
  useEffect(() => {
    const model = new LiveRunners(view, setState);
    live.current = model;
    setState(model.state);
    return () => model.stop();
  }, [viewKey]);

  const show = (next: RunnersView) => {
    const q = runnersViewToUrl(next);
    navigate(`/runners${workerId ? `/${encodeURIComponent(workerId)}` : ""}${q ? `?${q}` : ""}`, true);
  };

  return (
    <main class="page">
      <RunnersToolbar view={view} onChange={show} />
      <RunnersNotices state={state} />
      {state === undefined || !state.loaded ? (
        <p class="muted loading">Loading runners…</p>
      ) : state.rows.length === 0 && !state.error ? (
        <EmptyRunners filtered={viewKey !== ""} />
      ) : (
        <>
          <div class="table-wrap">
            <table class="runners">
              <thead>
                <tr>
                  {COLUMNS.map((column) => (
                    <SortHeader key={column.title} column={column} view={view} onChange={show} />
                  ))}
                </tr>
              </thead>
              <tbody>
                {state.rows.map((worker) => (
                  <RunnerRow key={worker.workerId} worker={worker} staleAfterMs={state.heartbeatGraceMs + state.pollMs} query={query} selected={worker.workerId === workerId} />
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
            onPrevious={() => live.current?.previousPage()}
            onNext={() => live.current?.nextPage()}
            onPageSize={(pageSize) => show({ ...view, pageSize })}
            noun="runners"
          />
        </>
      )}
      {workerId !== undefined && <RunnerDetail workerId={workerId} onClose={() => navigate(`/runners${query ? `?${query}` : ""}`)} />}
    </main>
  );
}

/** One notice per problem: with the server gone, the page load and the live stream fail alike, and say it once. */
function RunnersNotices({ state }: { state: RunnersState | undefined }) {
  if (state === undefined) return null;
  if (state.error === SERVER_GONE && state.stream === "down") {
    return <Notice kind="error">The server does not answer; retrying. The table shows what it last knew.</Notice>;
  }
  return (
    <>
      {state.stream === "down" && (
        <Notice kind="warn">
          Live updates lost ({state.streamError}); reconnecting… The table may be out of date until then.
        </Notice>
      )}
      {state.error && <Notice kind="error">Could not load runners: {state.error}. Retrying every {Math.round(state.pollMs / 1000)} s.</Notice>}
    </>
  );
}

function RunnersToolbar({ view, onChange }: { view: RunnersView; onChange: (view: RunnersView) => void }) {
  const [search, setSearch] = useState(view.search);
  useEffect(() => setSearch(view.search), [view.search]);
  // Type freely; the request goes out when typing pauses.
  useEffect(() => {
    if (search === view.search) return;
    const timer = setTimeout(() => onChange({ ...view, search }), 250);
    return () => clearTimeout(timer);
  }, [search]);
  const [labelText, setLabelText] = useState("");
  const toggle = (status: WorkerStatus) => {
    const has = view.statuses.includes(status);
    if (has && view.statuses.length === 1) return; // at least one status stays selected
    onChange({ ...view, statuses: has ? view.statuses.filter((s) => s !== status) : [...view.statuses, status] });
  };
  return (
    <div class="toolbar">
      <input
        type="search"
        placeholder="Search runner id"
        aria-label="Search runner id"
        value={search}
        onInput={(e) => setSearch((e.currentTarget as HTMLInputElement).value)}
      />
      <div class="chips" role="group" aria-label="Status filter">
        {WORKER_STATUSES.map((status) => (
          <button
            type="button"
            key={status}
            class={`chip chip-${WorkerStatus[status].toLowerCase()}`}
            aria-pressed={view.statuses.includes(status)}
            onClick={() => toggle(status)}
          >
            {WorkerStatus[status]}
          </button>
        ))}
        <button
          type="button"
          class="chip chip-quarantined"
          aria-pressed={view.quarantined}
          title="Only runners quarantined now (kept from new work after repeated failures)"
          onClick={() => onChange({ ...view, quarantined: !view.quarantined })}
        >
          QUARANTINED
        </button>
        <button
          type="button"
          class="chip chip-cordoned"
          aria-pressed={view.cordoned}
          title="Only runners an operator cordoned or is draining (kept from new work for maintenance)"
          onClick={() => onChange({ ...view, cordoned: !view.cordoned })}
        >
          CORDONED
        </button>
      </div>
      <form
        class="label-filter"
        onSubmit={(e) => {
          e.preventDefault();
          const at = labelText.indexOf("=");
          if (at <= 0) return;
          onChange({ ...view, labels: { ...view.labels, [labelText.slice(0, at).trim()]: labelText.slice(at + 1).trim() } });
          setLabelText("");
        }}
      >
        <input
          type="text"
          placeholder="label=value"
          aria-label="Filter by label (key=value, Enter)"
          value={labelText}
          onInput={(e) => setLabelText((e.currentTarget as HTMLInputElement).value)}
        />
        {Object.entries(view.labels).map(([key, value]) => (
          <button
            type="button"
            class="chip chip-label"
            key={key}
            title="Remove this label filter"
            onClick={() => {
              const labels = { ...view.labels };
              delete labels[key];
              onChange({ ...view, labels });
            }}
          >
            {key}={value} ✕
          </button>
        ))}
      </form>
    </div>
  );
}

function SortHeader({ column, view, onChange }: { column: (typeof COLUMNS)[number]; view: RunnersView; onChange: (view: RunnersView) => void }) {
  const className = `col-${COLUMNS.indexOf(column)} ${column.class ?? ""}`;
  if (column.field === undefined) return <th class={className}>{column.title}</th>;
  const active = view.sort.field === column.field;
  return (
    <th class={className} aria-sort={active ? (view.sort.descending ? "descending" : "ascending") : "none"}>
      <button type="button" class="sort" onClick={() => onChange({ ...view, sort: toggleSort(view.sort, column.field!) })}>
        {column.title}
        <span class="sort-mark">{active ? (view.sort.descending ? "▼" : "▲") : ""}</span>
      </button>
    </th>
  );
}

export function workerBadge(worker: Worker) {
  const name = WorkerStatus[worker.status] ?? String(worker.status);
  // Why the server set the status itself, when it did (a silent runner forgotten after --forget-after).
  const title = (worker.connected ? "connected" : "not connected") + (worker.statusReason ? ` · ${worker.statusReason}` : "");
  const cordon = cordonLabel(worker);
  return (
    <>
      <Badge kind={name} label={name} title={title} />
      {worker.quarantineUntil !== undefined && <QuarantineBadge worker={worker} />}
      {cordon !== undefined && <Badge kind={cordon.toLowerCase()} label={cordon} title={cordonSummary(worker)} />}
    </>
  );
}

/** Shown while quarantine_until is ahead; it ticks by itself so the badge leaves when the quarantine ends. */
function QuarantineBadge({ worker }: { worker: Worker }) {
  const now = useNow();
  if (!isQuarantined(worker, now)) return null;
  const until = timestampMs(worker.quarantineUntil);
  const reason = worker.quarantineReason || "repeated failures";
  return <Badge kind="quarantined" label="QUARANTINED" title={`${reason} · no new work until ${formatAbsolute(until)} (${formatRelative(until, now)})`} />;
}

interface RowProps {
  worker: Worker;
  /** The server's grace plus how old this page's copy of the row can be. */
  staleAfterMs: number;
  query: string;
  selected: boolean;
}

/**
 * Rows re-render only when their worker (or selection) changes: with
 * hundreds of rows and a thousand changes a second elsewhere in the fleet,
 * re-rendering every row on every batch is what would make the page stutter.
 */
const RunnerRow = memo(RunnerRowContent, (a: RowProps, b: RowProps) =>
  a.worker === b.worker && a.staleAfterMs === b.staleAfterMs && a.query === b.query && a.selected === b.selected,
);

function RunnerRowContent({ worker, staleAfterMs, query, selected }: RowProps) {
  const snapshot = worker.snapshot;
  const memory = percentOf(snapshot?.memory?.usedBytes, snapshot?.memory?.totalBytes);
  const live = worker.connected && worker.status !== WorkerStatus.OFFLINE;
  // A runner that is not connected sends no telemetry: its last figures are shown greyed, and say so.
  const stale = live ? "" : ` (last reported ${formatAbsolute(timestampMs(snapshot?.collectTime ?? worker.lastHeartbeatTime))}; not connected)`;
  return (
    <tr data-worker-id={worker.workerId} data-status={WorkerStatus[worker.status]} class={selected ? "selected" : undefined}>
      <td class="id">
        <Link href={runnerPath(worker.workerId, query)}>{worker.workerId}</Link>
        <CopyButton text={worker.workerId} />
        <span class={`dot ${worker.connected ? "on" : "off"}`} title={worker.connected ? "connected" : "not connected"} />
      </td>
      <td class="status">{workerBadge(worker)}</td>
      <td class="mono">
        {worker.currentRolloutIds.length === 0 ? (
          <span class="muted">—</span>
        ) : (
          worker.currentRolloutIds.map((id) => (
            <Link key={id} href={rolloutPath(id)} class="block clip" title={id}>
              {id}
            </Link>
          ))
        )}
      </td>
      <td class="mono wide-only attempt-ids">
        {worker.currentAttemptIds.length === 0 ? (
          <span class="muted">—</span>
        ) : (
          // One line per attempt, like the rollouts beside them: a runner holding two shows two.
          worker.currentAttemptIds.map((id) => (
            <span key={id} class="block clip" title={id}>
              {id}
            </span>
          ))
        )}
      </td>
      <td>
        <RelativeTime time={worker.lastHeartbeatTime} staleAfterMs={live ? staleAfterMs : undefined} />
      </td>
      <td class="wide-only">
        <RelativeTime time={worker.lastBusyTime} />
      </td>
      <td class="wide-only">
        <RelativeTime time={worker.lastIdleTime} />
      </td>
      <td class="wide-only">
        <RelativeTime time={worker.lastDequeueTime} />
      </td>
      <td class="wide-only labels">
        {Object.entries(worker.labels).map(([k, v]) => (
          <span class="label" key={k}>
            {k}={v}
          </span>
        ))}
      </td>
      <td class="slots" title="slots in use / capacity">
        {worker.currentAttemptIds.length}/{worker.capacity}
      </td>
      <td class={`wide-only host${live ? "" : " stale"}`} data-live={String(live)}>
        <Bar percent={snapshot?.cpu?.usagePercent} label={formatPercent(snapshot?.cpu?.usagePercent)} title={`CPU ${formatPercent(snapshot?.cpu?.usagePercent)}${stale}`} />
        <Bar percent={memory} label={formatPercent(memory)} title={`Memory ${formatBytes(snapshot?.memory?.usedBytes)} of ${formatBytes(snapshot?.memory?.totalBytes)}${stale}`} />
      </td>
      <td class={`wide-only gpus${live ? "" : " stale"}`}>
        {snapshot === undefined || snapshot.gpus.length === 0 ? (
          <span class="muted">—</span>
        ) : (
          snapshot.gpus.map((gpu) => {
            const mem = percentOf(gpu.memoryUsedBytes, gpu.memoryTotalBytes);
            return (
              <span class="gpu" key={gpu.index} title={`GPU ${gpu.index} ${gpu.name}: ${formatPercent(gpu.utilizationPercent)} busy, ${formatBytes(gpu.memoryUsedBytes)} of ${formatBytes(gpu.memoryTotalBytes)}${stale}`}>
                <span class="gpu-bar util" style={{ height: `${Math.max(2, gpu.utilizationPercent)}%` }} />
                <span class="gpu-bar mem" style={{ height: `${Math.max(2, mem ?? 0)}%` }} />
              </span>
            );
          })
        )}
      </td>
      <td class="wide-only">
        <Link href={runnerPath(worker.workerId, query)} class="detail-link" label={`Details of ${worker.workerId}`}>
          Details ›
        </Link>
      </td>
    </tr>
  );
}

function EmptyRunners({ filtered }: { filtered: boolean }) {
  if (filtered) {
    return (
      <Notice kind="info">
        No runners match this view. <Link href="/runners">Clear the filters</Link>, or show OFFLINE runners with the status buttons above.
      </Notice>
    );
  }
  return (
    <Notice kind="info">
      No runners yet: start one with <code>./bin/runnerline.mjs runner --worker-id my-runner --exec 'cat'</code> (see the README's
      quickstart). It appears here as soon as it connects.
    </Notice>
  );
}
