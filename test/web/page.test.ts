/**
 * The web page in a real Chromium against a real server with real runners:
 * rows and badges, live updates from WatchWorkers, search / filter / sort in
 * the URL, the runner detail's sparklines, a rollout's attempts, Cancel, and
 * the reconnect banner when the server goes away and comes back.
 */
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../polling.js";
import { type Browser, CHROMIUM_AVAILABLE, launchBrowser } from "./browser.js";
import { type Fleet, startFleet } from "./fleet.js";
import { TcpRelay } from "../tcp-relay.js";
import { timestampMs } from "../../web/src/quarantine.js";

let fleet: Fleet;
let browser: Browser;
let page: Page;
/** In front of the server for the runner whose connection a test cuts. */
let lostRelay: TcpRelay | undefined;
/** The runner that ran ro-hold. */
let busyId = "";

const rows = () => page.$$eval("table.runners tbody tr", (trs) => trs.map((tr) => tr.getAttribute("data-worker-id")));
const rowStatus = (id: string) => page.getAttribute(`tr[data-worker-id="${id}"]`, "data-status", { timeout: 1_000 }).catch(() => null);
const badgeColour = (id: string) => page.locator(`tr[data-worker-id="${id}"] .badge`).evaluate((el) => getComputedStyle(el).backgroundColor);
/** Status → badge colour seen; each status must get its own. */
const badgeColours = new Map<string, string>();
const sameList = (want: string[]) => (got: (string | null)[]) => JSON.stringify(got) === JSON.stringify(want);

beforeAll(async () => {
  if (!CHROMIUM_AVAILABLE) return;
  fleet = await startFleet();
  fleet.addRunner({ workerId: "gpu-a", labels: { gpu: "h100", zone: "a" }, capacity: 2, gpus: 2 });
  fleet.addRunner({ workerId: "cpu-b", labels: { pool: "cpu", zone: "b" } });
  fleet.addRunner({ workerId: "cpu-c", labels: { pool: "cpu", zone: "a" } });
  await eventually(
    () => fleet.clients.workers.listWorkers({}),
    (r) => r.workers.length === 3 && r.workers.every((w) => w.connected),
  );
  browser = await launchBrowser();
  page = await browser.context.newPage();
}, 30_000);

afterAll(async () => {
  await browser?.close();
  await fleet?.close();
  await lostRelay?.close();
});

