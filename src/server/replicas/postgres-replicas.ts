import pg from "pg";

/** Any number: the advisory lock whose holder runs the fleet's chores ("RNLW"). */
const LEADER_LOCK = 0x524e4c57;

export interface ReplicaOptions {
  url: string;
  replicaId: string;
  /** How often this server marks itself alive (default 1 s). */
  heartbeatMs?: number;
  /** A server not seen for this long is dead (default 5 s). */
  deadAfterMs?: number;
  now: () => number;
  log: (line: string) => void;
}

/** A worker whose session was held by a server that died. */
export interface OrphanedSession {
  workerId: string;
  epoch: number;
}

/**
 * This server among the replicas on one PostgreSQL database: a row in
 * `replicas` that it keeps fresh, and a try for the leader's advisory lock
 * (held on a connection of its own, so it goes with this process). The
 * leader runs the fleet's chores once for all: it finds sessions held by
 * dead servers, and runs retention.
 */
/**
 * A server's heartbeat: its row upserted with the runner sessions it holds,
 * and the ids of the live servers that hold sessions (the statement's
 * snapshot does not see its own upsert, so this server's row comes from
 * RETURNING).
 */
const BEAT_SQL =
  "WITH me AS (INSERT INTO replicas (replica_id, started_time, heartbeat_time, sessions) VALUES ($1, $2, $2, $4) " +
  "ON CONFLICT (replica_id) DO UPDATE SET heartbeat_time = $2, sessions = $4 RETURNING replica_id, sessions) " +
  "SELECT replica_id FROM me WHERE sessions > 0 UNION " +
  "SELECT replica_id FROM replicas WHERE heartbeat_time >= $3 AND sessions > 0 AND replica_id <> $1";

export class PostgresReplicas {
  private onLive: ((index: number, count: number) => void) | undefined;
  /** How many runner sessions this server holds now (written with each heartbeat). */
  private sessions: () => number = () => 0;
  /** The ids of the live servers holding sessions, sorted, as last read. */
  private live: string[] = [];
  private readonly pool: pg.Pool;
  private leaderClient: pg.PoolClient | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  /** Since when this server's own heartbeats have succeeded without a gap (undefined while they fail). */
  private healthySince: number | undefined;
  private leaderTry: NodeJS.Timeout | undefined;
  private readonly heartbeatMs: number;
  readonly deadAfterMs: number;

  constructor(private readonly options: ReplicaOptions) {
    this.pool = new pg.Pool({ connectionString: options.url, max: 3, connectionTimeoutMillis: 5_000 });
    // Losing the database is survived: idle and checked-out clients alike just fail their queries.
    this.pool.on("error", () => {});
    this.pool.on("connect", (client) => client.on("error", () => {}));
    this.heartbeatMs = options.heartbeatMs ?? 1_000;
    this.deadAfterMs = options.deadAfterMs ?? 5_000;
  }

  /** Registers this server; it then keeps its row fresh and tries for leadership. */
  async start() {
    const now = this.options.now();
    await this.beat(now);
    this.healthySince = now;
    this.heartbeat = setInterval(() => {
      const at = this.options.now();
      this.beat(at).then(
        () => (this.healthySince ??= at),
        () => (this.healthySince = undefined),
      );
    }, this.heartbeatMs);
    this.heartbeat.unref();
    const tryLead = () => {
      this.tryLeadership().catch(() => undefined);
    };
    this.leaderTry = setInterval(tryLead, 2 * this.heartbeatMs);
    this.leaderTry.unref();
    tryLead();
  }

  /**
   * Marks this server alive with the sessions it holds, and learns which
   * servers holding sessions are (seen within deadAfterMs, by id): the ranks
   * for QueueShare.
   */
  private async beat(now: number) {
    const { rows } = await this.pool.query<{ replica_id: string }>(BEAT_SQL, [
      this.options.replicaId,
      now,
      now - this.deadAfterMs,
      this.sessions(),
    ]);
    const live = rows.map((row) => row.replica_id).sort();
    if (live.join(" ") !== this.live.join(" ")) {
      this.live = live;
      this.tellLive();
    }
  }

  /** This server's rank among the live servers holding sessions, and their number; {0, 1} while it holds none. */
  private tellLive() {
    const index = this.live.indexOf(this.options.replicaId);
    this.onLive?.(index < 0 ? 0 : index, index < 0 ? 1 : this.live.length);
  }

  /**
   * Writes `sessions()` with each heartbeat, and tells `handler` this server's
   * rank among the live servers holding sessions and their number: now, and
   * whenever that set changes.
   */
  followLive(sessions: () => number, handler: (index: number, count: number) => void) {
    this.sessions = sessions;
    this.onLive = handler;
    this.tellLive();
  }

  /** Whether this server holds the leader's lock now. */
  isLeader(): boolean {
    return this.leaderClient !== undefined;
  }

  /**
   * Sessions whose server has not marked itself alive for deadAfterMs (or has
   * no row at all), and the dead servers' rows, which it removes.
   */
  async orphanedSessions(): Promise<OrphanedSession[]> {
    const now = this.options.now();
    // After the database was out of reach every server's row is stale: wait until the others had time to beat again.
    if (this.healthySince === undefined || now - this.healthySince < this.deadAfterMs) return [];
    const cutoff = now - this.deadAfterMs;
    const { rows } = await this.pool.query<{ worker_id: string; epoch: number }>(
      "SELECT worker_id, epoch FROM workers w WHERE attachment = 'open' AND w.replica_id IS DISTINCT FROM $2 AND NOT EXISTS " +
        "(SELECT 1 FROM replicas r WHERE r.replica_id = w.replica_id AND r.heartbeat_time >= $1)",
      [cutoff, this.options.replicaId],
    );
    const dead = await this.pool.query<{ replica_id: string }>("DELETE FROM replicas WHERE heartbeat_time < $1 RETURNING replica_id", [
      cutoff,
    ]);
    for (const { replica_id } of dead.rows) this.options.log(`replica ${replica_id} not seen for ${this.deadAfterMs} ms: taken as dead`);
    return rows.map((row) => ({ workerId: row.worker_id, epoch: row.epoch }));
  }

  async close() {
    clearInterval(this.heartbeat);
    clearInterval(this.leaderTry);
    await this.pool.query("DELETE FROM replicas WHERE replica_id = $1", [this.options.replicaId]).catch(() => undefined);
    this.leaderClient?.release();
    this.leaderClient = undefined;
    await this.pool.end().catch(() => undefined);
  }

  private async tryLeadership() {
    if (this.leaderClient !== undefined) return;
    const client = await this.pool.connect();
    try {
      const { rows } = await client.query<{ locked: boolean }>("SELECT pg_try_advisory_lock($1) AS locked", [LEADER_LOCK]);
      if (rows[0]?.locked) {
        this.leaderClient = client;
        // Losing the connection loses the lock: step down and try again later.
        client.on("error", () => {
          if (this.leaderClient === client) this.leaderClient = undefined;
        });
        this.options.log(`replica ${this.options.replicaId} leads the fleet's chores (dead-replica sweep, retention)`);
        return;
      }
    } catch {
      // Try again at the next tick.
    }
    client.release();
  }
}
