import { randomBytes } from "node:crypto";
import { type FleetSummary, WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import type { Coordinator } from "../dispatch/coordinator.js";
import { type Clock, msOf } from "../domain/time.js";
import { FleetCounters, type RoutingView } from "../fleet/fleet-counters.js";
import type { Store } from "../store/store.js";
import { PostgresBus } from "./postgres-bus.js";
import { PostgresReplicas } from "./postgres-replicas.js";

/** How often the leader looks for sessions of dead servers. */
const CHORES_MS = 1_000;
/** A fleet summary read from the store is reused for this long (it costs a few queries). */
const SUMMARY_TTL_MS = 1_000;

/** A new server's id among the replicas: random, so a restarted process is a new replica. */
export const newReplicaId = () => `rp-${randomBytes(6).toString("hex")}`;

/**
 * This server as one of several sharing a PostgreSQL database: the bus to the
 * others, its row among the replicas, and the fleet's chores when it leads
 * (docs/scaleout.md).
 */
export class Replication {
  private chores: NodeJS.Timeout | undefined;
  private summaryCache: { at: number; summary: Promise<FleetSummary> } | undefined;

  private constructor(
    readonly bus: PostgresBus,
    private readonly replicas: PostgresReplicas,
    private readonly clock: Clock,
    private readonly log: (line: string) => void,
  ) {}

  static async join(url: string, replicaId: string, clock: Clock, log: (line: string) => void): Promise<Replication> {
    const bus = await PostgresBus.open(url, replicaId, log);
    const replicas = new PostgresReplicas({ url, replicaId, now: () => clock.now(), log });
    await replicas.start();
    return new Replication(bus, replicas, clock, log);
  }

  /** Whether this server runs the fleet's chores now (retention runs only there). */
  isLeader(): boolean {
    return this.replicas.isLeader();
  }

  /**
   * Sessions held by servers that died are detached, as lost streams (while
   * leading); and the coordinator learns its rank among the live servers
   * that hold runner sessions, each time that set changes, for its share of
   * the queue.
   */
  startChores(coordinator: Coordinator) {
    this.replicas.followLive(
      () => coordinator.sessionCount(),
      (index, count) => coordinator.shareQueue(index, count),
    );
    let running = false;
    this.chores = setInterval(() => {
      if (running || !this.replicas.isLeader()) return;
      running = true;
      this.replicas
        .orphanedSessions()
        .then((orphans) => coordinator.adoptOrphanedSessions(orphans))
        .catch((error: unknown) => this.log(`dead-replica sweep failed: ${error instanceof Error ? error.message : String(error)}`))
        .finally(() => (running = false));
    }, CHORES_MS);
    this.chores.unref();
  }

  /** The fleet summary of every server's fleet, read from the store (each server's own counters see only its changes). */
  fleetSummary(store: Store, coordinator: Coordinator): Promise<FleetSummary> {
    const now = this.clock.now();
    if (this.summaryCache === undefined || now - this.summaryCache.at > SUMMARY_TTL_MS) {
      this.summaryCache = { at: now, summary: this.readSummary(store, coordinator, now) };
      this.summaryCache.summary.catch(() => (this.summaryCache = undefined));
    }
    return this.summaryCache.summary;
  }

  private async readSummary(store: Store, coordinator: Coordinator, now: number): Promise<FleetSummary> {
    const everyone = [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN, WorkerStatus.OFFLINE];
    const [unroutable, workers] = await Promise.all([coordinator.unroutableRolloutIds(), store.workersWithStatus(everyone)]);
    const quarantined = workers.filter((record) => (msOf(record.worker.quarantineUntil) ?? -Infinity) > now).length;
    const routing: RoutingView = { quarantinedWorkers: () => quarantined, unroutableQueued: () => unroutable.length };
    const counters = new FleetCounters(this.clock, routing);
    await counters.seed(store);
    return counters.summary();
  }

  async close() {
    clearInterval(this.chores);
    await this.replicas.close();
    await this.bus.close();
  }
}