describe.runIf(CHROMIUM_AVAILABLE)("Runners page", { timeout: 30_000 }, () => {
  it("lists the runners with status badges, labels and telemetry", async () => {
    await page.goto(`${fleet.baseUrl}/`);
    await eventually(rows, sameList(["cpu-b", "cpu-c", "gpu-a"]));
    for (const id of ["cpu-b", "cpu-c", "gpu-a"]) expect(await rowStatus(id)).toBe("IDLE");
    expect(await page.locator('tr[data-worker-id="gpu-a"] .badge').textContent()).toBe("IDLE");
    badgeColours.set("IDLE", await badgeColour("gpu-a"));
    expect(await page.locator('tr[data-worker-id="gpu-a"] .label').allTextContents()).toEqual(["gpu=h100", "zone=a"]);
    expect(await page.locator('tr[data-worker-id="gpu-a"] .gpu').count()).toBe(2);
    await eventually(() => page.locator('[data-count="IDLE"]').textContent(), (t) => t === "3 idle");
  });

  it("shows a runner turning BUSY and back live, without a reload", async () => {
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
    await fleet.enqueue("ro-hold", { hold: "h1" });
    const busy = await eventually(
      async () => (await Promise.all(["cpu-b", "cpu-c", "gpu-a"].map(async (id) => [id, await rowStatus(id)] as const))).find(([, s]) => s === "BUSY"),
      (found) => found !== undefined,
    );
    busyId = busy![0];
    expect(await page.locator(`tr[data-worker-id="${busyId}"] td`).nth(2).textContent()).toBe("ro-hold");
    badgeColours.set("BUSY", await badgeColour(busyId));
    fleet.release("h1", { reward: 0.75 });
    await eventually(() => rowStatus(busyId), (s) => s === "IDLE");
    // Same document all along: the row changed in place.
    expect(await page.evaluate(() => (window as unknown as { marker: number }).marker)).toBe(42);
  });

  it("searches, filters by label and sorts, with the view in the URL", async () => {
    await page.fill('input[aria-label="Search runner id"]', "cpu");
    await eventually(rows, sameList(["cpu-b", "cpu-c"]));
    expect(new URL(page.url()).searchParams.get("q")).toBe("cpu");
    await page.fill('input[aria-label="Search runner id"]', "");
    await eventually(rows, sameList(["cpu-b", "cpu-c", "gpu-a"]));

    await page.fill('input[aria-label^="Filter by label"]', "zone=a");
    await page.press('input[aria-label^="Filter by label"]', "Enter");
    await eventually(rows, sameList(["cpu-c", "gpu-a"]));
    expect(new URL(page.url()).searchParams.getAll("label")).toEqual(["zone:a"]);
    await page.click("button.chip-label");
    await eventually(rows, sameList(["cpu-b", "cpu-c", "gpu-a"]));

    await page.click('th button:has-text("Runner ID")');
    await eventually(rows, sameList(["gpu-a", "cpu-c", "cpu-b"]));
    expect(new URL(page.url()).searchParams.get("sort")).toBe("-worker_id");
    // A shared link opens the same view.
    const shared = await browser.context.newPage();
    await shared.goto(`${fleet.baseUrl}/runners?q=cpu&sort=-worker_id`);
    await eventually(() => shared.$$eval("table.runners tbody tr", (trs) => trs.map((tr) => tr.getAttribute("data-worker-id"))), sameList(["cpu-c", "cpu-b"]));
    await shared.close();
    await page.click('th button:has-text("Runner ID")');
    await eventually(rows, sameList(["cpu-b", "cpu-c", "gpu-a"]));
  });

  it("hides OFFLINE runners until asked, then shows them; a dropped runner is UNKNOWN", async () => {
    const leaving = fleet.addRunner({ workerId: "leaving-d" });
    // A runner that says nothing as it goes (a stopped runner says Goodbye): its connection is cut under it, and stays
    // refused, as with a host that died.
    lostRelay = await new TcpRelay({ host: "127.0.0.1", port: Number(fleet.grpcAddress.split(":")[1]) }).start();
    fleet.addRunner({ workerId: "lost-e", address: lostRelay.address });
    await eventually(() => Promise.all([rowStatus("leaving-d"), rowStatus("lost-e")]), (s) => s.every((x) => x === "IDLE"));
    await leaving.stop({ drain: true }); // Goodbye: OFFLINE
    lostRelay.cut(); // stream cut: UNKNOWN
    await eventually(() => rowStatus("lost-e"), (s) => s === "UNKNOWN");
    badgeColours.set("UNKNOWN", await badgeColour("lost-e"));
    await eventually(rows, sameList(["cpu-b", "cpu-c", "gpu-a", "lost-e"]));
    await page.click("button.chip-offline");
    await eventually(() => rowStatus("leaving-d"), (s) => s === "OFFLINE");
    badgeColours.set("OFFLINE", await badgeColour("leaving-d"));
    expect(new URL(page.url()).searchParams.get("status")).toBe("all");
    expect(new Set(badgeColours.values()).size).toBe(4);
    await page.click("button.chip-unknown");
    await page.click("button.chip-offline");
    await eventually(rows, sameList(["cpu-b", "cpu-c", "gpu-a"]));
    expect(new URL(page.url()).searchParams.get("status")).toBe("idle,busy");
    await page.click("button.chip-unknown");
  });

  it("opens a runner's detail with sparklines, its GPU table and its attempts", async () => {
    await page.click('tr[data-worker-id="gpu-a"] a.detail-link');
    expect(new URL(page.url()).pathname).toBe("/runners/gpu-a");
    const drawer = page.locator('aside[aria-label="Runner gpu-a"]');
    await drawer.waitFor();
    await eventually(
      () => drawer.locator('svg.sparkline[aria-label="CPU utilisation"]').getAttribute("data-points"),
      (n) => Number(n) >= 3,
    );
    const points = await drawer.locator('svg.sparkline[aria-label="CPU utilisation"] polyline').getAttribute("points");
    expect(points!.split(" ").length).toBeGreaterThanOrEqual(3);
    expect(await drawer.locator('svg.sparkline[aria-label="GPU 1 utilisation"]').count()).toBe(1);
    expect(await drawer.locator("table.gpus-table tbody tr").count()).toBe(2);
    expect(await drawer.textContent()).toContain("NVIDIA H100 80GB HBM3");
    await page.keyboard.press("Escape");
    expect(new URL(page.url()).pathname).toBe("/runners");

    await page.goto(`${fleet.baseUrl}/runners/${busyId}`);
    const ran = page.locator(`aside[aria-label="Runner ${busyId}"] table.attempts tbody tr`);
    await ran.first().waitFor();
    expect(await ran.first().locator("a").textContent()).toBe("ro-hold");
    expect(await ran.first().locator(".badge").textContent()).toBe("SUCCEEDED");
    await page.keyboard.press("Escape");
  });
});

