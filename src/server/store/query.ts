import type { Attempt, AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout, RolloutStatus } from "../../gen/runnerline/v1/rollout_pb.js";
import type { Worker, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import { msOf } from "../domain/time.js";
import type { FilterExpression } from "../filter/compile.js";
import { matchesPredicate } from "../filter/evaluate.js";

/** A field a list may be ordered by: how to read it, and whether it is a time. */
export interface SortField<T> {
  read(item: T): string | number | undefined;
  /** Unset times sort last ascending and first descending (DESIGN §5.2). */
  time: boolean;
}

export type SortCatalog<T> = Readonly<Record<string, SortField<T>>>;

export interface OrderTerm {
  field: string;
  descending: boolean;
}

/** One page of a filtered, ordered list. */
export interface ListQuery<Filter> {
  filter: Filter;
  orderBy: OrderTerm[];
  offset: number;
  limit: number;
}

export interface Page<T> {
  items: T[];
  /** Matches over all pages. */
  total: number;
}

/** The `filter` expression of a list request, ANDed with the request's other fields (undefined: none). */
interface ExpressionFilter {
  expression?: FilterExpression;
}

export interface RolloutFilter extends ExpressionFilter {
  statuses: RolloutStatus[];
  idContains: string;
  /** Only these rollouts (e.g. the coordinator's unroutable ones); any when unset. */
  onlyIds?: ReadonlySet<string>;
}

export interface AttemptFilter extends ExpressionFilter {
  rolloutId: string;
  workerId: string;
  statuses: AttemptStatus[];
}

export interface WorkerFilter extends ExpressionFilter {
  statuses: WorkerStatus[];
  idContains: string;
  labels: Record<string, string>;
}

const time = <T>(read: (item: T) => Parameters<typeof msOf>[0]): SortField<T> => ({
  read: (item) => msOf(read(item)),
  time: true,
});
const plain = <T>(read: (item: T) => string | number): SortField<T> => ({ read, time: false });

export const ROLLOUT_SORT_FIELDS: SortCatalog<Rollout> = {
  rollout_id: plain((r) => r.rolloutId),
  status: plain((r) => r.status),
  mode: plain((r) => r.mode),
  create_time: time((r) => r.createTime),
  start_time: time((r) => r.startTime),
  end_time: time((r) => r.endTime),
  attempt_count: plain((r) => r.attemptCount),
  priority: plain((r) => r.priority),
};

export const ATTEMPT_SORT_FIELDS: SortCatalog<Attempt> = {
  attempt_id: plain((a) => a.attemptId),
  rollout_id: plain((a) => a.rolloutId),
  sequence_id: plain((a) => a.sequenceId),
  worker_id: plain((a) => a.workerId),
  status: plain((a) => a.status),
  create_time: time((a) => a.createTime),
  start_time: time((a) => a.startTime),
  end_time: time((a) => a.endTime),
  last_heartbeat_time: time((a) => a.lastHeartbeatTime),
};

export const WORKER_SORT_FIELDS: SortCatalog<Worker> = {
  worker_id: plain((w) => w.workerId),
  status: plain((w) => w.status),
  capacity: plain((w) => w.capacity),
  last_heartbeat_time: time((w) => w.lastHeartbeatTime),
  last_dequeue_time: time((w) => w.lastDequeueTime),
  last_busy_time: time((w) => w.lastBusyTime),
  last_idle_time: time((w) => w.lastIdleTime),
  connect_time: time((w) => w.connectTime),
  create_time: time((w) => w.createTime),
};

const matchesExpression = (f: ExpressionFilter, message: object) =>
  f.expression === undefined || matchesPredicate(f.expression.predicate, message);

export const matchesRollout = (f: RolloutFilter, r: Rollout) =>
  (f.statuses.length === 0 || f.statuses.includes(r.status)) &&
  r.rolloutId.includes(f.idContains) &&
  (f.onlyIds === undefined || f.onlyIds.has(r.rolloutId)) &&
  matchesExpression(f, r);

export const matchesAttempt = (f: AttemptFilter, a: Attempt) =>
  (f.rolloutId === "" || a.rolloutId === f.rolloutId) &&
  (f.workerId === "" || a.workerId === f.workerId) &&
  (f.statuses.length === 0 || f.statuses.includes(a.status)) &&
  matchesExpression(f, a);

export const matchesWorker = (f: WorkerFilter, w: Worker) =>
  (f.statuses.length === 0 || f.statuses.includes(w.status)) &&
  w.workerId.includes(f.idContains) &&
  Object.entries(f.labels).every(([key, value]) => w.labels[key] === value) &&
  matchesExpression(f, w);

/**
 * Filters, sorts and slices in memory. The last order term must be the id, so
 * that equal keys keep one order from page to page.
 */
export function pageOf<T>(
  items: Iterable<T>,
  matches: (item: T) => boolean,
  catalog: SortCatalog<T>,
  query: ListQuery<unknown>,
): Page<T> {
  const matching: T[] = [];
  for (const item of items) if (matches(item)) matching.push(item);
  const terms = query.orderBy.map((term) => ({ ...term, field: catalog[term.field]! }));
  matching.sort((a, b) => {
    for (const { field, descending } of terms) {
      const order = compareValues(field.read(a), field.read(b), field.time);
      if (order !== 0) return descending ? -order : order;
    }
    return 0;
  });
  return { items: matching.slice(query.offset, query.offset + query.limit), total: matching.length };
}

function compareValues(a: string | number | undefined, b: string | number | undefined, isTime: boolean): number {
  if (a === b) return 0;
  if (a === undefined) return isTime ? 1 : -1;
  if (b === undefined) return isTime ? -1 : 1;
  return a < b ? -1 : 1;
}
