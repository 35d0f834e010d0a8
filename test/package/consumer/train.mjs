// A training loop as a project outside this repository writes it: enqueue a batch, read results as they finish.
import { ConnectError, InvalidDurationError, RolloutClient, RolloutWaitTimeoutError } from "runnerline/client";

const client = new RolloutClient({ address: process.argv[2] });
const questions = ["2+3", "1+1", "fail"];
const ids = await client.enqueueMany(
  questions.map((question) => ({ input: { question } })),
  { config: { timeout: "30s", maxAttempts: 2, retryOn: ["FAILED"], retryDelay: 10 } },
);
const outcomes = [];
for await (const rollout of client.wait(ids, { timeout: "60s" })) {
  outcomes.push({ question: rollout.input.question, status: rollout.status, result: rollout.result, attempts: rollout.attemptCount });
}
const refused = await client.enqueue({ config: { timeout: "soon" } }).catch((error) => error);
const missing = await client.get("no-such-rollout").catch((error) => error);
console.log(
  JSON.stringify({
    outcomes,
    refusedBeforeSending: refused instanceof InvalidDurationError,
    notFound: missing instanceof ConnectError ? missing.code : String(missing),
    timeoutErrorExported: typeof RolloutWaitTimeoutError === "function",
  }),
);
