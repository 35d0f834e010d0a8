import { Code } from "@connectrpc/connect";
import { useState } from "preact/hooks";
import { type Worker, WorkerStatus } from "../../../src/gen/runnerline/v1/worker_pb.js";
import { errorCode, errorText, serverMessage, workerClient } from "../api.js";
import { actionDenied } from "../auth.js";
import { cordonSummary } from "../cordon.js";
import { ActionButton, Notice } from "./common.js";

type Step = "cordon" | "uncordon" | "drain";

const FAILED: Record<Step, string> = { cordon: "cordon failed", uncordon: "uncordon failed", drain: "drain failed" };

/** A runner to tell: it has held a session and has not left (the server refuses a drain otherwise). */
function mayDrain(worker: Worker): boolean {
  return !worker.draining && worker.connectTime !== undefined && worker.status !== WorkerStatus.OFFLINE;
}

/**
 * An operator's maintenance of one runner (WorkerService.CordonWorker,
 * UncordonWorker, DrainWorker): why it takes no new work when it is
 * cordoned, and the buttons that change that. Drain asks the runner to exit,
 * so it is confirmed in two steps, like Release.
 */
export function CordonSection({ worker, onChanged }: { worker: Worker; onChanged(): void }) {
  const [reason, setReason] = useState("");
  const [confirmingDrain, setConfirmingDrain] = useState(false);
  const [error, setError] = useState<string>();
  const act = async (step: Step) => {
    const workerId = worker.workerId;
    try {
      if (step === "cordon") await workerClient.cordonWorker({ workerId, reason });
      else if (step === "drain") await workerClient.drainWorker({ workerId, reason });
      else await workerClient.uncordonWorker({ workerId });
      setError(undefined);
      setReason("");
      onChanged();
    } catch (e) {
      if (errorCode(e) === Code.PermissionDenied) actionDenied("cordonWorker", serverMessage(e));
      setError(`${FAILED[step]}: ${errorText(e)}`);
    }
    setConfirmingDrain(false);
  };
  return (
    <section class="cordon" aria-label="Maintenance">
      {worker.draining ? (
        <Notice kind="warn">
          Draining: {cordonSummary(worker)}. No new work; the runner finishes what it holds, then exits.
        </Notice>
      ) : (
        worker.cordoned && <Notice kind="warn">Cordoned: {cordonSummary(worker)}. No new work; work it holds goes on.</Notice>
      )}
      {error && <Notice kind="error">{error}</Notice>}
      <div class="actions">
        {!worker.draining && (
          <input
            type="text"
            class="cordon-reason"
            placeholder="Reason (optional)"
            aria-label="Reason for cordon or drain"
            maxLength={1024}
            value={reason}
            onInput={(e) => setReason((e.currentTarget as HTMLInputElement).value)}
          />
        )}
        {!worker.cordoned && (
          <ActionButton action="cordonWorker" class="cordon" onClick={() => void act("cordon")}>
            Cordon
          </ActionButton>
        )}
        {mayDrain(worker) &&
          (confirmingDrain ? (
            <>
              <button type="button" class="danger" onClick={() => void act("drain")}>
                Confirm drain
              </button>
              <button type="button" onClick={() => setConfirmingDrain(false)}>
                Keep running
              </button>
            </>
          ) : (
            <ActionButton action="cordonWorker" class="drain" onClick={() => setConfirmingDrain(true)}>
              Drain
            </ActionButton>
          ))}
        {worker.cordoned && (
          <ActionButton action="cordonWorker" class="uncordon" onClick={() => void act("uncordon")}>
            Uncordon
          </ActionButton>
        )}
      </div>
    </section>
  );
}
