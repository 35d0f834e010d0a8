// The Runners table's live model: ListWorkers gives the page (server-side
// filter, sort and paging: the page never holds the fleet), WatchWorkers
// reports changes as they happen. Changes are batched per frame-ish tick and
// patched into the rows in place (keyed, so nothing flickers); anything that
// may move rows between pages triggers a refetch, at most once per second.
// A periodic refetch picks up heartbeat times and telemetry, which change
// without a watch event.
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Worker } from "../../src/gen/runnerline/v1/worker_pb.js";
import { errorText, workerClient } from "./api.js";
import { listWorkersRequest, matchesRunnersView, type RunnersView, watchWorkersRequest } from "./table-query.js";

export type StreamState = "connecting" | "live" | "down";

export interface RunnersState {
  rows: Worker[];
  /** Matching workers over all pages. */
  total: number;
  /** False until the first page arrived. */
  loaded: boolean;
  /** Why the last page load failed; cleared by the next success. */
  error?: string;
  stream: StreamState;
  streamError?: string;
  pageIndex: number;
  hasNext: boolean;
  heartbeatGraceMs: number;
  /** How often the page is fetched again for heartbeat times and telemetry. */
  pollMs: number;
}

export interface LiveRunnersTiming {
  /** Longest time between refetches of the page for heartbeat times and telemetry (shorter when the grace is). */
  pollMs: number;
  /** How long watch changes are gathered before they are applied. */
  flushMs: number;
  /** Least time between two refetches caused by changes. */
  refetchMs: number;
}

const DEFAULT_TIMING: LiveRunnersTiming = { pollMs: 5_000, flushMs: 100, refetchMs: 1_000 };
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5_000;

