import { AttemptService } from "../gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../gen/runnerline/v1/rollout_pb.js";
import { RunnerService } from "../gen/runnerline/v1/runner_pb.js";
import { WorkerService } from "../gen/runnerline/v1/worker_pb.js";
import { isLoopbackHost, setupAuth } from "./auth/setup.js";
import { DEFAULT_STORE, type ServerConfig, type ServerOptions, defaultConfig } from "./config.js";
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
import { ShutdownStreams } from "./services/shutdown-streams.js";
import { rolloutService } from "./services/rollout-service.js";
import { runnerService } from "./services/runner-service.js";
import { HeartbeatGate } from "./services/heartbeat-gate.js";
import { SessionCount } from "./services/session-count.js";
import { workerService } from "./services/worker-service.js";
import { isPostgresSpec, isSqliteSpec, openStore } from "./store/open-store.js";
import { newReplicaId, Replication } from "./replicas/replication.js";
import { WorkerHistory } from "./telemetry/worker-history.js";
import { ListenError, parseListenAddress } from "./transport/address.js";
import { type GrpcServer, startGrpcServer } from "./transport/grpc-server.js";
import { type HttpServer, startHttpServer } from "./transport/http-server.js";
import { registerService, type ServiceRegistration } from "./transport/registration.js";
import { readTlsFiles } from "./transport/tls.js";
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
  /** Re-reads the auth file (SIGHUP); open sessions are kept. */
  reloadAuth(): Promise<void>;
}

/** Wires store → coordinator → services → both transports. */
export async function startServer(overrides: ServerOptions = {}): Promise<RunningServer> {
  const config = defaultConfig(overrides);
  const logger =
    config.logger ?? (config.log !== undefined ? loggerForLines(config.log, config.logLevel) : createLogger({ level: config.logLevel }));
  const log = lineLog(logger);
  refuseOpenExposure(config, logger);
  const tls = readTlsFiles(config.tls ?? {});
  const clock = config.clock ?? systemClock;
  const httpMaxMessageBytes = config.httpMaxMessageBytes ?? config.maxMessageBytes;
  // A list page or WaitRollouts answer must fit what either port may send.
  const maxResponseBytes = Math.min(config.limits.maxResponseBytes, config.maxMessageBytes, httpMaxMessageBytes);
  // Beats at the configured interval are never coalesced, however short it is.
  const { heartbeatsPerSecond } = config.limits;
  const beatRate = heartbeatsPerSecond > 0 ? Math.max(heartbeatsPerSecond, 4000 / config.heartbeatIntervalMs) : 0;
  const limits = { ...config.limits, maxResponseBytes, heartbeatsPerSecond: beatRate };
  let fleet: FleetCounters | undefined;
  const metrics = new ServerMetrics(() => fleet!);
  // On PostgreSQL this server is one replica of possibly several (docs/scaleout.md).
  const replicaId = isPostgresSpec(config.store) ? newReplicaId() : undefined;
  const store = await openStore(config.store, {
    onCommit: metrics.observeCommit,
    synchronous: config.sqliteSynchronous,
    replicaId,
    // ./data is ours to create; the folder of a path someone chose is not (a typo would go unnoticed).
    createFolder: config.store === DEFAULT_STORE,
  });
  const replication = replicaId === undefined ? undefined : await Replication.join(config.store, replicaId, clock, log);
  // Quarantine and label routing are dispatch's to count: asked of the coordinator at summary/scrape time,
  // when it exists.
  const routing: RoutingView = {
    quarantinedWorkers: () => coordinator.quarantinedCount(),
    unroutableQueued: () => coordinator.unroutableCount(),
  };
  fleet = new FleetCounters(clock, routing, metrics.fleetEvents);
  await fleet.seed(store);
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
      maxPercent: config.quarantineMaxPercent,
    },
    onHeartbeat: (workerId, data, now) => history.record(workerId, data.snapshot, now),
    log,
    observer,
    bus: replication?.bus,
  });
  await coordinator.recover();
  replication?.startChores(coordinator);
  const retention = new Retention({
    store,
    clock,
    retainMs: config.retainMs,
    observer,
    logger,
    forgetSilentWorkers: () => coordinator.forgetSilentWorkers(config.forgetAfterMs),
  });
  const heartbeats = new HeartbeatGate(limits.heartbeatsPerSecond, () => clock.now());
  const sessions = new SessionCount(limits);
  // Watches and long polls end as the drain starts (services/shutdown-streams.ts).
  const streams = new ShutdownStreams();
  const services: ServiceRegistration[] = [
    registerService(RunnerService, runnerService(coordinator, {
      logger,
      log,
      now: () => clock.now(),
      limits,
      heartbeats,
      sessions,
      onSessionReplaced: metrics.countSessionReplaced,
    })),
    registerService(
      WorkerService,
      streams.wrap(WorkerService, mapDomainErrors(
        WorkerService,
        workerService(coordinator, store, {
          clock,
          fleet,
          // Shared by several servers: the summary comes from the store, where every server's changes are.
          ...(replication !== undefined && { fleetSummary: () => replication.fleetSummary(store, coordinator) }),
          retention,
          history,
          heartbeatGraceMs: config.heartbeatGraceMs,
          limits,
          heartbeats,
        }),
      )),
    ),
    registerService(
      RolloutService,
      streams.wrap(
        RolloutService,
        mapDomainErrors(RolloutService, rolloutService(coordinator, store, clock, limits, { timeoutMs: config.defaultTimeoutMs })),
        ["waitRollouts"],
      ),
    ),
    registerService(AttemptService, mapDomainErrors(AttemptService, attemptService(coordinator, store, clock, limits))),
  ];
  const auth = await setupAuth({
    authFile: config.authFile,
    services: services.map(({ service }) => service),
    attemptWorker: async (attemptId) => (await store.getAttempt(attemptId))?.workerId,
    log,
  });
  let grpc: GrpcServer | undefined;
  let http: HttpServer;
  try {
    grpc = await startGrpcServer({
      address: config.grpcAddress,
      services,
      maxMessageBytes: config.maxMessageBytes,
      keepaliveTimeMs: config.keepaliveTimeMs,
      keepaliveTimeoutMs: config.keepaliveTimeoutMs,
      // Metrics outermost, so refusals by auth are counted with their codes.
      interceptors: [metrics.interceptor, ...auth.interceptors],
      tls,
    });
    const webPage = webPageRoutes();
    http = await startHttpServer({
      address: config.httpAddress,
      services,
      maxMessageBytes: httpMaxMessageBytes,
      interceptors: [metrics.interceptor, ...auth.interceptors],
      tls,
      routes: (req, res) => metrics.route(req, res) || webPage(req, res),
    });
  } catch (error) {
    // Nothing may stay open behind a server that did not start (in-process callers go on running).
    grpc?.server.forceShutdown();
    await replication?.close();
    await store.close();
    throw listenFailure(error, config);
  }
  const watchdog = coordinator.startTimers((error) => logger.error({ err: error }, "timer check failed"));
  const retaining = startRetention(
    retention,
    config.retentionPeriodMs,
    (error) => logger.error({ err: error }, "retention failed"),
    // Once for the whole fleet: on the leader when servers share the store.
    () => replication?.isLeader() ?? true,
  );
  const security = `${config.authFile ? "tokens" : "no auth"}, ${tls ? (tls.clientCa ? "mutual TLS" : "TLS") : "plaintext"}`;
  // What an acknowledgement survives depends on it (docs/storage.md), so the operator sees it at start.
  const sqliteSynchronous = isSqliteSpec(config.store) ? config.sqliteSynchronous : undefined;
  const storeText = `${config.store}${sqliteSynchronous ? ` (synchronous=${sqliteSynchronous.toUpperCase()})` : ""}`;
  logger.info(
    {
      grpc: `${hostOf(config.grpcAddress)}:${grpc.port}`,
      http: `${hostOf(config.httpAddress)}:${http.port}`,
      store: config.store,
      ...(sqliteSynchronous && { sqliteSynchronous }),
      ...(replicaId && { replicaId }),
      security,
    },
    `serving gRPC on ${hostOf(config.grpcAddress)}:${grpc.port}, HTTP on ${hostOf(config.httpAddress)}:${http.port}, store ${storeText}, ${security}`,
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
      streams.end();
      grpc.endWatches();
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
      await replication?.close();
      await store.close();
      logger.info("stopped");
    },
    reloadAuth: () => auth.reload(),
  };
}

