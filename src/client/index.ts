// `runnerline/client`: what a project outside this repository imports (package.json "exports"). Runner for
// runners, RolloutClient for training loops, the typed clients for everything else, and the errors each throws.
export {
  AttemptCancelledError,
  Runner,
  RunnerRefusedError,
  type RunnerEvents,
  type RunnerHandler,
  type RunnerJob,
  type RunnerLogger,
  type RunnerOptions,
  type RunnerStatus,
  SessionReplacedError,
  workerIdFromHostname,
} from "./runner.js";
export {
  type EnqueueDefaults,
  RolloutClient,
  type RolloutClientOptions,
  RolloutWaitTimeoutError,
  type WaitOptions,
} from "./rollout-client.js";
export type {
  AttemptOutcomeName,
  FinishedStatusName,
  RolloutOutcome,
  RolloutSpec,
  RolloutSpecConfig,
  RolloutStatusName,
} from "./rollout-json.js";
export { type DurationInput, InvalidDurationError } from "./duration.js";
export { createRunnerlineClients, type RunnerlineClients, type RunnerlineClientsOptions } from "./clients.js";
export { type ClientSecurity, grpcCredentials } from "./security.js";
export { collectSystemSnapshot } from "./system-snapshot.js";
export { RESULT_MAX_BYTES, RESULT_MAX_DEPTH } from "../common/attempt-result.js";
// Server errors of the typed clients and RolloutClient: `error instanceof ConnectError`, `error.code === Code.NotFound`.
export { Code, ConnectError } from "@connectrpc/connect";
export type { JsonObject, JsonValue } from "@bufbuild/protobuf";