describe.runIf(CHROMIUM_AVAILABLE)("Rollouts page", { timeout: 30_000 }, () => {
  it("lists rollouts and shows a rollout's attempts as a timeline", async () => {
    await fleet.enqueue("ro-flaky", { fail: "exit status 3" }, { maxAttempts: 2, retryOnFailed: true });
    await eventually(
      () => fleet.clients.rollouts.getRollout({ rolloutId: "ro-flaky" }),
      (r) => r.rollout?.attemptCount === 2 && r.rollout.endTime !== undefined,
    );
    await page.click('header nav a:has-text("Rollouts")');
    await page.locator('tr[data-rollout-id="ro-flaky"]').waitFor();
    expect(await page.getAttribute('tr[data-rollout-id="ro-flaky"]', "data-status")).toBe("FAILED");
    expect(await page.getAttribute('tr[data-rollout-id="ro-hold"]', "data-status")).toBe("SUCCEEDED");
    // The Result column is the rollout's result: what the handler returned, as the runner SDK reports it.
    await eventually(() => page.locator('tr[data-rollout-id="ro-hold"] td.result').textContent(), (t) => t === '{"reward":0.75}');
    expect(await page.locator('tr[data-rollout-id="ro-flaky"] td.result').textContent()).toBe("—");

    await page.click('tr[data-rollout-id="ro-flaky"] a');
    const drawer = page.locator('aside[aria-label="Rollout ro-flaky"]');
    await drawer.locator(".timeline li").nth(1).waitFor();
    expect(await drawer.locator(".timeline li").evaluateAll((lis) => lis.map((li) => li.getAttribute("data-status")))).toEqual(["FAILED", "FAILED"]);
    expect(await drawer.locator(".timeline").textContent()).toContain("exit status 3");
    expect(await drawer.locator("pre.rollout-result").textContent()).toBe("—");
    await page.keyboard.press("Escape");

    await page.click('tr[data-rollout-id="ro-hold"] a');
    const held = page.locator('aside[aria-label="Rollout ro-hold"]');
    await held.locator(".timeline li").first().waitFor();
    expect(JSON.parse((await held.locator("pre.rollout-result").textContent())!)).toEqual({ reward: 0.75 });
    expect(await held.locator(".timeline li .attempt-result").textContent()).toBe('result {"reward":0.75}');
    await page.keyboard.press("Escape");
  });

  it("cancels a rollout from its detail", async () => {
    await fleet.enqueue("ro-cancel", { hold: "never" });
    await page.goto(`${fleet.baseUrl}/rollouts/ro-cancel`);
    const drawer = page.locator('aside[aria-label="Rollout ro-cancel"]');
    await drawer.locator('button:has-text("Cancel rollout")').click();
    await drawer.locator('button:has-text("Confirm cancel")').click();
    await eventually(() => fleet.clients.rollouts.getRollout({ rolloutId: "ro-cancel" }), (r) => r.rollout?.status === 6);
    await drawer.locator('.badge[data-status="CANCELLED"]').waitFor();
  });
});

