import { createClient } from "@connectrpc/connect";
import type { Client, Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { AttemptService } from "../gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../gen/runnerline/v1/rollout_pb.js";
import { WorkerService } from "../gen/runnerline/v1/worker_pb.js";
import type { ClientSecurity } from "./security.js";

export interface RunnerlineClientsOptions {
  /** e.g. "http://127.0.0.1:50051" for the gRPC port, "http://127.0.0.1:8080" for the HTTP port. */
  baseUrl: string;
  /** "grpc" (HTTP/2, default) for the gRPC port; "connect" (HTTP/1.1) for the HTTP port. */
  transport?: "grpc" | "connect";
  /** e.g. one that adds an authorization header. */
  interceptors?: Interceptor[];
  /** Token and TLS files; TLS needs an "https://" baseUrl. */
  security?: ClientSecurity;
}

export interface RunnerlineClients {
  workers: Client<typeof WorkerService>;
  rollouts: Client<typeof RolloutService>;
  attempts: Client<typeof AttemptService>;
}

// Matches the server's limit, so an oversize message fails with a clear
// RESOURCE_EXHAUSTED on whichever side sees it first, not a library default.
const maxMessageBytes = 16 * 1024 * 1024;

/** Typed clients for the unary services, sharing one transport (one HTTP/2 session for "grpc"). */
export function createRunnerlineClients(options: RunnerlineClientsOptions): RunnerlineClients {
  const transport = createTransport(options);
  return {
    workers: createClient(WorkerService, transport),
    rollouts: createClient(RolloutService, transport),
    attempts: createClient(AttemptService, transport),
  };
}

function createTransport(options: RunnerlineClientsOptions): Transport {
  const security = options.security ?? {};
  const token = security.token;
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const common = {
    baseUrl: options.baseUrl,
    readMaxBytes: maxMessageBytes,
    writeMaxBytes: maxMessageBytes,
    interceptors: [...(token ? [bearer] : []), ...(options.interceptors ?? [])],
  };
  const tls = { ca: security.tlsCa, cert: security.tlsCert, key: security.tlsKey };
  switch (options.transport ?? "grpc") {
    case "grpc":
      return createGrpcTransport({ ...common, nodeOptions: tls });
    case "connect":
      return createConnectTransport({ ...common, httpVersion: "1.1", nodeOptions: tls });
  }
}