/**
 * Without tokens anyone who reaches the port can act as any worker and
 * enqueue or cancel anything: allowed on loopback, elsewhere only when asked
 * for by name.
 */
function refuseOpenExposure(config: ServerConfig, logger: Logger) {
  if (config.authFile !== undefined) return;
  const exposed = [config.grpcAddress, config.httpAddress].filter((address) => !isLoopbackHost(parseListenAddress(address).host));
  if (exposed.length === 0) return;
  if (!config.insecureNoAuth) {
    throw new Error(
      `refusing to listen on ${exposed.join(" and ")} without authentication: give --auth-file (docs/security.md), ` +
        "bind 127.0.0.1, or pass --insecure-no-auth to accept that anyone who reaches the port can act as any worker",
    );
  }
  logger.warn(`WARNING: listening on ${exposed.join(" and ")} without authentication (--insecure-no-auth): anyone who reaches the port can act as any worker, enqueue and cancel`);
}

/**
 * A port that cannot be bound, said once and with what to change: the gRPC
 * and HTTP ports each have their flag and variable.
 */
function listenFailure(error: unknown, config: ServerConfig): unknown {
  if (!(error instanceof ListenError)) return error;
  const [what, flag, variable] =
    error.address === config.grpcAddress ? ["gRPC", "--grpc-addr", "RUNNERLINE_GRPC_ADDR"] : ["HTTP", "--http-addr", "RUNNERLINE_HTTP_ADDR"];
  return new Error(`cannot listen for ${what} on ${error.address}: ${error.reason}; choose another address with ${flag} HOST:PORT (or ${variable})`);
}

const hostOf = (address: string) => address.slice(0, address.lastIndexOf(":"));
