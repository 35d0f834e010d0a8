// The one place requests leave the page. Every client shares this transport,
// whose interceptor adds the tab's token and tells the auth store (auth.ts)
// when the server refuses it, whichever call it was, streams included.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AttemptService } from "../../src/gen/runnerline/v1/attempt_pb.js";
import { RolloutService } from "../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerService } from "../../src/gen/runnerline/v1/worker_pb.js";
import { bearer, storedToken, tokenRefused } from "./auth.js";

const credentials: Interceptor = (next) => async (request) => {
  const token = storedToken();
  // A call that names its own token (sign-in trying one) keeps it.
  if (token !== undefined && !request.header.has("authorization")) request.header.set("authorization", bearer(token));
  const sent = request.header.get("authorization");
  try {
    const response = await next(request);
    if (!response.stream) return response;
    // A stream's refusal may come with its end rather than its headers.
    return { ...response, message: reportingRefusals(response.message, sent) };
  } catch (error) {
    reportRefusal(error, sent);
    throw error;
  }
};

async function* reportingRefusals<T>(messages: AsyncIterable<T>, sent: string | null): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    reportRefusal(error, sent);
    throw error;
  }
}

function reportRefusal(error: unknown, sent: string | null): void {
  const refusal = ConnectError.from(error);
  if (refusal.code === Code.Unauthenticated) tokenRefused(sent, refusal.rawMessage);
}

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

/**
 * A message for an error banner. A request that reached no server (the browser's
 * "Failed to fetch", which Connect labels [unknown]) says so in plain words.
 */
export function errorText(error: unknown): string {
  if (isUnreachable(error)) return SERVER_GONE;
  if (error instanceof Error) return error.message;
  return String(error);
}

export const SERVER_GONE = "the server does not answer";

/** Whether a call failed because no server answered (network error), not because the server refused it. */
export function isUnreachable(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Unknown && /failed to fetch|networkerror|load failed|network connection was lost/i.test(error.rawMessage);
}

/** The status code of a failed call, when the server gave one. */
export function errorCode(error: unknown): Code | undefined {
  return error instanceof ConnectError ? error.code : undefined;
}

/** The server's own words for a failed call, without the status code prefix (for tooltips and the prompt). */
export function serverMessage(error: unknown): string {
  return ConnectError.from(error).rawMessage;
}
