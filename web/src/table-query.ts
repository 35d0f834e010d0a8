// Table state ↔ URL ↔ request parameters, for both tables. Pure, so the
// mapping is unit-tested (test/web/table-query.test.ts) and a shared link
// reopens the same view.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { RolloutStatus, type ListRolloutsRequestSchema } from "../../src/gen/runnerline/v1/rollout_pb.js";
import {
  WorkerStatus,
  type ListWorkersRequestSchema,
  type WatchWorkersRequestSchema,
} from "../../src/gen/runnerline/v1/worker_pb.js";
import { CORDONED_FILTER } from "./cordon.js";
import { isQuarantined, QUARANTINED_FILTER } from "./quarantine.js";

export const PAGE_SIZES = [50, 100, 200, 500] as const;
export type PageSize = (typeof PAGE_SIZES)[number];

export interface Sort {
  /** A server order_by field. */
  field: string;
  descending: boolean;
}

export interface RunnersView {
  /** Substring of the worker id. */
  search: string;
  /** Statuses shown; OFFLINE is left out by default. */
  statuses: WorkerStatus[];
  /** Exact label matches, all required. */
  labels: Record<string, string>;
  /** Only runners quarantined now (within the selected statuses). */
  quarantined: boolean;
  /** Only runners an operator cordoned (draining ones included). */
  cordoned: boolean;
  sort: Sort;
  pageSize: PageSize;
}

export interface RolloutsView {
  search: string;
  /** Statuses shown; empty means all. */
  statuses: RolloutStatus[];
  /** Only queued rollouts that no connected runner carries the required labels for. */
  unroutable: boolean;
  sort: Sort;
  pageSize: PageSize;
}

export const WORKER_STATUSES = [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN, WorkerStatus.OFFLINE];
export const ROLLOUT_STATUSES = [
  RolloutStatus.QUEUING,
  RolloutStatus.PREPARING,
  RolloutStatus.RUNNING,
  RolloutStatus.REQUEUING,
  RolloutStatus.SUCCEEDED,
  RolloutStatus.FAILED,
  RolloutStatus.CANCELLED,
];

/** Columns the server can sort workers by (ListWorkersRequest.order_by). */
export const WORKER_SORT_FIELDS = [
  "worker_id",
  "status",
  "capacity",
  "last_heartbeat_time",
  "last_dequeue_time",
  "last_busy_time",
  "last_idle_time",
  "connect_time",
  "create_time",
] as const;

/** Columns the server can sort rollouts by (ListRolloutsRequest.order_by). */
export const ROLLOUT_SORT_FIELDS = ["rollout_id", "status", "mode", "priority", "create_time", "start_time", "end_time"] as const;

export const DEFAULT_RUNNERS_VIEW: RunnersView = {
  search: "",
  statuses: [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN],
  labels: {},
  quarantined: false,
  cordoned: false,
  sort: { field: "worker_id", descending: false },
  pageSize: 50,
};

export const DEFAULT_ROLLOUTS_VIEW: RolloutsView = {
  search: "",
  statuses: [],
  unroutable: false,
  sort: { field: "create_time", descending: true },
  pageSize: 50,
};

// ---- runners ---------------------------------------------------------------

