/**
 * graphile-worker (0.17, the Node + PostgreSQL job queue) as a peer in the
 * bench's peer scenario (bench/peer.ts), on the same PostgreSQL as the
 * Runnerline rows: its schema installed in a fresh database, one runner per
 * load process with the consumers' concurrency, jobs added with addJobs in the
 * producer's batches. Two configurations: "plain" (the defaults: every worker
 * fetches and completes its own jobs) and "batched" (the batching options of
 * its performance page: a local queue of 500 jobs per process, completions
 * and failures written in batches).
 */
import { Logger, makeWorkerUtils, type Runner, run, runMigrations } from "graphile-worker";
import pg from "pg";
import { wallMs } from "./wire.js";

export type GraphileConfig = "plain" | "batched";

/** The batching options of graphile-worker's performance documentation. */
const BATCHED = { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 };
/** Its default pool size; a pool per process of concurrency + 2 would be 208 connections for the 4 processes. */
const POOL_SIZE = 10;
const TASK = "rollout";

/** Says nothing: the bench prints its own tables. */
const quiet = new Logger(() => () => {});

/** Installs graphile-worker's schema in the (fresh) database at `url`, before anything is measured. */
export async function installGraphile(url: string): Promise<void> {
  await runMigrations({ connectionString: url, logger: quiet });
}

/** A configured runner that starts on start(); `onDone` is told of every job whose completion is written. */
export class GraphileConsumer {
  private runner: Runner | undefined;
  private pool: pg.Pool | undefined;

  constructor(
    private readonly options: { url: string; concurrency: number; config: GraphileConfig; onDone: () => void },
  ) {}

  async start(): Promise<void> {
    // The pool is ours, so that its connections are closed before the bench drops the database, and an error on an
    // idle one (the drop ends them) does not end the process.
    this.pool = new pg.Pool({ connectionString: this.options.url, max: POOL_SIZE });
    this.pool.on("error", () => {});
    this.runner = await run({
      pgPool: this.pool,
      concurrency: this.options.concurrency,
      noHandleSignals: true,
      logger: quiet,
      taskList: { [TASK]: async () => {} },
      ...(this.options.config === "batched" && { preset: { worker: BATCHED } }),
    });
    // "job:complete": the outcome has been written back to the database (after the batch, when batched).
    this.runner.events.on("job:complete", ({ error }) => {
      if (error === null || error === undefined) this.options.onDone();
    });
  }

  async stop(): Promise<void> {
    await this.runner?.stop();
    this.runner = undefined;
    await this.pool?.end();
    this.pool = undefined;
  }
}

/**
 * Resolves with the wall time at which no job is left in graphile-worker's table: a completed job is deleted
 * in the statement that completes it, so an empty table means every completion is durable.
 */
export async function graphileDrained(url: string, limitMs = 60_000): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const until = Date.now() + limitMs;
    for (;;) {
      const { rows } = await client.query<{ n: number }>("SELECT count(*)::integer AS n FROM graphile_worker._private_jobs");
      if (rows[0]!.n === 0) return wallMs();
      if (Date.now() > until) throw new Error(`${rows[0]!.n} graphile-worker jobs still in the table after ${limitMs / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Adds `total` no-op jobs in batches of `batch` with addJobs, one batch at a time, each with a job key (the
 * idempotency key Runnerline's rollout ids and BullMQ's job ids are); returns when the last batch is committed.
 */
export async function enqueueGraphile(args: {
  url: string;
  total: number;
  batch: number;
  payload: (index: number) => unknown;
}): Promise<{ startedAt: number; finishedAt: number }> {
  const utils = await makeWorkerUtils({ connectionString: args.url, logger: quiet });
  try {
    const batches = [];
    for (let from = 0; from < args.total; from += args.batch) {
      const jobs = [];
      for (let i = from; i < Math.min(args.total, from + args.batch); i++) {
        jobs.push({ identifier: TASK, payload: args.payload(i), jobKey: `job-${i}`, maxAttempts: 1 });
      }
      batches.push(jobs);
    }
    const startedAt = wallMs();
    for (const jobs of batches) await utils.addJobs(jobs);
    return { startedAt, finishedAt: wallMs() };
  } finally {
    await utils.release();
  }
}
