import { useEffect, useState } from "preact/hooks";
import { errorText, workerClient } from "../api.js";
import { type AuthState, signOut, useAuth } from "../auth.js";
import { type FleetCounts, fleetCountsFromSummary } from "../fleet-counts.js";
import { formatDuration } from "../format.js";
import type { Route } from "../route.js";
import { Link } from "./common.js";

const REFRESH_MS = 5_000;

const WORKER_COUNTS = [
  ["idle", "IDLE"],
  ["busy", "BUSY"],
  ["unknown", "UNKNOWN"],
  ["offline", "OFFLINE"],
] as const satisfies readonly (readonly [keyof FleetCounts, string])[];

const ROLLOUT_COUNTS = [
  ["running", "RUNNING"],
  ["succeeded", "SUCCEEDED"],
  ["failed", "FAILED"],
  ["cancelled", "CANCELLED"],
] as const satisfies readonly (readonly [keyof FleetCounts, string])[];

export function Header({ route }: { route: Route }) {
  const auth = useAuth();
  const [counts, setCounts] = useState<FleetCounts>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    const abort = new AbortController();
    const load = () =>
      workerClient.getFleetSummary({}, { signal: abort.signal }).then(
        ({ summary }) => {
          setCounts(fleetCountsFromSummary(summary));
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
            {WORKER_COUNTS.map(([key, label]) => (
              <span key={key} class={`count count-${key}`} data-count={label} title={`${label} runners`}>
                {counts[key]} {key}
              </span>
            ))}
            {counts.quarantined > 0 && (
              <span class="count count-quarantined" data-count="QUARANTINED" title="runners kept from new work after repeated failures">
                {counts.quarantined} quarantined
              </span>
            )}
            {counts.cordoned > 0 && (
              <span class="count count-cordoned" data-count="CORDONED" title="runners an operator keeps from new work (cordoned or draining)">
                {counts.cordoned} cordoned
              </span>
            )}
            <span
              class="count sep"
              data-count="QUEUE"
              title={`rollouts waiting for a runner (QUEUING + REQUEUING)${counts.oldestQueuedMs === undefined ? "" : `; the oldest has waited ${formatDuration(counts.oldestQueuedMs)}`}`}
            >
              queue {counts.queueDepth}
              {counts.oldestQueuedMs !== undefined && <span class="muted" data-count="OLDEST_QUEUED"> · oldest {formatDuration(counts.oldestQueuedMs)}</span>}
            </span>
            {counts.unroutable > 0 && (
              <span class="count count-unroutable" data-count="UNROUTABLE" title="queued rollouts whose required labels no connected runner carries">
                {counts.unroutable} unroutable
              </span>
            )}
            {ROLLOUT_COUNTS.map(([key, label]) => (
              <span key={key} class="count" data-count={`ROLLOUT_${label}`} title={`${label} rollouts${key === "running" ? " (preparing counts as running)" : ""}`}>
                {counts[key]} {key}
              </span>
            ))}
          </>
        )}
      </div>
      <SignedIn auth={auth} />
    </header>
  );
}

/** Which token the tab uses, as far as the page knows, and the way out. */
function SignedIn({ auth }: { auth: AuthState }) {
  if (!auth.signedIn) return null;
  const denied = Object.values(auth.permissions).some((p) => p.state === "denied");
  return (
    <span class="signed-in">
      {denied ? (
        <span title="this token may watch the fleet but not cancel rollouts or release runners">signed in · read-only</span>
      ) : (
        <span>signed in</span>
      )}
      <button type="button" class="link" onClick={signOut} title="Forget this tab's token">
        Sign out
      </button>
    </span>
  );
}
