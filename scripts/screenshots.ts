// Regenerates docs/images/*.png: the Runners and Rollouts pages at 1280 and
// 390 px wide, a runner's detail and a quarantined runner's, against a real server with scripted
// runners (test/web/fleet.ts). Run with `npm run screenshots`; needs
// Debian's chromium (see test/web/browser.ts).
import { join } from "node:path";
import { eventually } from "../test/polling.js";
import { launchBrowser } from "../test/web/browser.js";
import { startFleet } from "../test/web/fleet.js";

const out = new URL("../docs/images/", import.meta.url).pathname;
const fleet = await startFleet({ heartbeatIntervalMs: 1_000 });
const browser = await launchBrowser();
try {
  fleet.addRunner({ workerId: "h100-node-01", labels: { gpu: "h100", zone: "eu-1" }, capacity: 2, gpus: 4 });
  fleet.addRunner({ workerId: "h100-node-02", labels: { gpu: "h100", zone: "eu-1" }, capacity: 2, gpus: 4 });
  fleet.addRunner({ workerId: "a100-node-07", labels: { gpu: "a100", zone: "us-2" }, capacity: 1, gpus: 2 });
  fleet.addRunner({ workerId: "cpu-pool-03", labels: { pool: "cpu" }, capacity: 4 });
  fleet.addRunner({ workerId: "cpu-pool-04", labels: { pool: "cpu" }, capacity: 4 });
  const lost = fleet.addRunner({ workerId: "cpu-pool-05", labels: { pool: "cpu" } });
  await eventually(() => fleet.clients.workers.listWorkers({}), (r) => r.workers.filter((w) => w.connected).length === 6);
  await lost.stop(); // its stream drops: UNKNOWN

  // Three failures in a row on one runner quarantine it (the server's default policy).
  for (let i = 1; i <= 3; i++) {
    await fleet.enqueue(`a100-smoke-${i}`, { fail: "CUDA error: an illegal memory access was encountered" }, { requiredLabels: { gpu: "a100" } });
    await eventually(() => fleet.clients.rollouts.getRollout({ rolloutId: `a100-smoke-${i}` }), (r) => r.rollout?.endTime !== undefined);
  }
  // Nobody carries gpu=b200: queued and unroutable. A retry with a delay shows when it runs next.
  await fleet.enqueue("b200-eval-001", { question: "prove it" }, { requiredLabels: { gpu: "b200" }, priority: 5 });
  await fleet.enqueue("web-task-042", { fail: "connection reset by peer" }, { maxAttempts: 3, retryOnFailed: true, retryDelayMs: 300_000, requiredLabels: { pool: "cpu" } });
  for (let i = 1; i <= 4; i++) await fleet.enqueue(`math-eval-${String(i).padStart(3, "0")}`, { question: `${i}+${i}` });
  await fleet.enqueue("swe-task-117", { fail: "tests failed: 3 of 41" }, { maxAttempts: 2, retryOnFailed: true });
  for (let i = 1; i <= 3; i++) await fleet.enqueue(`train-batch-${i}`, { hold: "train", step: i });
  await eventually(() => fleet.clients.rollouts.getRollout({ rolloutId: "swe-task-117" }), (r) => r.rollout?.attemptCount === 2 && r.rollout.endTime !== undefined);
  // Enough heartbeats for the sparklines to have a shape.
  await new Promise((resolve) => setTimeout(resolve, 6_000));

  const page = await browser.context.newPage();
  const shoot = async (path: string, width: number, name: string, ready: string, height = 760) => {
    await page.setViewportSize({ width, height });
    await page.goto(`${fleet.baseUrl}${path}`);
    await page.locator(ready).first().waitFor();
    await page.waitForTimeout(600);
    await page.screenshot({ path: join(out, name) });
    console.log(`wrote docs/images/${name}`);
  };
  await shoot("/runners", 1280, "runners-1280.png", "table.runners tbody tr");
  await shoot("/runners", 390, "runners-390.png", "table.runners tbody tr", 844);
  await shoot("/runners/h100-node-01", 1280, "runner-detail-1280.png", 'svg.sparkline[aria-label="GPU 3 utilisation"]', 900);
  await shoot("/runners/a100-node-07", 1280, "runner-quarantined-1280.png", 'section[aria-label="Quarantine"]', 760);
  await shoot("/rollouts", 1280, "rollouts-1280.png", "table.rollouts tbody tr");
  await shoot("/rollouts", 390, "rollouts-390.png", "table.rollouts tbody tr", 844);
  await shoot("/rollouts/swe-task-117", 390, "rollout-detail-390.png", ".timeline li", 844);
} finally {
  await browser.close();
  await fleet.close();
}
