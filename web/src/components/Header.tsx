import { useEffect, useState } from "preact/hooks";
import { RolloutStatus } from "../../../src/gen/runnerline/v1/rollout_pb.js";
import { WorkerStatus } from "../../../src/gen/runnerline/v1/worker_pb.js";
import { errorText } from "../api.js";
import { type FleetCounts, loadFleetCounts } from "../fleet-counts.js";
import type { Route } from "../route.js";
import { Link } from "./common.js";

const REFRESH_MS = 5_000;

export function Header({ route }: { route: Route }) {
  const [counts, setCounts] = useState<FleetCounts>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    const abort = new AbortController();
    const load = () =>
      loadFleetCounts(abort.signal).then(
        (c) => {
          setCounts(c);
          setError(undefined);
        },
        (e) => !abort.signal.aborted && setError(errorText(e)),
      );
    void load();
    const timer = setInterval(load, REFRESH_MS);
    return () => {
      abort.abort();
      clearInterval(timer);
    };
  }, []);
  return (
    <header class="top">
      <span class="brand">Runnerline</span>
      <nav>
        <Link href="/runners" class={route.page === "runners" ? "active" : undefined}>
          Runners
        </Link>
        <Link href="/rollouts" class={route.page === "rollouts" ? "active" : undefined}>
          Rollouts
        </Link>
      </nav>
      <div class="counts" aria-label="Fleet counts" title={error ? `counts unavailable: ${error}` : undefined}>
        {counts === undefined ? (
          <span class="muted">{error ? "counts unavailable" : "…"}</span>
        ) : (
          <>
            {[WorkerStatus.IDLE, WorkerStatus.BUSY, WorkerStatus.UNKNOWN, WorkerStatus.OFFLINE].map((s) => (
              <span key={s} class={`count count-${WorkerStatus[s].toLowerCase()}`} data-count={WorkerStatus[s]} title={`${WorkerStatus[s]} runners`}>
                {counts.workers.get(s) ?? 0} {WorkerStatus[s].toLowerCase()}
              </span>
            ))}
            <span class="count sep" data-count="QUEUE" title="rollouts waiting for a runner (QUEUING + REQUEUING)">
              queue {counts.queueDepth}
            </span>
            {[RolloutStatus.RUNNING, RolloutStatus.SUCCEEDED, RolloutStatus.FAILED].map((s) => (
              <span key={s} class="count" data-count={`ROLLOUT_${RolloutStatus[s]}`} title={`${RolloutStatus[s]} rollouts (preparing counts as running)`}>
                {(counts.rollouts.get(s) ?? 0) + (s === RolloutStatus.RUNNING ? (counts.rollouts.get(RolloutStatus.PREPARING) ?? 0) : 0)} {RolloutStatus[s].toLowerCase()}
              </span>
            ))}
          </>
        )}
      </div>
    </header>
  );
}
