// Type-checked against the installed package's declarations (not run): the JSON types and the classes resolve.
import { type JsonValue, type RolloutOutcome, type RolloutSpec, RolloutClient, Runner, SessionReplacedError, workerIdFromHostname } from "runnerline/client";

const spec: RolloutSpec = { input: { question: "2+3" }, config: { timeout: "30s", retryOn: ["FAILED"] } };
export async function loop(client: RolloutClient): Promise<JsonValue[]> {
  const results: JsonValue[] = [];
  for await (const outcome of client.wait(await client.enqueueMany([spec]))) {
    const checked: RolloutOutcome = outcome;
    if (checked.result !== undefined) results.push(checked.result);
  }
  return results;
}
export const runner: Runner = new Runner({ address: "127.0.0.1:50051", workerId: workerIdFromHostname() });
export const replaced = (error: unknown): string | undefined => (error instanceof SessionReplacedError ? error.workerId : undefined);
// @ts-expect-error: a rollout's status is one of the names, never an arbitrary string
export const wrong: RolloutOutcome["status"] = "DONE";
