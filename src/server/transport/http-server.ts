import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, cors, createContextValues, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { listenError, normalizePeerAddress, parseListenAddress } from "./address.js";
import { connectionKey, peerAddressKey } from "./context.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./limits.js";
import { answerPreciseHttpStatus } from "./connect-http-answers.js";
import { answerUndecodableUnary, undecodableStreamRequests } from "./connect-undecodable.js";
import type { ServiceRegistration } from "./registration.js";
import { strictJsonDecoder } from "./strict-json.js";
import type { TlsFiles } from "./tls.js";

/** Answers a request the RPC handler should not see; true if it did. */
export type HttpRoutes = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;

export type HttpServerOptions = {
  /** "host:port"; port 0 picks a free one (see HttpServer.port). */
  address: string;
  services: ServiceRegistration[];
  /** Largest request or response message; larger ones fail with resource_exhausted. */
  maxMessageBytes?: number;
  /** Tried before the RPC handler, for static pages and /metrics. */
  routes?: HttpRoutes;
  /** Connect interceptors around every handler (the same ones the gRPC server takes). */
  interceptors?: Interceptor[];
  /** Serve HTTPS with this certificate (and require client certificates when it has a client CA). */
  tls?: TlsFiles;
};

export type HttpServer = {
  port: number;
  server: http.Server;
  /**
   * Stop accepting connections and abort running handlers' signals; streams
   * still open after `graceMs` (default 5 s) are cut.
   */
  close(graceMs?: number): Promise<void>;
};

const strictJson = { ignoreUnknownFields: false };

/**
 * Serve `services` over HTTP/1.1 for curl and browsers: the Connect protocol
 * (JSON and binary) and gRPC-Web. Plain gRPC needs HTTP/2 and lives on the
 * gRPC server. Also answers CORS preflights and `GET /healthz`.
 */
export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const shutdown = new AbortController();
  const rpc = connectNodeAdapter({
    routes: (router) => {
      for (const { service, impl } of options.services) {
        // Per method, so each JSON body is checked against its own request type.
        const methods = impl as Record<string, ((...args: never[]) => unknown) | undefined>;
        for (const method of service.methods) {
          const fn = methods[method.localName] ?? unimplemented(method);
          // textDecoder is read by Connect's JSON serialization but missing from its option type.
          const jsonOptions = { ...strictJson, textDecoder: strictJsonDecoder(method.input) } as typeof strictJson;
          router.rpc(method, fn.bind(impl) as never, { jsonOptions });
        }
      }
      answerUndecodableUnary(router.handlers);
      answerPreciseHttpStatus(router.handlers, maxMessageBytes);
    },
    connect: true,
    grpcWeb: true,
    grpc: false,
    readMaxBytes: maxMessageBytes,
    writeMaxBytes: maxMessageBytes,
    // Connect ignores unknown JSON fields and enum names by default, so a typo
    // ("status" for "statuses", "ROLLOUT_STATUS_FAILD") silently widened a
    // query or dropped a field; refused now with INVALID_ARGUMENT naming it.
    jsonOptions: strictJson,
    interceptors: [...(options.interceptors ?? []), undecodableStreamRequests],
    shutdownSignal: shutdown.signal,
    contextValues: (req) =>
      createContextValues()
        .set(peerAddressKey, normalizePeerAddress(req.socket.remoteAddress))
        .set(connectionKey, `${req.socket.remoteAddress}:${req.socket.remotePort}`),
  });
  const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (answerCors(req, res)) {
      return;
    }
    if (req.method === "GET" && (req.url === "/healthz" || req.url?.startsWith("/healthz?"))) {
      res.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end("ok");
      return;
    }
    if (options.routes?.(req, res)) {
      return;
    }
    rpc(req, res);
  };
  const tls = options.tls;
  const server: http.Server = tls
    ? https.createServer(
        {
          cert: tls.cert,
          key: tls.key,
          ...(tls.clientCa && { ca: tls.clientCa, requestCert: true, rejectUnauthorized: true }),
        },
        listener,
      )
    : http.createServer(listener);
  const { host, port } = parseListenAddress(options.address);
  await new Promise<void>((resolve, reject) => {
    const failed = (error: Error) => reject(listenError(options.address, error));
    server.once("error", failed);
    server.listen(port, host, () => {
      server.off("error", failed);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    server,
    close: (graceMs = 5000) => close(server, shutdown, graceMs),
  };
}

// Browsers send an Authorization header when bearer-token auth is on.
const allowedHeaders = [...cors.allowedHeaders, "Authorization"].join(", ");
const allowedMethods = cors.allowedMethods.join(", ");
const exposedHeaders = cors.exposedHeaders.join(", ");

/**
 * Any origin may call (no cookies are used, so "*" grants nothing a page
 * could not get by other means). Answers preflights itself; true if it did.
 */
function answerCors(req: http.IncomingMessage, res: http.ServerResponse): boolean {
  if (req.headers.origin === undefined) {
    return false;
  }
  res.setHeader("access-control-allow-origin", "*");
  if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
    res
      .writeHead(204, {
        "access-control-allow-methods": allowedMethods,
        "access-control-allow-headers": allowedHeaders,
        "access-control-max-age": "7200",
      })
      .end();
    return true;
  }
  res.setHeader("access-control-expose-headers", exposedHeaders);
  return false;
}

/** What Connect's router answers for a method without an implementation. */
function unimplemented(method: DescMethod): () => never {
  return () => {
    throw new ConnectError(`${method.parent.typeName}.${method.name} is not implemented`, Code.Unimplemented);
  };
}

/** Interval at which a closing server closes the keep-alive connections that went idle since. */
const IDLE_SWEEP_MS = 50;

function close(server: http.Server, shutdown: AbortController, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), graceMs);
    // server.close() closes the connections idle at that moment only; one whose stream ends later stays
    // open for keep-alive and would hold the close until the grace ends.
    const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
    server.close(() => {
      clearTimeout(timer);
      clearInterval(sweep);
      resolve();
    });
    shutdown.abort();
    server.closeIdleConnections();
  });
}
