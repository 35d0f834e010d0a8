import { ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { grpcCredentials } from "../../src/client/security.js";
import { create } from "@bufbuild/protobuf";
import { ListWorkersRequestSchema, WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type RunningServer, startServer } from "../../src/server/app.js";
import { grpcClient, grpcError, grpcUnary } from "../transport/fixtures.js";
import { grpcServiceDefinition } from "../../src/common/grpc-definition.js";
import { makeCertificates } from "./certificates.js";

const certs = makeCertificates("runnerline");
const stranger = makeCertificates("stranger");

let tls: RunningServer;
let mtls: RunningServer;

beforeAll(async () => {
  const common = { grpcAddress: "127.0.0.1:0", httpAddress: "127.0.0.1:0", store: "memory", log: () => {} };
  tls = await startServer({ ...common, tls: { cert: certs.server.certPath, key: certs.server.keyPath } });
  mtls = await startServer({
    ...common,
    tls: { cert: certs.server.certPath, key: certs.server.keyPath, clientCa: certs.ca.certPath },
  });
});

afterAll(async () => {
  await Promise.all([tls?.close(), mtls?.close()]);
});

/** A grpc-js client with the given credentials. */
function grpcJs(port: number, credentials: grpc.ChannelCredentials) {
  const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(WorkerService), "WorkerService");
  return new Client(`127.0.0.1:${port}`, credentials, { "grpc.use_local_subchannel_pool": 1 });
}

describe("TLS", () => {
  it("serves grpc-js over TLS on the gRPC port", async () => {
    const client = grpcJs(tls.grpcPort, grpcCredentials({ tlsCa: certs.ca.cert }));
    const { response } = await grpcUnary<{ workers: unknown[] }>(client, "listWorkers", create(ListWorkersRequestSchema));
    expect(response.workers).toEqual([]);
    client.close();
  });

  it.each(["grpc", "connect"] as const)("serves the Connect client over TLS (%s transport, its port)", async (transport) => {
    const port = transport === "grpc" ? tls.grpcPort : tls.httpPort;
    const clients = createRunnerlineClients({ baseUrl: `https://127.0.0.1:${port}`, transport, security: { tlsCa: certs.ca.cert } });
    expect((await clients.workers.listWorkers({})).workers).toEqual([]);
  });

  it("refuses a plaintext grpc-js client", async () => {
    const client = grpcClient(WorkerService, tls.grpcPort);
    const error = await grpcError(grpcUnary(client, "listWorkers", create(ListWorkersRequestSchema), new grpc.Metadata(), { deadline: Date.now() + 5_000 }));
    expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]).toContain(error.code);
    client.close();
  });

  it.each(["grpc", "connect"] as const)("refuses a plaintext Connect client (%s transport)", async (transport) => {
    const port = transport === "grpc" ? tls.grpcPort : tls.httpPort;
    const clients = createRunnerlineClients({ baseUrl: `http://127.0.0.1:${port}`, transport });
    const error = await clients.workers.listWorkers({}, { timeoutMs: 5_000 }).catch(ConnectError.from);
    // Which code depends on how the TLS server answers plaintext bytes; what matters is that nothing is served.
    expect(error).toBeInstanceOf(ConnectError);
  });

  it("refuses a client that does not trust the server's CA", async () => {
    const client = grpcJs(tls.grpcPort, grpcCredentials({ tlsCa: stranger.ca.cert }));
    const error = await grpcError(grpcUnary(client, "listWorkers", create(ListWorkersRequestSchema), new grpc.Metadata(), { deadline: Date.now() + 5_000 }));
    expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]).toContain(error.code);
    client.close();
  });
});

describe("mutual TLS", () => {
  const withCert = { tlsCa: certs.ca.cert, tlsCert: certs.client.cert, tlsKey: certs.client.key };

  it("serves clients with a certificate from the client CA, on both ports", async () => {
    const client = grpcJs(mtls.grpcPort, grpcCredentials(withCert));
    expect((await grpcUnary<{ workers: unknown[] }>(client, "listWorkers", create(ListWorkersRequestSchema))).response.workers).toEqual([]);
    client.close();
    for (const [transport, port] of [["grpc", mtls.grpcPort], ["connect", mtls.httpPort]] as const) {
      const clients = createRunnerlineClients({ baseUrl: `https://127.0.0.1:${port}`, transport, security: withCert });
      expect((await clients.workers.listWorkers({})).workers).toEqual([]);
    }
  });

  it.each([
    ["no certificate", { tlsCa: certs.ca.cert }],
    ["a certificate from another CA", { tlsCa: certs.ca.cert, tlsCert: stranger.client.cert, tlsKey: stranger.client.key }],
  ])("refuses a client with %s, on both ports", async (_name, security) => {
    const client = grpcJs(mtls.grpcPort, grpcCredentials(security));
    const error = await grpcError(grpcUnary(client, "listWorkers", create(ListWorkersRequestSchema), new grpc.Metadata(), { deadline: Date.now() + 5_000 }));
    expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]).toContain(error.code);
    client.close();
    const clients = createRunnerlineClients({ baseUrl: `https://127.0.0.1:${mtls.httpPort}`, transport: "connect", security });
    await expect(clients.workers.listWorkers({}, { timeoutMs: 5_000 })).rejects.toBeInstanceOf(ConnectError);
  });
});