export class LiveRunners {
  state: RunnersState = {
    rows: [],
    total: 0,
    loaded: false,
    stream: "connecting",
    pageIndex: 0,
    hasNext: false,
    heartbeatGraceMs: 15_000,
    pollMs: DEFAULT_TIMING.pollMs,
  };
  private readonly abort = new AbortController();
  /** page_token of each page visited so far; tokens are opaque, so "previous" walks back this list. */
  private tokens: string[] = [""];
  private nextToken = "";
  private loadSeq = 0;
  private readonly pending = new Map<string, Worker>();
  /** Workers the watch reported lately, to keep a slower page response from undoing them. */
  private readonly recent = new Map<string, { worker: Worker; at: number }>();
  private flushTimer: ReturnType<typeof setTimeout> | undefined;
  private refetchTimer: ReturnType<typeof setTimeout> | undefined;
  private lastRefetch = 0;
  private pollTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly view: RunnersView,
    private readonly onChange: (state: RunnersState) => void,
    private readonly timing: LiveRunnersTiming = DEFAULT_TIMING,
  ) {
    this.state.pollMs = timing.pollMs;
    void this.watch();
    void this.load();
  }

  stop(): void {
    this.abort.abort();
    clearTimeout(this.pollTimer);
    clearTimeout(this.flushTimer);
    clearTimeout(this.refetchTimer);
  }

  nextPage(): void {
    if (!this.state.hasNext) return;
    this.tokens = [...this.tokens.slice(0, this.state.pageIndex + 1), this.nextToken];
    this.set({ pageIndex: this.state.pageIndex + 1 });
    void this.load();
  }

  previousPage(): void {
    if (this.state.pageIndex === 0) return;
    this.set({ pageIndex: this.state.pageIndex - 1 });
    void this.load();
  }

  /** Fetches the current page now. */
  async load(): Promise<void> {
    const seq = ++this.loadSeq;
    const token = this.tokens[this.state.pageIndex] ?? "";
    this.lastRefetch = performance.now();
    // Every load restarts the poll: it runs only when nothing else refreshed the rows lately.
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => void this.load(), this.state.pollMs);
    try {
      const page = await workerClient.listWorkers(listWorkersRequest(this.view, token), { signal: this.abort.signal });
      if (seq !== this.loadSeq || this.abort.signal.aborted) return;
      this.nextToken = page.nextPageToken;
      const grace = page.heartbeatGrace;
      const graceMs = grace ? Number(grace.seconds) * 1000 + grace.nanos / 1e6 : this.state.heartbeatGraceMs;
      this.set({
        rows: this.keepUnchanged(page.workers.map((w) => this.newest(w))),
        total: page.totalSize,
        loaded: true,
        error: undefined,
        hasNext: page.nextPageToken !== "",
        heartbeatGraceMs: graceMs,
        // Poll at least twice per grace, so a fresh heartbeat is never shown as late.
        pollMs: Math.max(500, Math.min(this.timing.pollMs, graceMs / 2)),
      });
    } catch (error) {
      if (seq !== this.loadSeq || this.abort.signal.aborted) return;
      // A token from before a restart is refused: start again from the first page.
      if (token !== "" && /page_token/.test(errorText(error))) {
        this.tokens = [""];
        this.set({ pageIndex: 0 });
        void this.load();
        return;
      }
      this.set({ loaded: true, error: errorText(error) });
    }
  }

  private async watch(): Promise<void> {
    let retryMs = RETRY_MIN_MS;
    while (!this.abort.signal.aborted) {
      try {
        const stream = workerClient.watchWorkers(watchWorkersRequest(this.view), { signal: this.abort.signal });
        for await (const message of stream) {
          if (message.worker === undefined) {
            // The watch is in place (changes_only's first message): a page fetched from now
            // on misses no change, including those made while the stream was down.
            retryMs = RETRY_MIN_MS;
            this.set({ stream: "live", streamError: undefined });
            void this.load();
            continue;
          }
          this.pending.set(message.worker.workerId, message.worker);
          this.flushTimer ??= setTimeout(() => this.flush(), this.timing.flushMs);
        }
        if (this.abort.signal.aborted) return;
        this.set({ stream: "down", streamError: "the server closed the stream" });
      } catch (error) {
        if (this.abort.signal.aborted) return;
        this.set({ stream: "down", streamError: errorText(error) });
      }
      await sleep(retryMs * (0.75 + Math.random() / 2), this.abort.signal);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  }

  /** Applies the gathered changes: rows of this page change in place; anything else asks for a refetch. */
  private flush(): void {
    this.flushTimer = undefined;
    if (this.abort.signal.aborted || this.pending.size === 0) return;
    const now = performance.now();
    const index = new Map(this.state.rows.map((w, i) => [w.workerId, i]));
    let rows: Worker[] | undefined;
    let refetch = false;
    for (const worker of this.pending.values()) {
      this.recent.set(worker.workerId, { worker, at: now });
      const at = index.get(worker.workerId);
      const belongs = matchesRunnersView(this.view, worker, Date.now());
      if (at === undefined) {
        if (belongs) refetch = true; // a new row, or one sorted onto this page
        continue;
      }
      rows ??= [...this.state.rows];
      rows[at] = worker;
      // Order may have changed; a row that left the filter goes at the refetch, not before
      // (removing it now would shift every row below it twice).
      refetch = true;
    }
    this.pending.clear();
    for (const [id, entry] of this.recent) if (now - entry.at > 10_000) this.recent.delete(id);
    if (rows !== undefined) this.set({ rows });
    if (refetch) this.scheduleRefetch();
  }

  private scheduleRefetch(): void {
    if (this.refetchTimer !== undefined) return;
    // Big pages cost more to fetch and diff: they refetch less often (1 s for 50 rows, 2.5 s for 500).
    const spacing = Math.max(this.timing.refetchMs, this.view.pageSize * 5);
    const wait = Math.max(0, this.lastRefetch + spacing - performance.now());
    this.refetchTimer = setTimeout(() => {
      this.refetchTimer = undefined;
      void this.load();
    }, wait);
  }

  /**
   * Rows that did not change keep their old object, so the table skips them
   * (a row changes with its version, i.e. status or assignment, or with a
   * heartbeat, which brings new telemetry).
   */
  private keepUnchanged(rows: Worker[]): Worker[] {
    const before = new Map(this.state.rows.map((w) => [w.workerId, w]));
    return rows.map((w) => {
      const old = before.get(w.workerId);
      return old !== undefined && old.version === w.version && sameTime(old.lastHeartbeatTime, w.lastHeartbeatTime) ? old : w;
    });
  }

  /** The listed worker, or what the watch said since if that is newer. */
  private newest(listed: Worker): Worker {
    const seen = this.recent.get(listed.workerId)?.worker;
    return seen !== undefined && seen.version > listed.version ? seen : listed;
  }

  private set(patch: Partial<RunnersState>): void {
    this.state = { ...this.state, ...patch };
    this.onChange(this.state);
  }
}

function sameTime(a: Timestamp | undefined, b: Timestamp | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.seconds === b.seconds && a.nanos === b.nanos);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
