import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { startHttpServer, type HttpServer } from "../../src/server/transport/http-server.js";
import { workerImpl } from "./fixtures.js";

describe("http server", () => {
  let server: HttpServer;
  const base = () => `http://127.0.0.1:${server.port}`;

  beforeAll(async () => {
    server = await startHttpServer({
      address: "127.0.0.1:0",
      maxMessageBytes: 64 * 1024,
      services: [{ service: WorkerService, impl: workerImpl() }],
      routes: (req, res) => {
        if (req.url !== "/metrics") return false;
        res.writeHead(200, { "content-type": "text/plain" }).end("metrics here");
        return true;
      },
    });
  });
  afterAll(() => server.close(100));

  describe.each([
    ["Connect", () => createConnectTransport({ httpVersion: "1.1", baseUrl: base() })],
    ["gRPC-Web", () => createGrpcWebTransport({ httpVersion: "1.1", baseUrl: base() })],
  ])("%s over HTTP/1.1", (_, transport) => {
    it("answers and maps errors to the same codes as gRPC", async () => {
      const client = createClient(WorkerService, transport());
      expect((await client.getWorker({ workerId: "w-1" })).worker?.workerId).toBe("w-1");
      expect((await client.getWorker({ workerId: "peer" })).worker?.workerId).toBe("127.0.0.1");
      await expect(client.getWorker({ workerId: "missing" })).rejects.toMatchObject({ code: Code.NotFound });
      vi.spyOn(console, "error").mockImplementation(() => undefined);
      await expect(client.getWorker({ workerId: "boom" })).rejects.toMatchObject({ code: Code.Internal });
      vi.restoreAllMocks();
      await expect(client.listWorkers({})).rejects.toMatchObject({ code: Code.Unimplemented });
    });

    it("streams from the server", async () => {
      const client = createClient(WorkerService, transport());
      const ids: string[] = [];
      for await (const message of client.watchWorkers({})) {
        ids.push(message.worker?.workerId ?? "");
      }
      expect(ids).toEqual(["w0", "w1", "w2"]);
    });

    it("rejects an oversize request with RESOURCE_EXHAUSTED", async () => {
      const client = createClient(WorkerService, transport());
      await expect(client.getWorker({ workerId: "y".repeat(100_000) })).rejects.toMatchObject({
        code: Code.ResourceExhausted,
      });
    });
  });

  it("serves plain JSON POSTs, as curl sends them", async () => {
    const post = (body: unknown) =>
      fetch(`${base()}/runnerline.v1.WorkerService/GetWorker`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const ok = await post({ workerId: "w-9" });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ worker: { workerId: "w-9" } });
    const missing = await post({ worker_id: "missing" });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ code: "not_found", message: `worker "missing" not found` });
  });

  it("answers /healthz and hands other paths to the routes seam first", async () => {
    const health = await fetch(`${base()}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.text()).toBe("ok");
    const metrics = await fetch(`${base()}/metrics`);
    expect(await metrics.text()).toBe("metrics here");
    expect((await fetch(`${base()}/nothing/here`)).status).toBe(404);
  });

  it("lets browsers call from any origin", async () => {
    const preflight = await fetch(`${base()}/runnerline.v1.WorkerService/GetWorker`, {
      method: "OPTIONS",
      headers: {
        origin: "http://example.test",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,connect-protocol-version,authorization",
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("*");
    expect(preflight.headers.get("access-control-allow-methods")).toContain("POST");
    const allowed = preflight.headers.get("access-control-allow-headers")?.toLowerCase() ?? "";
    for (const header of ["content-type", "connect-protocol-version", "x-grpc-web", "authorization"]) {
      expect(allowed).toContain(header);
    }
    const call = await fetch(`${base()}/runnerline.v1.WorkerService/GetWorker`, {
      method: "POST",
      headers: { origin: "http://example.test", "content-type": "application/json" },
      body: "{}",
    });
    expect(call.headers.get("access-control-allow-origin")).toBe("*");
    expect(call.headers.get("access-control-expose-headers")?.toLowerCase()).toContain("grpc-status");
  });
});

describe("http server close", () => {
  it("stops listening", async () => {
    const server = await startHttpServer({ address: "127.0.0.1:0", services: [] });
    const url = `http://127.0.0.1:${server.port}/healthz`;
    expect((await fetch(url)).status).toBe(200);
    await server.close(100);
    await expect(fetch(url)).rejects.toThrow();
  });
});
