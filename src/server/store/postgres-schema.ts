import type pg from "pg";
import { StoreOpenError } from "./sqlite-schema.js";

/**
 * The PostgreSQL schema of Runnerline: forward migrations like the SQLite
 * store's, recorded in runnerline_schema. Several servers share one database,
 * so a migration runs under an advisory lock and only once.
 *
 * Layout (docs/scaleout.md): the same columns as the SQLite file, times as
 * bigint milliseconds, messages as protobuf bytes. The dispatch queue is a
 * column: `queue_seq` is set while a rollout is queued (its place in the
 * queue, from a sequence) and NULL otherwise, with a partial index that holds
 * only queued rows. Worker rows carry the session epoch and the replica
 * holding the session, and their telemetry apart (worker-telemetry.ts), so that
 * heartbeats are written behind in batches; `replicas` is each server's own heartbeat. `ord`
 * keeps insertion order, the lists' last tie-break (as rowid in SQLite).
 */
export const PG_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE rollouts (
    rollout_id    text PRIMARY KEY,
    status        integer NOT NULL,
    mode          integer NOT NULL,
    attempt_count integer NOT NULL,
    create_time   bigint,
    start_time    bigint,
    end_time      bigint,
    version       bigint NOT NULL,
    priority      integer NOT NULL DEFAULT 0,
    message       bytea NOT NULL,
    state         bytea,
    queue_seq     bigint,
    ord           bigint GENERATED ALWAYS AS IDENTITY
  ) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
  CREATE SEQUENCE rollout_queue_seq;
  CREATE INDEX rollouts_queued ON rollouts (queue_seq) WHERE queue_seq IS NOT NULL;
  CREATE INDEX rollouts_by_create_time ON rollouts (create_time, rollout_id);
  CREATE INDEX rollouts_by_status ON rollouts (status, create_time, rollout_id);

  CREATE TABLE attempts (
    attempt_id          text PRIMARY KEY,
    rollout_id          text NOT NULL,
    sequence_id         integer NOT NULL,
    worker_id           text NOT NULL,
    status              integer NOT NULL,
    create_time         bigint,
    start_time          bigint,
    end_time            bigint,
    last_heartbeat_time bigint,
    version             bigint NOT NULL,
    message             bytea NOT NULL,
    telemetry           bytea,
    ord                 bigint GENERATED ALWAYS AS IDENTITY
  ) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
  CREATE INDEX attempts_by_create_time ON attempts (create_time, attempt_id);
  CREATE INDEX attempts_active ON attempts (attempt_id) WHERE status IN (1, 2);
  CREATE INDEX attempts_by_rollout ON attempts (rollout_id, sequence_id);
  CREATE INDEX attempts_by_worker ON attempts (worker_id, create_time);

  CREATE TABLE workers (
    worker_id           text PRIMARY KEY,
    status              integer NOT NULL,
    capacity            integer NOT NULL,
    last_heartbeat_time bigint,
    last_dequeue_time   bigint,
    last_busy_time      bigint,
    last_idle_time      bigint,
    connect_time        bigint,
    create_time         bigint,
    labels              jsonb NOT NULL,
    attachment          text NOT NULL,
    suspect             boolean NOT NULL,
    epoch               integer NOT NULL,
    replica_id          text,
    version             bigint NOT NULL,
    message             bytea NOT NULL,
    telemetry           bytea,
    ord                 bigint GENERATED ALWAYS AS IDENTITY
  ) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
  CREATE INDEX workers_by_status ON workers (status, worker_id);

  CREATE TABLE replicas (
    replica_id     text PRIMARY KEY,
    started_time   bigint NOT NULL,
    heartbeat_time bigint NOT NULL
  );
  `,
  // 2: an operator's cordon (WorkerService.CordonWorker) as a column, as in the SQLite file; rows written before were
  // never cordoned.
  `
  ALTER TABLE workers ADD COLUMN cordoned boolean NOT NULL DEFAULT false;
  `,
  // 3: how many runner sessions each server holds, written with its heartbeat: the servers that hold sessions share
  // the queue (dispatch-queue.ts, QueueShare); one without runners takes no share.
  `
  ALTER TABLE replicas ADD COLUMN sessions integer NOT NULL DEFAULT 0;
  `,
];

export const PG_SCHEMA_VERSION = PG_MIGRATIONS.length;

/** Any number: the advisory lock key under which servers migrate, one at a time ("RNLN"). */
const MIGRATION_LOCK = 0x524e4c4e;

/**
 * Creates or migrates the schema (first the named PostgreSQL schema, already
 * quoted, when one is given); refuses a database written by a newer Runnerline.
 */
export async function migrate(client: pg.PoolClient, where: string, schema?: string): Promise<void> {
  await client.query("BEGIN");
  try {
    await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
    if (schema !== undefined) await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await client.query("CREATE TABLE IF NOT EXISTS runnerline_schema (version integer NOT NULL)");
    const found = await client.query<{ version: number }>("SELECT version FROM runnerline_schema");
    let version = found.rows[0]?.version;
    if (version === undefined) {
      const tables = await client.query<{ name: string }>(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name <> 'runnerline_schema'",
      );
      if (tables.rows.length > 0) {
        throw new StoreOpenError(
          `${where} already has tables (${tables.rows.map((r) => r.name).join(", ")}) but no Runnerline schema; use an empty database or schema`,
        );
      }
      await client.query("INSERT INTO runnerline_schema (version) VALUES (0)");
      version = 0;
    }
    if (version > PG_MIGRATIONS.length) {
      throw new StoreOpenError(
        `${where} has schema version ${version}, newer than this runnerline understands (${PG_MIGRATIONS.length}); run a newer runnerline`,
      );
    }
    for (let v = version; v < PG_MIGRATIONS.length; v++) await client.query(PG_MIGRATIONS[v]!);
    await client.query("UPDATE runnerline_schema SET version = $1", [PG_MIGRATIONS.length]);
    await client.query("COMMIT");
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  }
}
