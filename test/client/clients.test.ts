import { fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRunnerlineClients } from "../../src/client/clients.js";
import { RolloutStatus } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { startTestServer } from "./helpers.js";
import type { TestServer } from "./helpers.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server.close();
});

describe("createRunnerlineClients", () => {
  for (const transport of ["grpc", "connect"] as const) {
    it(`talks to the server over ${transport}`, async () => {
      const baseUrl = transport === "grpc" ? `http://${server.grpcAddress}` : server.httpBaseUrl;
      const clients = createRunnerlineClients({ baseUrl, transport });
      const { rollout } = await clients.rollouts.enqueueRollout({ input: fromJson(ValueSchema, { via: transport }) });
      const { rollout: read } = await clients.rollouts.getRollout({ rolloutId: rollout!.rolloutId });
      expect(read?.status).toBe(RolloutStatus.QUEUING);
      expect(toJson(ValueSchema, read!.input!)).toEqual({ via: transport });

      const missing = await clients.attempts.getAttempt({ attemptId: "no-such-attempt" }).catch((error: unknown) => error);
      expect(ConnectError.from(missing).code).toBe(Code.NotFound);
      const { workers } = await clients.workers.listWorkers({});
      expect(Array.isArray(workers)).toBe(true);
    });
  }
});