describe.runIf(CHROMIUM_AVAILABLE)("Quarantine and the fleet summary", { timeout: 60_000 }, () => {
  const quarantined = async () => {
    const { worker } = await fleet.clients.workers.getWorker({ workerId: "cpu-b" });
    return (timestampMs(worker?.quarantineUntil) ?? 0) > Date.now();
  };

  it("shows a runner that failed 3 attempts in a row as quarantined, filters on it and releases it", async () => {
    // required_labels pins the failing rollouts on cpu-b; the server's default policy quarantines after 3 failures in a row.
    for (let i = 1; i <= 3 && !(await quarantined()); i++) {
      await fleet.enqueue(`ro-bad-${i}`, { fail: "CUDA error: out of memory" }, { requiredLabels: { zone: "b" } });
      await eventually(() => fleet.clients.rollouts.getRollout({ rolloutId: `ro-bad-${i}` }), (r) => r.rollout?.endTime !== undefined);
    }
    await eventually(quarantined, (q) => q);

    await page.goto(`${fleet.baseUrl}/runners`);
    const badge = page.locator('tr[data-worker-id="cpu-b"] .badge[data-status="QUARANTINED"]');
    await badge.waitFor();
    expect(await badge.getAttribute("title")).toMatch(/no new work until/);
    // Fully inside its cell, not clipped by the fixed column width.
    expect(await badge.evaluate((el) => el.getBoundingClientRect().right <= el.closest("td")!.getBoundingClientRect().right)).toBe(true);
    expect(await page.locator('tr[data-worker-id="cpu-c"] .badge[data-status="QUARANTINED"]').count()).toBe(0);
    expect(await badge.evaluate((el) => getComputedStyle(el).backgroundColor)).not.toBe(await badgeColour("cpu-c"));
    await eventually(() => page.locator('[data-count="QUARANTINED"]').textContent(), (t) => t === "1 quarantined");

    await page.click('button.chip-quarantined');
    await eventually(rows, sameList(["cpu-b"]));
    expect(page.url()).toContain("quarantined=1");

    await page.click('tr[data-worker-id="cpu-b"] td.id a');
    const drawer = page.locator('aside[aria-label="Runner cpu-b"]');
    await drawer.locator('section[aria-label="Quarantine"]').waitFor();
    await drawer.locator('button:has-text("Release runner")').click();
    await drawer.locator('button:has-text("Confirm release")').click();
    await eventually(quarantined, (q) => !q);
    await drawer.locator('section[aria-label="Quarantine"]').waitFor({ state: "detached" });
    expect(await drawer.locator('.badge[data-status="QUARANTINED"]').count()).toBe(0);
    await page.keyboard.press("Escape");
    await page.locator('[data-count="QUARANTINED"]').waitFor({ state: "detached", timeout: 10_000 });
  });

  it("shows queue depth, the oldest queued age and unroutable rollouts from GetFleetSummary", async () => {
    await fleet.enqueue("ro-nowhere", { question: "1+1" }, { requiredLabels: { pool: "tpu" }, priority: 7 });
    await page.goto(`${fleet.baseUrl}/rollouts`);
    await eventually(() => page.locator('[data-count="UNROUTABLE"]').textContent(), (t) => t === "1 unroutable");
    expect(await page.locator('[data-count="QUEUE"]').textContent()).toMatch(/^queue 1 · oldest \d/);
    expect(await page.locator('tr[data-rollout-id="ro-nowhere"] td.priority').textContent()).toBe("7");
    await page.click('tr[data-rollout-id="ro-nowhere"] a');
    const drawer = page.locator('aside[aria-label="Rollout ro-nowhere"]');
    expect(JSON.parse((await drawer.locator("pre.json").nth(2).textContent())!).requiredLabels).toEqual({ pool: "tpu" });
    await page.keyboard.press("Escape");

    // A failed attempt with a retry_delay: the rollout waits, and the row says until when.
    await fleet.enqueue("ro-later", { fail: "flaky network" }, { maxAttempts: 2, retryOnFailed: true, retryDelayMs: 120_000 });
    await eventually(() => fleet.clients.rollouts.getRollout({ rolloutId: "ro-later" }), (r) => r.rollout?.nextAttemptTime !== undefined);
    await eventually(() => page.locator('tr[data-rollout-id="ro-later"] .next-attempt').textContent(), (t) => /retry in 1 min/.test(t ?? ""));
    await fleet.clients.rollouts.cancelRollout({ rolloutId: "ro-later" });
    await fleet.clients.rollouts.cancelRollout({ rolloutId: "ro-nowhere" });
    await eventually(() => page.locator('[data-count="QUEUE"]').textContent(), (t) => t === "queue 0", 10_000);
    expect(await page.locator('[data-count="UNROUTABLE"]').count()).toBe(0);
  });
});