export function runnersViewFromUrl(query: string): RunnersView {
  const params = new URLSearchParams(query);
  const labels: Record<string, string> = {};
  for (const pair of params.getAll("label")) {
    const at = pair.indexOf(":");
    if (at > 0) labels[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return {
    search: params.get("q") ?? "",
    statuses: statusesFromParam(params.get("status"), WorkerStatus, WORKER_STATUSES, DEFAULT_RUNNERS_VIEW.statuses),
    labels,
    quarantined: params.get("quarantined") === "1",
    cordoned: params.get("cordoned") === "1",
    sort: sortFromParam(params.get("sort"), WORKER_SORT_FIELDS, DEFAULT_RUNNERS_VIEW.sort),
    pageSize: pageSizeFromParam(params.get("size")),
  };
}

/** Only what differs from the default view, so plain links stay plain. */
export function runnersViewToUrl(view: RunnersView): string {
  const params = new URLSearchParams();
  if (view.search !== "") params.set("q", view.search);
  if (!sameSet(view.statuses, DEFAULT_RUNNERS_VIEW.statuses)) params.set("status", statusesToParam(view.statuses, WorkerStatus, WORKER_STATUSES));
  for (const [key, value] of Object.entries(view.labels).sort(([a], [b]) => a.localeCompare(b))) {
    params.append("label", `${key}:${value}`);
  }
  if (view.quarantined) params.set("quarantined", "1");
  if (view.cordoned) params.set("cordoned", "1");
  if (!sameSort(view.sort, DEFAULT_RUNNERS_VIEW.sort)) params.set("sort", sortToParam(view.sort));
  if (view.pageSize !== DEFAULT_RUNNERS_VIEW.pageSize) params.set("size", String(view.pageSize));
  return params.toString();
}

export function listWorkersRequest(view: RunnersView, pageToken: string): MessageInitShape<typeof ListWorkersRequestSchema> {
  return {
    pageSize: view.pageSize,
    pageToken,
    orderBy: orderBy(view.sort),
    statuses: statusFilter(view.statuses, WORKER_STATUSES),
    workerIdContains: view.search,
    labels: view.labels,
    filter: [view.quarantined && QUARANTINED_FILTER, view.cordoned && CORDONED_FILTER].filter((f) => f).join(" AND "),
  };
}

/**
 * No status filter on the watch: a row that leaves the selected statuses (an
 * IDLE runner going OFFLINE while OFFLINE is hidden) must still be reported,
 * so the page can drop it. The watch has no label or quarantine filter either
 * (a released runner must be reported too, and a watch's `now` would stay at
 * its start); the page matches those itself (see matchesRunnersView).
 */
export function watchWorkersRequest(view: RunnersView): MessageInitShape<typeof WatchWorkersRequestSchema> {
  return { workerIdContains: view.search, changesOnly: true };
}

/** Whether a worker belongs in the view's table (the same rules ListWorkers applies). */
export function matchesRunnersView(
  view: RunnersView,
  worker: { workerId: string; status: WorkerStatus; labels: Record<string, string>; quarantineUntil?: Timestamp; cordoned?: boolean },
  nowMs: number,
): boolean {
  return (
    worker.workerId.includes(view.search) &&
    (!view.quarantined || isQuarantined(worker, nowMs)) &&
    (!view.cordoned || worker.cordoned === true) &&
    view.statuses.includes(worker.status) &&
    Object.entries(view.labels).every(([key, value]) => worker.labels[key] === value)
  );
}

// ---- rollouts --------------------------------------------------------------

export function rolloutsViewFromUrl(query: string): RolloutsView {
  const params = new URLSearchParams(query);
  return {
    search: params.get("q") ?? "",
    statuses: statusesFromParam(params.get("status"), RolloutStatus, ROLLOUT_STATUSES, DEFAULT_ROLLOUTS_VIEW.statuses),
    unroutable: params.get("unroutable") === "1",
    sort: sortFromParam(params.get("sort"), ROLLOUT_SORT_FIELDS, DEFAULT_ROLLOUTS_VIEW.sort),
    pageSize: pageSizeFromParam(params.get("size")),
  };
}

export function rolloutsViewToUrl(view: RolloutsView): string {
  const params = new URLSearchParams();
  if (view.search !== "") params.set("q", view.search);
  if (!sameSet(view.statuses, DEFAULT_ROLLOUTS_VIEW.statuses)) params.set("status", statusesToParam(view.statuses, RolloutStatus, ROLLOUT_STATUSES));
  if (view.unroutable) params.set("unroutable", "1");
  if (!sameSort(view.sort, DEFAULT_ROLLOUTS_VIEW.sort)) params.set("sort", sortToParam(view.sort));
  if (view.pageSize !== DEFAULT_ROLLOUTS_VIEW.pageSize) params.set("size", String(view.pageSize));
  return params.toString();
}

export function listRolloutsRequest(view: RolloutsView, pageToken: string): MessageInitShape<typeof ListRolloutsRequestSchema> {
  return {
    pageSize: view.pageSize,
    pageToken,
    orderBy: orderBy(view.sort),
    statuses: statusFilter(view.statuses, ROLLOUT_STATUSES),
    rolloutIdContains: view.search,
    unroutableOnly: view.unroutable,
  };
}

/**
 * Which of the listed rollouts are unroutable now: one ListRollouts call naming
 * the queued rows that require labels (the only ones that can be); undefined
 * when no row can be, so no call is made.
 */
export function unroutableAmongRequest(
  rollouts: readonly { rolloutId: string; status: RolloutStatus; config?: { requiredLabels: Record<string, string> } }[],
): MessageInitShape<typeof ListRolloutsRequestSchema> | undefined {
  const queued = new Set([RolloutStatus.QUEUING, RolloutStatus.REQUEUING]);
  const ids = rollouts
    .filter((r) => queued.has(r.status) && Object.keys(r.config?.requiredLabels ?? {}).length > 0)
    .map((r) => r.rolloutId);
  if (ids.length === 0) return undefined;
  return { pageSize: ids.length, unroutableOnly: true, filter: ids.map((id) => `rollout_id = ${JSON.stringify(id)}`).join(" OR ") };
}

// ---- shared ----------------------------------------------------------------

/** Clicking the sorted column flips its direction; another column starts ascending (times: newest first). */
export function toggleSort(current: Sort, field: string): Sort {
  if (current.field === field) return { field, descending: !current.descending };
  return { field, descending: field.endsWith("_time") };
}

export function orderBy(sort: Sort): string {
  return sort.descending ? `${sort.field} desc` : sort.field;
}

/** All statuses selected is the same as no filter; the server reads empty as "any". */
function statusFilter<S extends number>(selected: S[], all: readonly S[]): S[] {
  return all.every((s) => selected.includes(s)) ? [] : [...selected].sort((a, b) => a - b);
}

function statusesFromParam<S extends number>(
  param: string | null,
  names: Record<string, string | number>,
  all: readonly S[],
  fallback: S[],
): S[] {
  if (param === null) return [...fallback];
  if (param === "all") return [...all];
  const picked = param
    .split(",")
    .map((name) => names[name.trim().toUpperCase()])
    .filter((value): value is S => typeof value === "number" && all.includes(value as S));
  return picked.length > 0 ? [...new Set(picked)] : [...fallback];
}

function statusesToParam<S extends number>(statuses: S[], names: Record<number, string>, all: readonly S[]): string {
  if (all.every((s) => statuses.includes(s))) return "all";
  return all
    .filter((s) => statuses.includes(s))
    .map((s) => names[s]!.toLowerCase())
    .join(",");
}

function sortFromParam(param: string | null, fields: readonly string[], fallback: Sort): Sort {
  if (param === null) return { ...fallback };
  const descending = param.startsWith("-");
  const field = descending ? param.slice(1) : param;
  return fields.includes(field) ? { field, descending } : { ...fallback };
}

function sortToParam(sort: Sort): string {
  return sort.descending ? `-${sort.field}` : sort.field;
}

function pageSizeFromParam(param: string | null): PageSize {
  const size = Number(param);
  return (PAGE_SIZES as readonly number[]).includes(size) ? (size as PageSize) : 50;
}

function sameSet<T>(a: T[], b: T[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

function sameSort(a: Sort, b: Sort): boolean {
  return a.field === b.field && a.descending === b.descending;
}
