import { AttemptService } from "../gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../gen/runnerline/v1/rollout_pb.js";
import { RunnerService } from "../gen/runnerline/v1/runner_pb.js";
import { WorkerService } from "../gen/runnerline/v1/worker_pb.js";
import { type ServerConfig, defaultConfig } from "./config.js";
import { Coordinator } from "./dispatch/coordinator.js";
import { allObservers } from "./dispatch/transition-observer.js";
import { systemClock } from "./domain/time.js";
import { eventLog } from "./fleet/event-log.js";
import { FleetCounters, type RoutingView } from "./fleet/fleet-counters.js";
import { ServerMetrics } from "./fleet/metrics.js";
import { Retention, startRetention } from "./fleet/retention.js";
import { createLogger, lineLog, type Logger, loggerForLines } from "./logging.js";
import { attemptService } from "./services/attempt-service.js";
import { mapDomainErrors } from "./services/errors.js";
import { rolloutService } from "./services/rollout-service.js";
import { runnerService } from "./services/runner-service.js";
import { workerService } from "./services/worker-service.js";
import { openStore } from "./store/open-store.js";
import { WorkerHistory } from "./telemetry/worker-history.js";
import { startGrpcServer } from "./transport/grpc-server.js";
import { startHttpServer } from "./transport/http-server.js";
import { registerService, type ServiceRegistration } from "./transport/registration.js";
import { webPageRoutes } from "./transport/web-page.js";

export interface RunningServer {
  grpcPort: number;
  httpPort: number;
  coordinator: Coordinator;
  /** Counts behind GetFleetSummary and /metrics. */
  fleet: FleetCounters;
  retention: Retention;
  logger: Logger;
  /**
   * Graceful shutdown: stops dispatching, sends Drain to every runner and
   * waits (up to the drain timeout) for them to report what they hold, then
   * stops the listeners and flushes the store.
   */
  close(): Promise<void>;
}

/** Wires store → coordinator → services → both transports. */
export async function startServer(overrides: Partial<ServerConfig> = {}): Promise<RunningServer> {
  const config = defaultConfig(overrides);
  const clock = config.clock ?? systemClock;
  const logger =
    config.logger ?? (config.log !== undefined ? loggerForLines(config.log, config.logLevel) : createLogger({ level: config.logLevel }));
  const log = lineLog(logger);
  let fleet: FleetCounters | undefined;
  const metrics = new ServerMetrics(() => fleet!);
  const store = await openStore(config.store, { onCommit: metrics.observeCommit });
  // Quarantine and label routing are dispatch's to count: asked of the coordinator at summary/scrape time,
  // when it exists.
  const routing: RoutingView = {
    quarantinedWorkers: () => coordinator.quarantinedCount(),
    unroutableQueued: () => coordinator.unroutableCount(),
  };
  fleet = new FleetCounters(clock, routing, metrics.fleetEvents);
  fleet.seed(store);
  const observer = allObservers(fleet, eventLog(logger));
  const history = new WorkerHistory({ samplesPerWorker: config.historySamples, maxBytes: config.historyMaxBytes });
  const coordinator = new Coordinator({
    store,
    clock,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    heartbeatGraceMs: config.heartbeatGraceMs,
    defaultUnresponsiveMs: config.defaultUnresponsiveMs,
    brakeMinFleet: config.brakeMinFleet,
    brakeHoldMs: config.brakeHoldMs,
    retryElsewhereMs: config.retryElsewhereMs,
    quarantine: {
      failures: config.quarantineFailures,
      windowMs: config.quarantineWindowMs,
      backoffMs: config.quarantineBackoffMs,
      maxBackoffMs: config.quarantineMaxBackoffMs,
    },
    onHeartbeat: (workerId, data, now) => history.record(workerId, data.snapshot, now),
    log,
    observer,
  });
  await coordinator.recover();
  const retention = new Retention({ store, clock, retainMs: config.retainMs, observer, logger });
  const services: ServiceRegistration[] = [
    registerService(RunnerService, runnerService(coordinator, { logger, log, now: () => clock.now() })),
    registerService(
      WorkerService,
      mapDomainErrors(WorkerService, workerService(coordinator, store, { clock, fleet, retention, history, heartbeatGraceMs: config.heartbeatGraceMs })),
    ),
    registerService(RolloutService, mapDomainErrors(RolloutService, rolloutService(coordinator, store, clock))),
    registerService(AttemptService, mapDomainErrors(AttemptService, attemptService(coordinator, store, clock))),
  ];
  const grpc = await startGrpcServer({
    address: config.grpcAddress,
    services,
    maxMessageBytes: config.maxMessageBytes,
    keepaliveTimeMs: config.keepaliveTimeMs,
    keepaliveTimeoutMs: config.keepaliveTimeoutMs,
    interceptors: [metrics.interceptor],
  });
  const webPage = webPageRoutes();
  const http = await startHttpServer({
    address: config.httpAddress,
    services,
    maxMessageBytes: config.maxMessageBytes,
    interceptors: [metrics.interceptor],
    routes: (req, res) => metrics.route(req, res) || webPage(req, res),
  });
  const watchdog = coordinator.startTimers((error) => logger.error({ err: error }, "timer check failed"));
  const retaining = startRetention(retention, config.retentionPeriodMs, (error) => logger.error({ err: error }, "retention failed"));
  logger.info(
    { grpc: `${hostOf(config.grpcAddress)}:${grpc.port}`, http: `${hostOf(config.httpAddress)}:${http.port}`, store: config.store },
    `serving gRPC on ${hostOf(config.grpcAddress)}:${grpc.port}, HTTP on ${hostOf(config.httpAddress)}:${http.port}, store ${config.store}`,
  );
  return {
    grpcPort: grpc.port,
    httpPort: http.port,
    coordinator,
    fleet,
    retention,
    logger,
    async close() {
      logger.info({ drainTimeoutMs: config.drainTimeoutMs }, "draining runners");
      const started = clock.now();
      const { held } = await coordinator.drain("server shutting down", config.drainTimeoutMs);
      if (held.length > 0) {
        const attempts = held.flatMap((session) => session.attemptIds);
        logger.warn(
          { sessions: held.length, attemptIds: attempts },
          `drain timed out after ${clock.now() - started} ms; ${held.length} sessions still hold ${attempts.length} attempts (${attempts.join(", ")}) — they resume after restart`,
        );
      } else {
        logger.info(`drain finished in ${clock.now() - started} ms: no runner holds an attempt`);
      }
      watchdog.stop();
      retaining.stop();
      await Promise.all([grpc.shutdown(2_000), http.close()]);
      await store.close();
      logger.info("stopped");
    },
  };
}

const hostOf = (address: string) => address.slice(0, address.lastIndexOf(":"));
