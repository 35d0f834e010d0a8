import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../src/gen/runnerline/v1/worker_pb.js";
import {
  ROLLOUT_SORT_FIELDS as SERVER_ROLLOUT_SORT_FIELDS,
  WORKER_SORT_FIELDS as SERVER_WORKER_SORT_FIELDS,
} from "../../src/server/store/query.js";
import {
  DEFAULT_ROLLOUTS_VIEW,
  DEFAULT_RUNNERS_VIEW,
  listRolloutsRequest,
  listWorkersRequest,
  matchesRunnersView,
  rolloutsViewFromUrl,
  unroutableAmongRequest,
  rolloutsViewToUrl,
  runnersViewFromUrl,
  runnersViewToUrl,
  toggleSort,
  watchWorkersRequest,
  ROLLOUT_SORT_FIELDS as WEB_ROLLOUT_SORT_FIELDS,
  WORKER_SORT_FIELDS as WEB_WORKER_SORT_FIELDS,
} from "../../web/src/table-query.js";
import { cordonLabel, cordonSummary } from "../../web/src/cordon.js";
import { isQuarantined } from "../../web/src/quarantine.js";

const NOW = Date.parse("2026-12-03T04:00:00Z");

describe("runners view ↔ URL", () => {
  it("the default view has a plain URL and hides OFFLINE", () => {
    expect(runnersViewToUrl(DEFAULT_RUNNERS_VIEW)).toBe("");
    expect(runnersViewFromUrl("")).toEqual(DEFAULT_RUNNERS_VIEW);
    expect(runnersViewFromUrl("").statuses).not.toContain(WorkerStatus.OFFLINE);
  });

  it("round-trips search, statuses, labels, sort and page size", () => {
    const view = {
      search: "gpu-",
      statuses: [WorkerStatus.BUSY, WorkerStatus.IDLE],
      labels: { zone: "a", gpu: "h100" },
      quarantined: false,
      cordoned: false,
      sort: { field: "last_heartbeat_time", descending: true },
      pageSize: 200 as const,
    };
    const query = runnersViewToUrl(view);
    expect(query).toBe("q=gpu-&status=idle%2Cbusy&label=gpu%3Ah100&label=zone%3Aa&sort=-last_heartbeat_time&size=200");
    expect(runnersViewFromUrl(query)).toEqual({ ...view, statuses: [WorkerStatus.IDLE, WorkerStatus.BUSY] });
  });

  it("all statuses is 'all' in the URL and no filter in the request", () => {
    const view = { ...DEFAULT_RUNNERS_VIEW, statuses: [WorkerStatus.OFFLINE, WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN] };
    expect(runnersViewToUrl(view)).toBe("status=all");
    expect(runnersViewFromUrl("status=all").statuses).toHaveLength(4);
    expect(listWorkersRequest(view, "").statuses).toEqual([]);
  });

  it("ignores what it cannot read instead of failing", () => {
    const view = runnersViewFromUrl("status=bogus&sort=-cpu&size=7&label=nocolon");
    expect(view).toEqual(DEFAULT_RUNNERS_VIEW);
  });

  it("maps onto ListWorkers and WatchWorkers parameters", () => {
    const view = runnersViewFromUrl("q=cpu&label=pool:cpu&sort=-worker_id&size=100");
    expect(listWorkersRequest(view, "tok")).toEqual({
      pageSize: 100,
      pageToken: "tok",
      orderBy: "worker_id desc",
      statuses: [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN],
      workerIdContains: "cpu",
      labels: { pool: "cpu" },
      filter: "",
    });
    // No status filter on the watch: rows that leave the view must still be reported.
    expect(watchWorkersRequest(view)).toEqual({ workerIdContains: "cpu", changesOnly: true });
  });

  it("matches workers the way ListWorkers filters them", () => {
    const view = runnersViewFromUrl("q=cpu&label=pool:cpu");
    const worker = { workerId: "cpu-1", status: WorkerStatus.IDLE, labels: { pool: "cpu", zone: "a" } };
    expect(matchesRunnersView(view, worker, NOW)).toBe(true);
    expect(matchesRunnersView(view, { ...worker, status: WorkerStatus.OFFLINE }, NOW)).toBe(false);
    expect(matchesRunnersView(view, { ...worker, labels: { pool: "gpu" } }, NOW)).toBe(false);
    expect(matchesRunnersView(view, { ...worker, workerId: "gpu-1" }, NOW)).toBe(false);
  });

  it("the quarantined filter is in the URL and becomes the ListWorkers filter quarantine_until > now", () => {
    const view = runnersViewFromUrl("quarantined=1");
    expect(view).toEqual({ ...DEFAULT_RUNNERS_VIEW, quarantined: true });
    expect(runnersViewToUrl(view)).toBe("quarantined=1");
    expect(listWorkersRequest(view, "").filter).toBe("quarantine_until > now");
    expect(listWorkersRequest(DEFAULT_RUNNERS_VIEW, "").filter).toBe("");
    // The watch stays unfiltered: a released runner must still be reported so its row can go.
    expect(watchWorkersRequest(view)).toEqual({ workerIdContains: "", changesOnly: true });
  });

  it("the cordoned filter is in the URL, becomes the ListWorkers filter cordoned = true, and combines with quarantined", () => {
    const view = runnersViewFromUrl("cordoned=1");
    expect(view).toEqual({ ...DEFAULT_RUNNERS_VIEW, cordoned: true });
    expect(runnersViewToUrl(view)).toBe("cordoned=1");
    expect(listWorkersRequest(view, "").filter).toBe("cordoned = true");
    const both = runnersViewFromUrl("quarantined=1&cordoned=1");
    expect(listWorkersRequest(both, "").filter).toBe("quarantine_until > now AND cordoned = true");
    const worker = { workerId: "w", status: WorkerStatus.IDLE, labels: {} };
    expect(matchesRunnersView(view, worker, NOW)).toBe(false);
    expect(matchesRunnersView(view, { ...worker, cordoned: true }, NOW)).toBe(true);
    expect(matchesRunnersView(DEFAULT_RUNNERS_VIEW, { ...worker, cordoned: true }, NOW)).toBe(true);
  });

  it("a cordoned runner's badge says CORDONED, a draining one's DRAINING, with why, who and when", () => {
    const base = { cordoned: true, draining: false, cordonReason: "disk swap", cordonedBy: "ops", cordonTime: timestampFromMs(NOW) };
    expect(cordonLabel(base)).toBe("CORDONED");
    expect(cordonLabel({ ...base, draining: true })).toBe("DRAINING");
    expect(cordonLabel({ ...base, cordoned: false })).toBeUndefined();
    expect(cordonSummary(base)).toBe(`disk swap · by ops · since ${new Date(NOW).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")}`);
    expect(cordonSummary({ ...base, cordonReason: "", cordonedBy: "" })).toMatch(/^no reason given · since /);
  });

  it("matches quarantined runners by quarantine_until against the page's clock", () => {
    const view = runnersViewFromUrl("quarantined=1");
    const worker = { workerId: "w", status: WorkerStatus.IDLE, labels: {} };
    expect(matchesRunnersView(view, worker, NOW)).toBe(false);
    expect(matchesRunnersView(view, { ...worker, quarantineUntil: timestampFromMs(NOW + 30_000) }, NOW)).toBe(true);
    expect(matchesRunnersView(view, { ...worker, quarantineUntil: timestampFromMs(NOW - 1) }, NOW)).toBe(false);
    expect(matchesRunnersView(DEFAULT_RUNNERS_VIEW, { ...worker, quarantineUntil: timestampFromMs(NOW - 1) }, NOW)).toBe(true);
    expect(isQuarantined({ quarantineUntil: timestampFromMs(NOW + 1) }, NOW)).toBe(true);
    expect(isQuarantined({ quarantineUntil: timestampFromMs(NOW) }, NOW)).toBe(false);
    expect(isQuarantined({}, NOW)).toBe(false);
  });
});

