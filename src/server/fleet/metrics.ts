import type http from "node:http";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { AttemptStatus } from "../../gen/runnerline/v1/attempt_pb.js";
import { RolloutStatus } from "../../gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../gen/runnerline/v1/worker_pb.js";
import type { FleetCounters, FleetEvents, VerdictKind } from "./fleet-counters.js";

/**
 * Prometheus metrics for GET /metrics. Gauges and counters are read from
 * FleetCounters when scraped (the heartbeat path only bumps a number there);
 * histograms are observed when their event happens (an attempt ends, a
 * rollout is dispatched, an RPC answers, a commit finishes). No per-worker
 * labels: the number of series does not grow with the fleet.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  private readonly dispatchLatency: Histogram;
  private readonly attemptDuration: Histogram<"outcome">;
  private readonly rpcDuration: Histogram<"method" | "code">;
  private readonly commitLatency: Histogram;
  private readonly sessionsReplaced: Counter;

  constructor(counters: () => FleetCounters) {
    const registers = [this.registry];
    const lower = (name: string) => name.toLowerCase();
    new Gauge({
      name: "runnerline_workers",
      help: "Workers by status.",
      labelNames: ["status"],
      registers,
      collect() {
        for (const status of [WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN, WorkerStatus.OFFLINE]) {
          this.set({ status: lower(WorkerStatus[status]) }, counters().workers(status));
        }
      },
    });
    const summaryGauge = (name: string, help: string, read: (s: ReturnType<FleetCounters["summary"]>) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(counters().summary()));
        },
      });
    summaryGauge("runnerline_sessions_connected", "Workers holding a runner session now.", (s) => s.workers?.connected ?? 0);
    summaryGauge("runnerline_workers_quarantined", "Workers kept from new work after repeated failures.", (s) => s.workers?.quarantined ?? 0);
    summaryGauge("runnerline_workers_cordoned", "Workers an operator keeps from new work (CordonWorker, DrainWorker).", (s) => s.workers?.cordoned ?? 0);
    summaryGauge("runnerline_capacity_slots", "Sum of the capacity of connected workers.", (s) => s.totalCapacity);
    summaryGauge("runnerline_capacity_used_slots", "Attempts PREPARING or RUNNING now.", (s) => s.usedCapacity);
    summaryGauge("runnerline_queue_depth", "Rollouts waiting in the dispatch queue.", (s) => s.queueDepth);
    summaryGauge("runnerline_queue_oldest_age_seconds", "How long the longest-waiting queued rollout has waited (0 when empty).", (s) =>
      s.oldestQueuedAge === undefined ? 0 : Number(s.oldestQueuedAge.seconds) + s.oldestQueuedAge.nanos / 1e9,
    );
    summaryGauge("runnerline_rollouts_unroutable", "Queued rollouts no connected worker's labels satisfy.", (s) => s.unroutableQueued);
    new Gauge({
      name: "runnerline_rollouts",
      help: "Rollouts kept, by status.",
      labelNames: ["status"],
      registers,
      collect() {
        for (const status of Object.values(RolloutStatus)) {
          if (typeof status !== "number" || status === RolloutStatus.UNSPECIFIED) continue;
          this.set({ status: lower(RolloutStatus[status]) }, counters().rollouts(status));
        }
      },
    });
    new Counter({
      name: "runnerline_attempts_ended_total",
      help: "Attempts that left PREPARING/RUNNING since start, by outcome.",
      labelNames: ["outcome"],
      registers,
      collect() {
        this.reset();
        for (const [status, count] of counters().attemptsEnded) this.inc({ outcome: lower(AttemptStatus[status]) }, count);
      },
    });
    new Counter({
      name: "runnerline_heartbeats_received_total",
      help: "Heartbeats received since start (stream and unary).",
      registers,
      collect() {
        this.reset();
        this.inc(counters().heartbeats);
      },
    });
    new Counter({
      name: "runnerline_quarantines_held_back_total",
      help: "Workers not quarantined since start because the most of the connected fleet that may be (--quarantine-max-percent) was.",
      registers,
      collect() {
        this.reset();
        this.inc(counters().quarantinesHeldBack);
      },
    });
    new Counter({
      name: "runnerline_watchdog_verdicts_total",
      help: "Attempts and rollouts the watchdog ended since start, by kind.",
      labelNames: ["kind"],
      registers,
      collect() {
        this.reset();
        const kinds: VerdictKind[] = ["timeout", "unresponsive", "deadline", "queue_timeout"];
        for (const kind of kinds) this.inc({ kind }, counters().verdicts.get(kind) ?? 0);
      },
    });
    this.sessionsReplaced = new Counter({
      name: "runnerline_sessions_replaced_total",
      help: "Runner sessions a newer session of the same worker id replaced (reconnects after a dead connection, or two runners sharing an id).",
      registers,
    });
    this.dispatchLatency = new Histogram({
      name: "runnerline_dispatch_latency_seconds",
      help: "From joining the queue (enqueue or retry) to the assignment being made.",
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600],
      registers,
    });
    this.attemptDuration = new Histogram({
      name: "runnerline_attempt_duration_seconds",
      help: "From an attempt's start (or dispatch) to its end, by outcome.",
      labelNames: ["outcome"],
      buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
      registers,
    });
    this.rpcDuration = new Histogram({
      name: "runnerline_rpc_duration_seconds",
      help: "Unary RPC handling time, by method and gRPC status code.",
      labelNames: ["method", "code"],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    });
    this.commitLatency = new Histogram({
      name: "runnerline_store_commit_seconds",
      help: "Time a store COMMIT (with its fsync) takes.",
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers,
    });
    collectDefaultMetrics({ register: this.registry, prefix: "runnerline_process_" });
  }

  /** The histograms FleetCounters feeds. */
  readonly fleetEvents: FleetEvents = {
    attemptEnded: (status, seconds) => this.attemptDuration.observe({ outcome: AttemptStatus[status].toLowerCase() }, seconds),
    rolloutDispatched: (seconds) => this.dispatchLatency.observe(seconds),
  };

  observeCommit = (seconds: number) => this.commitLatency.observe(seconds);

  countSessionReplaced = () => this.sessionsReplaced.inc();

  /**
   * Times every unary RPC on both transports. Streams (runner sessions,
   * watches) last as long as their clients want and are left out.
   */
  readonly interceptor: Interceptor = (next) => async (request) => {
    if (request.stream) return next(request);
    const method = `${request.service.typeName}/${request.method.name}`;
    const started = performance.now();
    try {
      const response = await next(request);
      this.rpcDuration.observe({ method, code: codeName(0) }, (performance.now() - started) / 1000);
      return response;
    } catch (error) {
      this.rpcDuration.observe({ method, code: codeName(ConnectError.from(error).code) }, (performance.now() - started) / 1000);
      throw error;
    }
  };

  /** The HTTP route: GET /metrics in the text exposition format. */
  route = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
    if (req.method !== "GET" || (req.url !== "/metrics" && !req.url?.startsWith("/metrics?"))) return false;
    this.registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": this.registry.contentType }).end(text),
      (error: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(String(error)),
    );
    return true;
  };
}

/** gRPC code names as grpc-js and grpcurl print them: OK, NOT_FOUND, … */
function codeName(code: number): string {
  if (code === 0) return "OK";
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
