import { AttemptService } from "../gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../gen/runnerline/v1/rollout_pb.js";
import { RunnerService } from "../gen/runnerline/v1/runner_pb.js";
import { WorkerService } from "../gen/runnerline/v1/worker_pb.js";
import { type ServerConfig, defaultConfig } from "./config.js";
import { Coordinator } from "./dispatch/coordinator.js";
import { allObservers } from "./dispatch/transition-observer.js";
import { startWatchdog } from "./dispatch/watchdog.js";
import { systemClock } from "./domain/time.js";
import { eventLog } from "./fleet/event-log.js";
import { FleetCounters, NO_ROUTING, type RoutingView } from "./fleet/fleet-counters.js";
import { ServerMetrics } from "./fleet/metrics.js";
import { Retention, startRetention } from "./fleet/retention.js";
import { createLogger, lineLog, type Logger, loggerForLines } from "./logging.js";
import { attemptService } from "./services/attempt-service.js";
import { mapDomainErrors } from "./services/errors.js";
import { rolloutService } from "./services/rollout-service.js";
import { runnerService } from "./services/runner-service.js";
import { workerService } from "./services/worker-service.js";
import { openStore } from "./store/open-store.js";
import { startGrpcServer } from "./transport/grpc-server.js";
import { startHttpServer } from "./transport/http-server.js";
import { registerService, type ServiceRegistration } from "./transport/registration.js";

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
  // Quarantine and label routing are dispatch's to count: wire them here (read lazily, at summary/scrape time)
  // once the coordinator exposes them; until then the summary and /metrics report 0 for both.
  const routing: RoutingView = NO_ROUTING;
  fleet = new FleetCounters(clock, routing, metrics.fleetEvents);
  fleet.seed(store);
  const observer = allObservers(fleet, eventLog(logger));
  const coordinator = new Coordinator({
    store,
    clock,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    heartbeatGraceMs: config.heartbeatGraceMs,
    defaultUnresponsiveMs: config.defaultUnresponsiveMs,
    brakeMinFleet: config.brakeMinFleet,
    brakeHoldMs: config.brakeHoldMs,
    log,
    observer,
  });
  await coordinator.recover();
  const retention = new Retention({ store, clock, retainMs: config.retainMs, observer, logger });
  const services: ServiceRegistration[] = [
    registerService(RunnerService, runnerService(coordinator, { logger, log, now: () => clock.now() })),
    registerService(WorkerService, mapDomainErrors(WorkerService, workerService(coordinator, store, { clock, fleet, retention }))),
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
  const http = await startHttpServer({
    address: config.httpAddress,
    services,
    maxMessageBytes: config.maxMessageBytes,
    interceptors: [metrics.interceptor],
    routes: metrics.route,
  });
  const watchdog = startWatchdog(coordinator, config.watchdogPeriodMs, (error) => logger.error({ err: error }, "watchdog failed"));
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
      const { remaining } = await coordinator.drain("server shutting down", config.drainTimeoutMs);
      if (remaining > 0) logger.warn({ remaining }, `drain timed out; ${remaining} sessions still open — their attempts resume after restart`);
      watchdog.stop();
      retaining.stop();
      await Promise.all([grpc.shutdown(2_000), http.close()]);
      await store.close();
      logger.info("stopped");
    },
  };
}

const hostOf = (address: string) => address.slice(0, address.lastIndexOf(":"));
