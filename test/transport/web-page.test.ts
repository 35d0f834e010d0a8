/** The web page's static route in front of the RPC handler, over a real socket. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { type HttpServer, startHttpServer } from "../../src/server/transport/http-server.js";
import { registerService } from "../../src/server/transport/registration.js";
import { WEB_DIST_DIR, webPageRoutes } from "../../src/server/transport/web-page.js";
import { existsSync } from "node:fs";

const dist = mkdtempSync(join(tmpdir(), "runnerline-dist-"));
const INDEX = "<!doctype html><title>page</title>";
const SCRIPT = `console.log(${JSON.stringify("x".repeat(2000))});`;
let server: HttpServer;

beforeAll(async () => {
  mkdirSync(join(dist, "assets"));
  writeFileSync(join(dist, "index.html"), INDEX);
  writeFileSync(join(dist, "assets", "index-abc123.js"), SCRIPT);
  server = await startHttpServer({
    address: "127.0.0.1:0",
    services: [registerService(WorkerService, { getWorker: async () => ({}) } as never)],
    routes: webPageRoutes(dist),
  });
});

afterAll(async () => {
  await server.close(0);
  rmSync(dist, { recursive: true, force: true });
});

/** Raw GET without automatic decompression, to see what went over the wire. */
function get(path: string, headers: Record<string, string> = {}, method = "GET") {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: server.port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("web page routes", () => {
  it.each(["/", "/runners", "/runners/gpu-7", "/rollouts/", "/rollouts/ro%2F1", "/runners?q=x&status=all"])("%s answers index.html, never cached", async (path) => {
    const res = await get(path);
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(res.headers["cache-control"]).toBe("no-cache");
    expect(res.headers["x-content-type-options"]).toBe("nosniff");
    expect(res.headers["content-security-policy"]).toContain("default-src 'self'");
    expect(res.body.toString()).toBe(INDEX);
  });

  it("serves hashed assets cached for a year, gzipped for clients that accept it", async () => {
    const plain = await get("/assets/index-abc123.js");
    expect(plain.status).toBe(200);
    expect(plain.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(plain.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(plain.body.toString()).toBe(SCRIPT);
    const gzipped = await get("/assets/index-abc123.js", { "accept-encoding": "gzip, br" });
    expect(gzipped.headers["content-encoding"]).toBe("gzip");
    expect(gzipped.headers.vary).toBe("accept-encoding");
    expect(gzipped.body.length).toBeLessThan(200);
    expect(gunzipSync(gzipped.body).toString()).toBe(SCRIPT);
  });

  it("answers HEAD with headers only", async () => {
    const res = await get("/assets/index-abc123.js", {}, "HEAD");
    expect(res.status).toBe(200);
    expect(res.headers["content-length"]).toBe(String(SCRIPT.length));
    expect(res.body.length).toBe(0);
  });

  it.each(["/nope", "/assets/missing.js", "/runners/a/b", "/assets/../index.html", "/%E0%A4%A", "/favicon.ico"])("%s is 404", async (path) => {
    expect((await get(path)).status).toBe(404);
  });

  it("leaves the API alone", async () => {
    const res = await fetch(`http://127.0.0.1:${server.port}/runnerline.v1.WorkerService/GetWorker`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ workerId: "w" }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
    expect((await get("/healthz")).body.toString()).toBe("ok");
  });

  it("without a build, / says how to make one (503) and the API still works", async () => {
    const empty = mkdtempSync(join(tmpdir(), "runnerline-nodist-"));
    const bare = await startHttpServer({ address: "127.0.0.1:0", services: [], routes: webPageRoutes(join(empty, "missing")) });
    try {
      const res = await fetch(`http://127.0.0.1:${bare.port}/`);
      expect(res.status).toBe(503);
      expect(await res.text()).toContain("npm run build:web");
    } finally {
      await bare.close(0);
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it("the committed build exists where the server looks for it", () => {
    expect(existsSync(join(WEB_DIST_DIR, "index.html"))).toBe(true);
  });
});
