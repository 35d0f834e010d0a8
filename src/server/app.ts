import { AttemptService } from "../gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../gen/runnerline/v1/rollout_pb.js";
import { RunnerService } from "../gen/runnerline/v1/runner_pb.js";
import { WorkerService } from "../gen/runnerline/v1/worker_pb.js";
import { type ServerConfig, defaultConfig } from "./config.js";
import { Coordinator } from "./dispatch/coordinator.js";
import { systemClock } from "./domain/time.js";
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
  const store = await openStore(config.store);
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
    log: config.log,
  });
  await coordinator.recover();
  const services: ServiceRegistration[] = [
    registerService(RunnerService, runnerService(coordinator, { log: config.log, now: () => clock.now() })),
    registerService(WorkerService, mapDomainErrors(WorkerService, workerService(coordinator, store, { history, heartbeatGraceMs: config.heartbeatGraceMs }))),
    registerService(RolloutService, mapDomainErrors(RolloutService, rolloutService(coordinator, store))),
    registerService(AttemptService, mapDomainErrors(AttemptService, attemptService(coordinator, store))),
  ];
  const grpc = await startGrpcServer({
    address: config.grpcAddress,
    services,
    maxMessageBytes: config.maxMessageBytes,
    keepaliveTimeMs: config.keepaliveTimeMs,
    keepaliveTimeoutMs: config.keepaliveTimeoutMs,
  });
  const http = await startHttpServer({
    address: config.httpAddress,
    services,
    maxMessageBytes: config.maxMessageBytes,
    routes: webPageRoutes(),
  });
  const watchdog = coordinator.startTimers((error) => config.log(`timer check failed: ${String(error)}`));
  config.log(`serving gRPC on ${hostOf(config.grpcAddress)}:${grpc.port}, HTTP on ${hostOf(config.httpAddress)}:${http.port}, store ${config.store}`);
  return {
    grpcPort: grpc.port,
    httpPort: http.port,
    coordinator,
    async close() {
      const started = clock.now();
      const { held } = await coordinator.drain("server shutting down", config.drainTimeoutMs);
      if (held.length > 0) {
        const attempts = held.flatMap((session) => session.attemptIds);
        config.log(`drain timed out after ${clock.now() - started} ms; ${held.length} sessions still hold ${attempts.length} attempts (${attempts.join(", ")}) — they resume after restart`);
      } else {
        config.log(`drain finished in ${clock.now() - started} ms: no runner holds an attempt`);
      }
      watchdog.stop();
      await Promise.all([grpc.shutdown(2_000), http.close()]);
      await store.close();
      config.log("stopped");
    },
  };
}

const hostOf = (address: string) => address.slice(0, address.lastIndexOf(":"));
