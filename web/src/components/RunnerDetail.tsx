import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { type Attempt, AttemptStatus } from "../../../src/gen/runnerline/v1/attempt_pb.js";
import type { TelemetrySample } from "../../../src/gen/runnerline/v1/telemetry_pb.js";
import type { Worker } from "../../../src/gen/runnerline/v1/worker_pb.js";
import { Code } from "@connectrpc/connect";
import { attemptClient, errorCode, errorText, serverMessage, workerClient } from "../api.js";
import { actionDenied } from "../auth.js";
import { formatAbsolute, formatBytes, formatDuration, formatPercent, formatRelative, percentOf } from "../format.js";
import { isQuarantined, timestampMs } from "../quarantine.js";
import { rolloutPath } from "../route.js";
import { cordonSummary } from "../cordon.js";
import { ActionButton, Badge, Bar, Link, msOf, Notice, RelativeTime, Sparkline, useNow } from "./common.js";
import { CordonSection } from "./CordonSection.js";
import { workerBadge } from "./RunnersPage.js";

const REFRESH_MS = 2_000;

interface DetailData {
  worker?: Worker;
  samples: TelemetrySample[];
  attempts: Attempt[];
  error?: string;
}

/** Polls the worker, its telemetry history and its recent attempts while open. */
function useRunnerDetail(workerId: string, reload: number): DetailData {
  const [data, setData] = useState<DetailData>({ samples: [], attempts: [] });
  useEffect(() => {
    const abort = new AbortController();
    setData({ samples: [], attempts: [] });
    const load = async () => {
      try {
        const signal = abort.signal;
        const [worker, history, attempts] = await Promise.all([
          workerClient.getWorker({ workerId }, { signal }),
          workerClient.getWorkerHistory({ workerId }, { signal }),
          attemptClient.listAttempts({ workerId, orderBy: "create_time desc", pageSize: 20 }, { signal }),
        ]);
        if (!abort.signal.aborted) setData({ worker: worker.worker, samples: history.samples, attempts: attempts.attempts });
      } catch (error) {
        if (!abort.signal.aborted) setData((d) => ({ ...d, error: errorText(error) }));
      }
    };
    void load();
    const timer = setInterval(() => void load(), REFRESH_MS);
    return () => {
      abort.abort();
      clearInterval(timer);
    };
  }, [workerId, reload]);
  return data;
}