describe("rollouts view ↔ URL", () => {
  it("defaults to every status, newest first", () => {
    expect(rolloutsViewToUrl(DEFAULT_ROLLOUTS_VIEW)).toBe("");
    expect(listRolloutsRequest(DEFAULT_ROLLOUTS_VIEW, "")).toEqual({
      pageSize: 50,
      pageToken: "",
      orderBy: "create_time desc",
      statuses: [],
      rolloutIdContains: "",
      unroutableOnly: false,
    });
  });

  it("round-trips a filtered view", () => {
    const query = "q=eval&status=succeeded%2Cfailed&sort=rollout_id&size=500";
    const view = rolloutsViewFromUrl(query);
    expect(view).toEqual({ search: "eval", statuses: [RolloutStatus.SUCCEEDED, RolloutStatus.FAILED], unroutable: false, sort: { field: "rollout_id", descending: false }, pageSize: 500 });
    expect(listRolloutsRequest(rolloutsViewFromUrl("sort=-priority"), "").orderBy).toBe("priority desc");
    expect(rolloutsViewToUrl(view)).toBe(query);
    expect(listRolloutsRequest(view, "").statuses).toEqual([RolloutStatus.SUCCEEDED, RolloutStatus.FAILED]);
  });

  it("keeps the unroutable filter in the URL and asks the server for it", () => {
    const view = rolloutsViewFromUrl("unroutable=1");
    expect(view.unroutable).toBe(true);
    expect(rolloutsViewToUrl(view)).toBe("unroutable=1");
    expect(listRolloutsRequest(view, "").unroutableOnly).toBe(true);
  });

  it("asks which listed rollouts are unroutable only for queued ones that require labels", () => {
    const row = (rolloutId: string, status: RolloutStatus, requiredLabels: Record<string, string> = {}) => ({ rolloutId, status, config: { requiredLabels } });
    expect(unroutableAmongRequest([row("a", RolloutStatus.QUEUING), row("b", RolloutStatus.RUNNING, { pool: "tpu" })])).toBeUndefined();
    expect(unroutableAmongRequest([row("a", RolloutStatus.QUEUING, { pool: "tpu" }), row("b", RolloutStatus.REQUEUING, { x: "1" }), row("c", RolloutStatus.SUCCEEDED, { x: "1" })])).toEqual({
      pageSize: 2,
      unroutableOnly: true,
      filter: 'rollout_id = "a" OR rollout_id = "b"',
    });
  });
});

it("sorting flips the current column, starts others ascending (times newest first)", () => {
  expect(toggleSort({ field: "worker_id", descending: false }, "worker_id")).toEqual({ field: "worker_id", descending: true });
  expect(toggleSort({ field: "worker_id", descending: true }, "status")).toEqual({ field: "status", descending: false });
  expect(toggleSort({ field: "worker_id", descending: false }, "last_busy_time")).toEqual({ field: "last_busy_time", descending: true });
});

describe("sortable columns", () => {
  it("are ones the server can order by (a column the page offers but the server refuses would fail the list call)", () => {
    for (const field of WEB_WORKER_SORT_FIELDS) expect(Object.keys(SERVER_WORKER_SORT_FIELDS)).toContain(field);
    for (const field of WEB_ROLLOUT_SORT_FIELDS) expect(Object.keys(SERVER_ROLLOUT_SORT_FIELDS)).toContain(field);
  });
});
