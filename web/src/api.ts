// The one place requests leave the page. Every client shares this transport,
// so adding credentials (a bearer token, once the server requires one) is a
// change to `credentials` below and nowhere else.
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AttemptService } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";

/** Session-storage key a token will be kept under (per tab, never in localStorage). */
export const TOKEN_STORAGE_KEY = "runnerline.token";

const credentials: Interceptor = (next) => (request) => {
  const token = sessionStorage.getItem(TOKEN_STORAGE_KEY);
  if (token) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};

// Same origin as the page: the server that served it answers the Connect protocol on this port.
// Binary protobuf: a 10,000-worker watch decodes several times faster than its JSON form.
const transport = createConnectTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: true,
  interceptors: [credentials],
});

export const workerClient = createClient(WorkerService, transport);
export const rolloutClient = createClient(RolloutService, transport);
export const attemptClient = createClient(AttemptService, transport);

/** A message for an error banner: the server's message without the code prefix noise. */
export function errorText(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