export function RunnerDetail({ workerId, onClose }: { workerId: string; onClose(): void }) {
  const [reload, setReload] = useState(0);
  const { worker, samples, attempts, error } = useRunnerDetail(workerId, reload);
  const now = useNow();
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && onClose();
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [onClose]);
  const snapshot = worker?.snapshot;
  const gpuCount = samples.at(-1)?.gpus.length ?? 0;
  return (
    <>
      <div class="backdrop" onClick={onClose} />
      <aside class="drawer" role="dialog" aria-label={`Runner ${workerId}`}>
        <header class="drawer-head">
          <h2 class="mono">{workerId}</h2>
          {worker && workerBadge(worker)}
          <button type="button" class="close" onClick={onClose} aria-label="Close">
            ✕
          </button>
        </header>
        {error && <Notice kind="error">{error}</Notice>}
        {worker?.statusReason && <p class="muted status-reason">{worker.statusReason}</p>}
        {worker === undefined ? (
          !error && <p class="muted">Loading…</p>
        ) : (
          <>
            {isQuarantined(worker, now) && <QuarantineSection worker={worker} now={now} onReleased={() => setReload((n) => n + 1)} />}
            <CordonSection worker={worker} onChanged={() => setReload((n) => n + 1)} />
            <section>
              <h3>Recent telemetry</h3>
              <div class="sparks">
                <figure>
                  <figcaption>CPU {formatPercent(samples.at(-1)?.cpuUsagePercent)}</figcaption>
                  <Sparkline label="CPU utilisation" values={samples.map((s) => s.cpuUsagePercent)} />
                </figure>
                <figure>
                  <figcaption>Memory {formatPercent(percentOf(samples.at(-1)?.memoryUsedBytes, samples.at(-1)?.memoryTotalBytes))}</figcaption>
                  <Sparkline label="Memory utilisation" values={samples.map((s) => percentOf(s.memoryUsedBytes, s.memoryTotalBytes) ?? 0)} />
                </figure>
                {Array.from({ length: gpuCount }, (_, g) => (
                  <figure key={g}>
                    <figcaption>GPU {samples.at(-1)!.gpus[g]!.index} {formatPercent(samples.at(-1)!.gpus[g]!.utilizationPercent)}</figcaption>
                    <Sparkline label={`GPU ${g} utilisation`} values={samples.map((s) => s.gpus[g]?.utilizationPercent ?? 0)} />
                  </figure>
                ))}
              </div>
              <p class="muted small">{samples.length} samples, one per heartbeat, kept in the server's memory.</p>
            </section>
            <section>
              <h3>Worker</h3>
              <dl class="fields">
                <Field name="Connected">{worker.connected ? "yes" : "no"}</Field>
                <Field name="Capacity">{`${worker.currentAttemptIds.length} of ${worker.capacity} slots in use`}</Field>
                <Field name="Current rollouts">
                  {worker.currentRolloutIds.length === 0
                    ? "—"
                    : worker.currentRolloutIds.map((id) => (
                        <Link key={id} href={rolloutPath(id)} class="block mono">
                          {id}
                        </Link>
                      ))}
                </Field>
                <Field name="Current attempts">{worker.currentAttemptIds.join(", ") || "—"}</Field>
                <Field name="Last heartbeat"><RelativeTime time={worker.lastHeartbeatTime} /></Field>
                <Field name="Last busy"><RelativeTime time={worker.lastBusyTime} /></Field>
                <Field name="Last idle"><RelativeTime time={worker.lastIdleTime} /></Field>
                <Field name="Last dequeue"><RelativeTime time={worker.lastDequeueTime} /></Field>
                <Field name="Connected since">{formatAbsolute(msOf(worker.connectTime))}</Field>
                <Field name="Disconnected at">{worker.disconnectTime ? formatAbsolute(msOf(worker.disconnectTime)) : "—"}</Field>
                <Field name="First seen">{formatAbsolute(msOf(worker.createTime))}</Field>
                <Field name="Peer">{worker.peer || "—"}</Field>
                <Field name="Client version">{worker.clientVersion || "—"}</Field>
                <Field name="Version">{String(worker.version)}</Field>
                <Field name="Quarantine">
                  {worker.quarantineUntil === undefined
                    ? "—"
                    : `${isQuarantined(worker, now) ? "until" : "ended"} ${formatAbsolute(timestampMs(worker.quarantineUntil))}${worker.quarantineReason ? ` · ${worker.quarantineReason}` : ""}`}
                </Field>
                <Field name="Quarantines in a row">{worker.quarantineCount}</Field>
                <Field name="Cordon">{worker.cordoned ? `${worker.draining ? "draining · " : ""}${cordonSummary(worker)}` : "—"}</Field>
                <Field name="Labels">
                  {Object.keys(worker.labels).length === 0
                    ? "—"
                    : Object.entries(worker.labels).map(([k, v]) => (
                        <span class="label" key={k}>
                          {k}={v}
                        </span>
                      ))}
                </Field>
              </dl>
            </section>
            {snapshot && (
              <section>
                <h3>Host</h3>
                <dl class="fields">
                  <Field name="Host name">{snapshot.hostname || "—"}</Field>
                  <Field name="OS">{snapshot.os || "—"}</Field>
                  <Field name="CPU">
                    <Bar percent={snapshot.cpu?.usagePercent} label={formatPercent(snapshot.cpu?.usagePercent)} />
                    <span class="muted small"> {snapshot.cpu?.model} · {snapshot.cpu?.logicalCores} cores · load {snapshot.cpu?.loadAverage.map((l) => l.toFixed(2)).join(" ")}</span>
                  </Field>
                  <Field name="Memory">
                    {formatBytes(snapshot.memory?.usedBytes)} of {formatBytes(snapshot.memory?.totalBytes)} · swap {formatBytes(snapshot.memory?.swapUsedBytes)} of {formatBytes(snapshot.memory?.swapTotalBytes)}
                  </Field>
                  <Field name="Network">
                    ↓ {formatBytes(snapshot.network?.rxBytesPerSecond ?? 0)}/s · ↑ {formatBytes(snapshot.network?.txBytesPerSecond ?? 0)}/s
                  </Field>
                  {snapshot.disks.map((disk) => (
                    <Field key={disk.mount} name={`Disk ${disk.mount}`}>
                      <Bar percent={percentOf(disk.usedBytes, disk.totalBytes)} label={`${formatBytes(disk.usedBytes)} of ${formatBytes(disk.totalBytes)}`} />
                    </Field>
                  ))}
                  {snapshot.collectionErrors.map((e) => (
                    <Field key={e.source} name={`Unread: ${e.source}`}>{e.message}</Field>
                  ))}
                </dl>
                {snapshot.gpus.length > 0 && (
                  <div class="table-wrap">
                    <table class="gpus-table">
                      <thead>
                        <tr><th>GPU</th><th>Name</th><th>Utilisation</th><th>Memory</th><th>Temp</th><th>Power</th></tr>
                      </thead>
                      <tbody>
                        {snapshot.gpus.map((gpu) => (
                          <tr key={gpu.index}>
                            <td>{gpu.index}</td>
                            <td>{gpu.name}</td>
                            <td><Bar percent={gpu.utilizationPercent} label={formatPercent(gpu.utilizationPercent)} /></td>
                            <td><Bar percent={percentOf(gpu.memoryUsedBytes, gpu.memoryTotalBytes)} label={`${formatBytes(gpu.memoryUsedBytes)} / ${formatBytes(gpu.memoryTotalBytes)}`} /></td>
                            <td>{gpu.temperatureCelsius.toFixed(0)} °C</td>
                            <td>{gpu.powerWatts.toFixed(0)} W</td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )}
              </section>
            )}
            {worker.extraStats && Object.keys(worker.extraStats).length > 0 && (
              <section>
                <h3>Extra stats</h3>
                <pre class="json">{JSON.stringify(worker.extraStats, null, 2)}</pre>
              </section>
            )}
            <section>
              <h3>Recent attempts</h3>
              {attempts.length === 0 ? (
                <p class="muted">No attempts yet.</p>
              ) : (
                <div class="table-wrap">
                  <table class="attempts">
                    <thead>
                      <tr><th>Rollout</th><th>#</th><th>Status</th><th>Started</th><th>Duration</th></tr>
                    </thead>
                    <tbody>
                      {attempts.map((a) => (
                        <tr key={a.attemptId} data-attempt-id={a.attemptId}>
                          <td class="mono"><Link href={rolloutPath(a.rolloutId)}>{a.rolloutId}</Link></td>
                          <td>{a.sequenceId}</td>
                          <td><Badge kind={`attempt-${AttemptStatus[a.status]}`} label={AttemptStatus[a.status] ?? "?"} title={a.error?.message} /></td>
                          <td><RelativeTime time={a.startTime ?? a.createTime} /></td>
                          <td>{formatDuration(attemptDuration(a, now))}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )}
            </section>
          </>
        )}
      </aside>
    </>
  );
}

/** Why the runner gets no new work, and the two-step Release that lifts it (WorkerService.ReleaseWorker). */
function QuarantineSection({ worker, now, onReleased }: { worker: Worker; now: number; onReleased(): void }) {
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<string>();
  const until = timestampMs(worker.quarantineUntil);
  const release = async () => {
    try {
      await workerClient.releaseWorker({ workerId: worker.workerId });
      setConfirming(false);
      setError(undefined);
      onReleased();
    } catch (e) {
      if (errorCode(e) === Code.PermissionDenied) {
        actionDenied("releaseWorker", serverMessage(e));
        setConfirming(false);
      }
      setError(`release failed: ${errorText(e)}`);
    }
  };
  return (
    <section class="quarantine" aria-label="Quarantine">
      <Notice kind="warn">
        Quarantined: {worker.quarantineReason || "repeated failures"}. No new work until {formatAbsolute(until)} ({formatRelative(until, now)}); work it holds
        is unaffected. Quarantine {worker.quarantineCount} in a row.
      </Notice>
      {error && <Notice kind="error">{error}</Notice>}
      <div class="actions">
        {confirming ? (
          <>
            <button type="button" class="danger" onClick={() => void release()}>
              Confirm release
            </button>
            <button type="button" onClick={() => setConfirming(false)}>
              Keep quarantined
            </button>
          </>
        ) : (
          <ActionButton action="releaseWorker" onClick={() => setConfirming(true)}>
            Release runner
          </ActionButton>
        )}
      </div>
    </section>
  );
}

function Field({ name, children }: { name: string; children: ComponentChildren }) {
  return (
    <>
      <dt>{name}</dt>
      <dd>{children}</dd>
    </>
  );
}

export function attemptDuration(a: Attempt, now: number): number | undefined {
  const start = msOf(a.startTime) ?? msOf(a.createTime);
  if (start === undefined) return undefined;
  return (msOf(a.endTime) ?? now) - start;
}
