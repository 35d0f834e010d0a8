import type { Coordinator } from "./coordinator.js";

/**
 * Runs the coordinator's watchdog on its own timer, because runner traffic
 * arrives on streams and cannot be relied on to trigger checks (upstream only
 * checks around API calls). Tests skip the timer and call runWatchdog with a
 * manual clock.
 */
export function startWatchdog(coordinator: Coordinator, periodMs: number, onError: (error: unknown) => void) {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    coordinator.runWatchdog().catch(onError).finally(() => (running = false));
  }, periodMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
