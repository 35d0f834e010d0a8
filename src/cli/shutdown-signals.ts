import type { RunningServer } from "../server/app.js";

/**
 * A repeat this soon after the first signal is the same signal delivered
 * twice, not a second request: Ctrl-C under `npm start` reaches the server
 * from the terminal and again from npm, which forwards it to its child.
 */
export const REPEAT_WINDOW_MS = 500;

/**
 * Calls `onSignal` for the first SIGINT/SIGTERM (count 1) and for the next one
 * that is not a duplicate of it (count 2). Returns the unsubscribe.
 */
export function watchShutdownSignals(onSignal: (signal: NodeJS.Signals, count: 1 | 2) => void): () => void {
  let firstAt: number | undefined;
  let count = 0;
  const handler = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (firstAt !== undefined && now - firstAt < REPEAT_WINDOW_MS) return;
    firstAt ??= now;
    count = Math.min(count + 1, 2);
    onSignal(signal, count as 1 | 2);
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return () => {
    process.off("SIGINT", handler);
    process.off("SIGTERM", handler);
  };
}

/** What a server stopped without finishing its drain leaves behind: one line in all, one per session holding work. */
export function abandonmentReport(server: RunningServer, signal: NodeJS.Signals): string[] {
  const sessions = server.coordinator.openSessions();
  const holding = sessions.filter((session) => session.attemptIds.length > 0);
  const attempts = holding.reduce((n, session) => n + session.attemptIds.length, 0);
  return [
    `${signal} again: stopping without finishing the drain; abandoning ${sessions.length} open sessions holding ${attempts} attempts (they resume after a restart with a durable store)`,
    ...holding.map((s) => `abandoned session ${s.sessionId} of worker ${s.workerId} holding ${s.attemptIds.join(", ")}`),
  ];
}
