import * as grpc from "@grpc/grpc-js";
import type { Interceptor } from "@connectrpc/connect";
import { HealthImplementation, type ServingStatusMap } from "grpc-health-check";
import { quote } from "../../common/quote.js";
import { listenError } from "./address.js";
import { addService } from "./grpc-adapter.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./limits.js";
import { addReflection } from "./reflection.js";
import type { ServiceRegistration } from "./registration.js";
import type { TlsFiles } from "./tls.js";
import { DecodeSafeServer } from "./undecodable.js";


export type GrpcServerOptions = {
  /** "host:port"; port 0 picks a free one (see GrpcServer.port). */
  address: string;
  services: ServiceRegistration[];
  /** Largest message received or sent; larger ones fail with RESOURCE_EXHAUSTED. */
  maxMessageBytes?: number;
  /** How often the server pings an idle connection to find dead runners. */
  keepaliveTimeMs?: number;
  /** How long a ping may go unanswered before the connection is dropped. */
  keepaliveTimeoutMs?: number;
  /** Connect interceptors around every handler of `services` (auth, metrics). */
  interceptors?: Interceptor[];
  /** Serve TLS with this certificate (and require client certificates when it has a client CA). */
  tls?: TlsFiles;
};

export type GrpcServer = {
  port: number;
  server: grpc.Server;
  /** grpc.health.v1 status per service name ("" is the server as a whole). */
  health: HealthImplementation;
  /**
   * Report NOT_SERVING, stop accepting calls, let running ones finish for up
   * to `graceMs`, then cancel what is left.
   */
  shutdown(graceMs: number): Promise<void>;
  /**
   * Report NOT_SERVING to health watchers, then end their streams (OK): a
   * stopping server must not wait for them. Called as the drain starts.
   */
  endWatches(): void;
};

/**
 * Serve `services` over gRPC with grpc.health.v1 and server reflection (v1 and
 * v1alpha) alongside, so grpcurl and load balancers work without extra setup.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const server = new DecodeSafeServer({
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
    ...(options.keepaliveTimeMs !== undefined && { "grpc.keepalive_time_ms": options.keepaliveTimeMs }),
    ...(options.keepaliveTimeoutMs !== undefined && { "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs }),
  });
  for (const { service, impl } of options.services) {
    addService(server, service, impl, { interceptors: options.interceptors ?? [] });
  }
  const healthNames = ["", ...options.services.map(({ service }) => service.typeName)];
  const health = new HealthImplementation(statusMap(healthNames, "SERVING"));
  const watches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  health.addToServer({ addService: (service, impl) => server.addService(service, trackWatches(boundedServiceNames(impl), watches)) });
  const notServing = () => {
    for (const name of healthNames) health.setStatus(name, "NOT_SERVING");
  };
  addReflection(
    server,
    options.services.map(({ service }) => service),
  );
  let port: number;
  try {
    port = await bind(server, options.address, credentialsOf(options.tls));
  } catch (error) {
    server.forceShutdown();
    throw error;
  }
  return {
    port,
    server,
    health,
    shutdown: async (graceMs) => {
      // First, so that balancers and watching clients move away while
      // in-flight calls are still being answered.
      notServing();
      await drain(server, graceMs);
    },
    endWatches: () => {
      notServing();
      // After the NOT_SERVING message is through grpc-js's (promise-based) send path: a status sent while it
      // still processes a message is held back and, in 1.14, never sent (the client then sees CANCELLED).
      for (const call of watches) setImmediate(() => call.end());
      watches.clear();
    },
  };
}

/** Longest service name Health answers for; every name it knows is far shorter. */
const MAX_HEALTH_SERVICE_NAME = 256;

/**
 * grpc-health-check repeats an unknown service name in its NOT_FOUND message
 * and keys watchers by it; a name longer than any service could have is
 * refused first, with the name cut short in the message.
 */
function boundedServiceNames(impl: grpc.UntypedServiceImplementation): grpc.UntypedServiceImplementation {
  const refusal = (name: string): Partial<grpc.StatusObject> | undefined =>
    name.length > MAX_HEALTH_SERVICE_NAME
      ? { code: grpc.status.INVALID_ARGUMENT, details: `service ${quote(name)} is longer than ${MAX_HEALTH_SERVICE_NAME} characters` }
      : undefined;
  const check = impl["check"] as grpc.handleUnaryCall<{ service: string }, unknown>;
  const watch = impl["watch"] as grpc.handleServerStreamingCall<{ service: string }, unknown>;
  return {
    ...impl,
    check: (call: grpc.ServerUnaryCall<{ service: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const refused = refusal(call.request.service);
      if (refused) callback(refused);
      else check(call, callback);
    },
    watch: (call: grpc.ServerWritableStream<{ service: string }, unknown>) => {
      const refused = refusal(call.request.service);
      if (refused) call.emit("error", refused);
      else watch(call);
    },
  };
}

/** Health's Watch calls, kept while open so that shutdown can end them. */
function trackWatches(
  impl: grpc.UntypedServiceImplementation,
  watches: Set<grpc.ServerWritableStream<unknown, unknown>>,
): grpc.UntypedServiceImplementation {
  const watch = impl["watch"] as grpc.handleServerStreamingCall<unknown, unknown>;
  return {
    ...impl,
    watch: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      watches.add(call);
      const forget = () => watches.delete(call);
      call.once("cancelled", forget);
      call.once("finish", forget);
      watch(call);
    },
  };
}

function statusMap(names: string[], status: "SERVING" | "NOT_SERVING"): ServingStatusMap {
  return Object.fromEntries(names.map((name) => [name, status]));
}

function credentialsOf(tls: TlsFiles | undefined): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(
    tls.clientCa ?? null,
    [{ cert_chain: tls.cert, private_key: tls.key }],
    tls.clientCa !== undefined,
  );
}

/** Binds `address`; a failure rejects with a ListenError (and grpc-js's own log line about it is left out). */
function bind(server: grpc.Server, address: string, credentials: grpc.ServerCredentials): Promise<number> {
  quietBindFailureLog();
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(address, credentials, (error, port) => {
      if (error) {
        reject(listenError(address, error));
      } else {
        resolve(port);
      }
    });
  });
}

let bindLogQuieted = false;

/**
 * grpc-js logs "E No address added out of total N resolved" to stderr before
 * it rejects a bind; the rejection says the same, so the server reports it
 * once, in its own words (app.ts names the flag to change). grpc-js's logger
 * is global and cannot be read back, so this installs, once, one that writes
 * exactly what its default one writes, that line aside.
 */
function quietBindFailureLog(): void {
  if (bindLogQuieted) return;
  bindLogQuieted = true;
  grpc.setLogger({
    error: (message: unknown, ...rest: unknown[]) => {
      if (typeof message === "string" && message.startsWith("No address added out of total")) return;
      console.error(`E ${String(message)}`, ...rest);
    },
    info: (message: unknown, ...rest: unknown[]) => console.error(`I ${String(message)}`, ...rest),
    debug: (message: unknown, ...rest: unknown[]) => console.error(`D ${String(message)}`, ...rest),
  });
}
function drain(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    // Long-lived streams (runner sessions, health watches) would hold
    // tryShutdown open forever; the grace period bounds the wait.
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