describe.runIf(CHROMIUM_AVAILABLE)("Cordon and drain", { timeout: 60_000 }, () => {
  const workerOf = (workerId: string) => fleet.clients.workers.getWorker({ workerId }).then((r) => r.worker!);

  it("cordons a runner from its detail: badge, filter and no new work; Uncordon lets work through again", async () => {
    await page.goto(`${fleet.baseUrl}/runners/cpu-c`);
    const drawer = page.locator('aside[aria-label="Runner cpu-c"]');
    await drawer.locator('input[aria-label="Reason for cordon or drain"]').fill("disk swap");
    await drawer.locator("button.cordon").click();
    await eventually(() => workerOf("cpu-c"), (w) => w.cordoned && w.cordonReason === "disk swap");
    await drawer.locator('.notice-warn:has-text("Cordoned: disk swap")').waitFor();
    await drawer.locator('.badge[data-status="CORDONED"]').waitFor();
    expect(await drawer.locator("button.cordon").count()).toBe(0);
    // The header counts it (GetFleetSummary's workers.cordoned).
    await eventually(() => page.locator('[data-count="CORDONED"]').textContent({ timeout: 1_000 }).catch(() => null), (t) => t === "1 cordoned");
    await page.keyboard.press("Escape");

    // The table learned it live (WatchWorkers); the badge has its own colour and says why.
    const badge = page.locator('tr[data-worker-id="cpu-c"] .badge[data-status="CORDONED"]');
    await badge.waitFor();
    expect(await badge.getAttribute("title")).toMatch(/^disk swap · since \d{4}-/);
    expect(await badge.evaluate((el) => getComputedStyle(el).backgroundColor)).not.toBe(await badgeColour("cpu-b"));
    expect(await page.locator('tr[data-worker-id="cpu-b"] .badge[data-status="CORDONED"]').count()).toBe(0);
    await page.click("button.chip-cordoned");
    await eventually(rows, sameList(["cpu-c"]));
    expect(page.url()).toContain("cordoned=1");

    // Only cpu-c carries pool=cpu and zone=a: the rollout waits while it is cordoned.
    await fleet.enqueue("ro-cordoned", { hold: "h-cordon" }, { requiredLabels: { pool: "cpu", zone: "a" } });
    expect((await fleet.clients.rollouts.getRollout({ rolloutId: "ro-cordoned" })).rollout?.status).toBe(1);

    await page.click('tr[data-worker-id="cpu-c"] td.id a');
    await drawer.locator("button.uncordon").click();
    await eventually(() => workerOf("cpu-c"), (w) => !w.cordoned);
    await eventually(() => fleet.clients.rollouts.getRollout({ rolloutId: "ro-cordoned" }), (r) => r.rollout?.latestAttemptId !== "");
    fleet.release("h-cordon");
    await drawer.locator('section[aria-label="Maintenance"] .notice-warn').waitFor({ state: "detached" });
    await page.keyboard.press("Escape");
    // Uncordoned, it leaves the filtered table.
    await eventually(rows, sameList([]));
    await page.click("button.chip-cordoned");
    await eventually(rows, (r) => r.includes("cpu-c"));
  });

  it("drains a runner from its detail, confirmed in two steps: it leaves, and stays cordoned", async () => {
    fleet.addRunner({ workerId: "drain-f", labels: { pool: "drain" } });
    await eventually(() => workerOf("drain-f").catch(() => undefined), (w) => w?.connected === true);
    await page.goto(`${fleet.baseUrl}/runners/drain-f`);
    const drawer = page.locator('aside[aria-label="Runner drain-f"]');
    await drawer.locator("button.drain").click();
    await drawer.locator('button:has-text("Confirm drain")').click();
    const left = await eventually(() => workerOf("drain-f"), (w) => w.status === 4);
    expect(left).toMatchObject({ cordoned: true, draining: false });
    await drawer.locator('.notice-warn:has-text("Cordoned: no reason given")').waitFor();
    await drawer.locator("button.uncordon").waitFor();
    // Gone: nobody is left to drain, so the page no longer offers it.
    expect(await drawer.locator("button.drain").count()).toBe(0);
    await page.keyboard.press("Escape");
  });
});

describe.runIf(CHROMIUM_AVAILABLE)("Connection loss", { timeout: 30_000 }, () => {
  it("says so while the stream is down and recovers by itself", async () => {
    await page.goto(`${fleet.baseUrl}/runners`);
    await eventually(rows, (r) => r.length === 4);
    const restarting = fleet.restartServer(2_000);
    // The stream's loss is said at once; once the page's refetch fails too, one notice says the server is gone.
    const down = page.locator('.notice:has-text("Live updates lost"), .notice:has-text("The server does not answer")');
    await down.first().waitFor({ timeout: 10_000 });
    await restarting;
    // The new server starts empty; the runners reconnect and the page shows them again.
    await page.locator(".notice").first().waitFor({ state: "detached", timeout: 15_000 });
    await eventually(rows, sameList(["cpu-b", "cpu-c", "gpu-a"]), 15_000);
  });
});
