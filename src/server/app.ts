import { AttemptService } from "../gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../gen/runnerline/v1/rollout_pb.js";
import { RunnerService } from "../gen/runnerline/v1/runner_pb.js";
import { WorkerService } from "../gen/runnerline/v1/worker_pb.js";
import { isLoopbackHost, setupAuth } from "./auth/setup.js";
import { type ServerConfig, type ServerOptions, defaultConfig } from "./config.js";
import { Coordinator } from "./dispatch/coordinator.js";
import { startWatchdog } from "./dispatch/watchdog.js";
import { systemClock } from "./domain/time.js";
import { attemptService } from "./services/attempt-service.js";
import { mapDomainErrors } from "./services/errors.js";
import { rolloutService } from "./services/rollout-service.js";
import { runnerService } from "./services/runner-service.js";
import { HeartbeatGate } from "./services/heartbeat-gate.js";
import { SessionCount } from "./services/session-count.js";
import { workerService } from "./services/worker-service.js";
import { openStore } from "./store/open-store.js";
import { parseListenAddress } from "./transport/address.js";
import { startGrpcServer } from "./transport/grpc-server.js";
import { startHttpServer } from "./transport/http-server.js";
import { registerService, type ServiceRegistration } from "./transport/registration.js";
import { readTlsFiles } from "./transport/tls.js";

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
  /** Re-reads the auth file (SIGHUP); open sessions are kept. */
  reloadAuth(): Promise<void>;
}

/** Wires store → coordinator → services → both transports. */
export async function startServer(overrides: ServerOptions = {}): Promise<RunningServer> {
  const config = defaultConfig(overrides);
  refuseOpenExposure(config);
  const tls = readTlsFiles(config.tls ?? {});
  const clock = config.clock ?? systemClock;
  const httpMaxMessageBytes = config.httpMaxMessageBytes ?? config.maxMessageBytes;
  // A list page or WaitRollouts answer must fit what either port may send.
  const maxResponseBytes = Math.min(config.limits.maxResponseBytes, config.maxMessageBytes, httpMaxMessageBytes);
  // Beats at the configured interval are never coalesced, however short it is.
  const { heartbeatsPerSecond } = config.limits;
  const beatRate = heartbeatsPerSecond > 0 ? Math.max(heartbeatsPerSecond, 4000 / config.heartbeatIntervalMs) : 0;
  const limits = { ...config.limits, maxResponseBytes, heartbeatsPerSecond: beatRate };
  const store = await openStore(config.store);
  const coordinator = new Coordinator({
    store,
    clock,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    heartbeatGraceMs: config.heartbeatGraceMs,
    defaultUnresponsiveMs: config.defaultUnresponsiveMs,
    brakeMinFleet: config.brakeMinFleet,
    brakeHoldMs: config.brakeHoldMs,
    log: config.log,
  });
  await coordinator.recover();
  const heartbeats = new HeartbeatGate(limits.heartbeatsPerSecond, () => clock.now());
  const sessions = new SessionCount(limits);
  const services: ServiceRegistration[] = [
    registerService(RunnerService, runnerService(coordinator, { log: config.log, now: () => clock.now(), limits, heartbeats, sessions })),
    registerService(WorkerService, mapDomainErrors(WorkerService, workerService(coordinator, store, { limits, heartbeats }))),
    registerService(RolloutService, mapDomainErrors(RolloutService, rolloutService(coordinator, store, limits))),
    registerService(AttemptService, mapDomainErrors(AttemptService, attemptService(coordinator, store, limits))),
  ];
  const auth = await setupAuth({
    authFile: config.authFile,
    services: services.map(({ service }) => service),
    attemptWorker: (attemptId) => store.getAttempt(attemptId)?.workerId,
    log: config.log,
  });
  const grpc = await startGrpcServer({
    address: config.grpcAddress,
    services,
    maxMessageBytes: config.maxMessageBytes,
    keepaliveTimeMs: config.keepaliveTimeMs,
    keepaliveTimeoutMs: config.keepaliveTimeoutMs,
    interceptors: auth.interceptors,
    tls,
  });
  const http = await startHttpServer({
    address: config.httpAddress,
    services,
    maxMessageBytes: httpMaxMessageBytes,
    interceptors: auth.interceptors,
    tls,
  });
  const watchdog = startWatchdog(coordinator, config.watchdogPeriodMs, (error) =>
    config.log(`watchdog failed: ${String(error)}`),
  );
  const security = `${config.authFile ? "tokens" : "no auth"}, ${tls ? (tls.clientCa ? "mutual TLS" : "TLS") : "plaintext"}`;
  config.log(
    `serving gRPC on ${hostOf(config.grpcAddress)}:${grpc.port}, HTTP on ${hostOf(config.httpAddress)}:${http.port}, store ${config.store}, ${security}`,
  );
  return {
    grpcPort: grpc.port,
    httpPort: http.port,
    coordinator,
    async close() {
      const { remaining } = await coordinator.drain("server shutting down", config.drainTimeoutMs);
      if (remaining > 0) config.log(`drain timed out; ${remaining} sessions still open — their attempts resume after restart`);
      watchdog.stop();
      await Promise.all([grpc.shutdown(2_000), http.close()]);
      await store.close();
      config.log("stopped");
    },
    reloadAuth: () => auth.reload(),
  };
}

/**
 * Without tokens anyone who reaches the port can act as any worker and
 * enqueue or cancel anything: allowed on loopback, elsewhere only when asked
 * for by name.
 */
function refuseOpenExposure(config: ServerConfig) {
  if (config.authFile !== undefined) return;
  const exposed = [config.grpcAddress, config.httpAddress].filter((address) => !isLoopbackHost(parseListenAddress(address).host));
  if (exposed.length === 0) return;
  if (!config.insecureNoAuth) {
    throw new Error(
      `refusing to listen on ${exposed.join(" and ")} without authentication: give --auth-file (docs/security.md), ` +
        "bind 127.0.0.1, or pass --insecure-no-auth to accept that anyone who reaches the port can act as any worker",
    );
  }
  config.log(`WARNING: listening on ${exposed.join(" and ")} without authentication (--insecure-no-auth): anyone who reaches the port can act as any worker, enqueue and cancel`);
}

const hostOf = (address: string) => address.slice(0, address.lastIndexOf(":"));
