import { Code } from "@connectrpc/connect";
import { toJson } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import { type Attempt, AttemptErrorKind, AttemptStatus } from "../../../src/gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutMode, RolloutStatus } from "../../../src/gen/runnerline/v1/rollout_pb.js";
import { attemptClient, errorCode, errorText, rolloutClient, serverMessage } from "../api.js";
import { actionDenied } from "../auth.js";
import { formatAbsolute, formatDuration, jsonOfValue, previewJson } from "../format.js";
import { runnerPath } from "../route.js";
import { ActionButton, Badge, Link, msOf, Notice, RelativeTime, useNow } from "./common.js";
import { attemptDuration } from "./RunnerDetail.js";
import { rolloutBadge, rolloutDuration, TERMINAL_ROLLOUT } from "./RolloutsPage.js";

const REFRESH_MS = 2_000;

export function RolloutDetail({ rolloutId, onClose, onChanged }: { rolloutId: string; onClose(): void; onChanged(): void }) {
  const [rollout, setRollout] = useState<Rollout>();
  const [attempts, setAttempts] = useState<Attempt[]>([]);
  const [error, setError] = useState<string>();
  // Apart from `error`, which the next refresh clears: a refused cancel stays said until the next try.
  const [cancelError, setCancelError] = useState<string>();
  const [confirming, setConfirming] = useState(false);
  const [reload, setReload] = useState(0);
  const now = useNow();

  useEffect(() => {
    const abort = new AbortController();
    const load = async () => {
      try {
        const [r, a] = await Promise.all([
          rolloutClient.getRollout({ rolloutId }, { signal: abort.signal }),
          attemptClient.listAttempts({ rolloutId, orderBy: "sequence_id", pageSize: 100 }, { signal: abort.signal }),
        ]);
        if (abort.signal.aborted) return;
        setRollout(r.rollout);
        setAttempts(a.attempts);
        setError(undefined);
      } catch (e) {
        if (!abort.signal.aborted) setError(errorText(e));
      }
    };
    void load();
    const timer = setInterval(() => void load(), REFRESH_MS);
    return () => {
      abort.abort();
      clearInterval(timer);
    };
  }, [rolloutId, reload]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && onClose();
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [onClose]);

  const cancel = async () => {
    try {
      await rolloutClient.cancelRollout({ rolloutId });
      setCancelError(undefined);
      setConfirming(false);
      setReload((n) => n + 1);
      onChanged();
    } catch (e) {
      if (errorCode(e) === Code.PermissionDenied) {
        actionDenied("cancelRollout", serverMessage(e));
        setConfirming(false);
      }
      setCancelError(`cancel failed: ${errorText(e)}`);
    }
  };

  return (
    <>
      <div class="backdrop" onClick={onClose} />
      <aside class="drawer" role="dialog" aria-label={`Rollout ${rolloutId}`}>
        <header class="drawer-head">
          <h2 class="mono">{rolloutId}</h2>
          {rollout && rolloutBadge(rollout)}
          <button type="button" class="close" onClick={onClose} aria-label="Close">
            ✕
          </button>
        </header>
        {error && <Notice kind="error">{error}</Notice>}
        {cancelError && <Notice kind="error">{cancelError}</Notice>}
        {rollout === undefined ? (
          !error && <p class="muted">Loading…</p>
        ) : (
          <>
            {!TERMINAL_ROLLOUT.has(rollout.status) && (
              <div class="actions">
                {confirming ? (
                  <>
                    <button type="button" class="danger" onClick={() => void cancel()}>
                      Confirm cancel
                    </button>
                    <button type="button" onClick={() => setConfirming(false)}>
                      Keep running
                    </button>
                  </>
                ) : (
                  <ActionButton action="cancelRollout" class="danger" onClick={() => setConfirming(true)}>
                    Cancel rollout
                  </ActionButton>
                )}
              </div>
            )}
            <section>
              <h3>Rollout</h3>
              <dl class="fields">
                <dt>Mode</dt>
                <dd>{rollout.mode === RolloutMode.UNSPECIFIED ? "—" : RolloutMode[rollout.mode]}</dd>
                <dt>Created</dt>
                <dd>{formatAbsolute(msOf(rollout.createTime))}</dd>
                <dt>Started</dt>
                <dd>{rollout.startTime ? formatAbsolute(msOf(rollout.startTime)) : "—"}</dd>
                <dt>Ended</dt>
                <dd>{rollout.endTime ? formatAbsolute(msOf(rollout.endTime)) : "—"}</dd>
                <dt>Duration</dt>
                <dd>{formatDuration(rolloutDuration(rollout, now))}</dd>
                <dt>Priority</dt>
                <dd>{rollout.priority}</dd>
                <dt>Attempts</dt>
                <dd>{rollout.attemptCount}</dd>
                {rollout.nextAttemptTime && !TERMINAL_ROLLOUT.has(rollout.status) && (
                  <>
                    <dt>Next attempt</dt>
                    <dd class="next-attempt">
                      <RelativeTime time={rollout.nextAttemptTime} /> ({formatAbsolute(msOf(rollout.nextAttemptTime))})
                    </dd>
                  </>
                )}
                {rollout.failureReason && (
                  <>
                    <dt>Failure</dt>
                    <dd class="error-text">{rollout.failureReason}</dd>
                  </>
                )}
                <dt>Resources</dt>
                <dd>{rollout.resourcesId || "—"}</dd>
              </dl>
            </section>
            <section>
              <h3>Input</h3>
              <pre class="json">{prettyJson(jsonOfValue(rollout.input))}</pre>
            </section>
            <section>
              <h3>Result</h3>
              <pre class="json rollout-result">{prettyJson(jsonOfValue(rollout.result))}</pre>
            </section>
            <section>
              <h3>Config</h3>
              <pre class="json">{JSON.stringify(configJson(rollout), null, 2)}</pre>
            </section>
            {rollout.metadata && Object.keys(rollout.metadata).length > 0 && (
              <section>
                <h3>Metadata</h3>
                <pre class="json">{JSON.stringify(rollout.metadata, null, 2)}</pre>
              </section>
            )}
            <section>
              <h3>Attempts</h3>
              {attempts.length === 0 ? (
                <p class="muted">{rollout.status === RolloutStatus.QUEUING ? "Waiting for a runner." : "No attempts."}</p>
              ) : (
                <ol class="timeline">
                  {attempts.map((a) => (
                    <li key={a.attemptId} data-attempt-id={a.attemptId} data-status={AttemptStatus[a.status]}>
                      <div class="timeline-head">
                        <strong>#{a.sequenceId}</strong>
                        <Badge kind={`attempt-${AttemptStatus[a.status]}`} label={AttemptStatus[a.status] ?? "?"} />
                        <span>
                          on <Link href={runnerPath(a.workerId)} class="mono">{a.workerId}</Link>
                        </span>
                      </div>
                      <div class="muted small">
                        started <RelativeTime time={a.startTime ?? a.createTime} /> · {formatDuration(attemptDuration(a, now))}
                        {a.endTime ? ` · ended ${formatAbsolute(msOf(a.endTime))}` : " · running"}
                      </div>
                      {a.error && (a.error.message || a.error.kind) ? (
                        <div class="error-text">
                          {a.error.kind === AttemptErrorKind.REPORTED || a.error.kind === AttemptErrorKind.UNSPECIFIED
                            ? a.error.message
                            : `${AttemptErrorKind[a.error.kind]?.toLowerCase().replace(/_/g, " ")}: ${a.error.message}`}
                        </div>
                      ) : null}
                      {a.result !== undefined && (
                        <div class="mono small attempt-result" title="the attempt's result">
                          result {previewJson(jsonOfValue(a.result), 120)}
                        </div>
                      )}
                      {a.lateStatus !== AttemptStatus.UNSPECIFIED && (
                        <div class="muted small">late report: {AttemptStatus[a.lateStatus]}</div>
                      )}
                    </li>
                  ))}
                </ol>
              )}
            </section>
          </>
        )}
      </aside>
    </>
  );
}

function prettyJson(value: unknown): string {
  return value === undefined ? "—" : JSON.stringify(value, null, 2);
}

function configJson(rollout: Rollout): Record<string, unknown> {
  const c = rollout.config;
  if (c === undefined) return {};
  const duration = (d: typeof c.timeout) => (d === undefined ? undefined : toJson(DurationSchema, d));
  return {
    maxAttempts: c.maxAttempts || undefined,
    retryOn: c.retryOn.map((s) => AttemptStatus[s]),
    timeout: duration(c.timeout),
    unresponsiveTimeout: duration(c.unresponsiveTimeout),
    deadline: duration(c.deadline),
    queueTimeout: duration(c.queueTimeout),
    requiredLabels: Object.keys(c.requiredLabels).length === 0 ? undefined : c.requiredLabels,
    retryDelay: duration(c.retryDelay),
    retryBackoffCoefficient: c.retryBackoffCoefficient || undefined,
    maxRetryDelay: duration(c.maxRetryDelay),
  };
}
