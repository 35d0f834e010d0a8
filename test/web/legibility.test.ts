/**
 * What the page must not get wrong to the eye (each case failed before its fix): ids cut
 * without an ellipsis (a cut id looks like a real one), a runner holding two attempts shown
 * with one, relative times cut to "10 min a…", telemetry of runners that are gone drawn like
 * live telemetry, the cancelled count missing from the header, required labels and the
 * unroutable state missing from the Rollouts page, and the same network error said twice.
 */
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "../polling.js";
import { type Browser, CHROMIUM_AVAILABLE, launchBrowser } from "./browser.js";
import { type Fleet, startFleet } from "./fleet.js";
import { TcpRelay } from "../tcp-relay.js";

let fleet: Fleet;
let browser: Browser;
let page: Page;

const LONG_IDS = ["ro-1a251a7eb5c73daa", "ro-77c0de5eb5c7e1f0"];

/** Whether an element's text is cut by its box, and if so whether the cut shows an ellipsis. */
const cut = (selector: string) =>
  page.locator(selector).evaluateAll((els) =>
    els.map((el) => ({
      text: el.textContent,
      cut: el.scrollWidth > el.clientWidth,
      ellipsis: getComputedStyle(el).textOverflow === "ellipsis" && getComputedStyle(el).overflow === "hidden",
      title: el.getAttribute("title"),
    })),
  );

beforeAll(async () => {
  if (!CHROMIUM_AVAILABLE) return;
  fleet = await startFleet();
  fleet.addRunner({ workerId: "pair-a", labels: { pool: "gpu" }, capacity: 2, gpus: 1 });
  fleet.addRunner({ workerId: "gone-b", gpus: 1 });
  await eventually(() => fleet.clients.workers.listWorkers({}), (r) => r.workers.filter((w) => w.connected).length === 2);
  await fleet.runners.get("gone-b")!.stop({ drain: true });
  await eventually(() => fleet.clients.workers.getWorker({ workerId: "gone-b" }), (r) => r.worker?.status === 4 /* OFFLINE */);
  for (const id of LONG_IDS) await fleet.enqueue(id, { hold: "pair" });
  await eventually(() => fleet.clients.workers.getWorker({ workerId: "pair-a" }), (r) => r.worker?.currentAttemptIds.length === 2);
  browser = await launchBrowser();
  page = await browser.context.newPage();
}, 30_000);

afterAll(async () => {
  fleet?.release("pair");
  await browser?.close();
  await fleet?.close();
});

describe.runIf(CHROMIUM_AVAILABLE)("Runners page legibility", { timeout: 30_000 }, () => {
  it("shows every rollout and attempt a runner holds, each on its line, cut ids with an ellipsis and the whole id on hover", async () => {
    await page.goto(`${fleet.baseUrl}/runners`);
    const row = 'tr[data-worker-id="pair-a"]';
    await page.locator(`${row} td`).nth(2).locator("a").nth(1).waitFor();
    const rollouts = await cut(`${row} td:nth-child(3) a`);
    expect(rollouts.map((r) => r.text).sort()).toEqual(LONG_IDS);
    const attempts = await cut(`${row} td.attempt-ids .block`);
    expect(attempts).toHaveLength(2);
    for (const item of [...rollouts, ...attempts]) {
      expect(item.title).toBe(item.text);
      if (item.cut) expect(item.ellipsis, `${item.text} is cut without an ellipsis`).toBe(true);
    }
    // The table at this width does cut these ids: the check above is not vacuous.
    expect([...rollouts, ...attempts].some((item) => item.cut)).toBe(true);
  });

  it("fits relative times in their columns, also the longest ones", async () => {
    await page.clock.setFixedTime(Date.now() + 59 * 60_000);
    await page.goto(`${fleet.baseUrl}/runners?status=all`);
    await page.locator('tr[data-worker-id="gone-b"]').waitFor();
    await eventually(() => page.locator('tr[data-worker-id="gone-b"] time').first().textContent(), (t) => /59 min ago/.test(t ?? ""));
    const times = await page.locator("table.runners tbody td:has(> time)").evaluateAll((tds) =>
      tds.map((td) => ({ text: td.textContent, fits: td.scrollWidth <= td.clientWidth })),
    );
    expect(times.length).toBeGreaterThan(4);
    for (const time of times) expect(time.fits, `"${time.text}" does not fit its cell`).toBe(true);
    await page.clock.setFixedTime(Date.now());
  });

  it("greys the last telemetry of a runner that is not connected, and says so on hover", async () => {
    await page.goto(`${fleet.baseUrl}/runners?status=all`);
    const gone = page.locator('tr[data-worker-id="gone-b"] td.host');
    await gone.waitFor();
    expect(await gone.getAttribute("data-live")).toBe("false");
    const colours = async (id: string) =>
      page.locator(`tr[data-worker-id="${id}"] td.host .bar-fill`).evaluateAll((els) => els.map((el) => getComputedStyle(el).backgroundColor));
    const goneColours = await colours("gone-b");
    expect(new Set(goneColours).size).toBe(1); // one grey, whatever the level
    for (const colour of await colours("pair-a")) expect(goneColours).not.toContain(colour);
    expect(await gone.locator(".bar").first().getAttribute("title")).toMatch(/last reported .* not connected/);
    expect(await page.locator('tr[data-worker-id="pair-a"] td.host').getAttribute("data-live")).toBe("true");
  });
});

describe.runIf(CHROMIUM_AVAILABLE)("Header and Rollouts page", { timeout: 30_000 }, () => {
  it("counts cancelled rollouts in the header", async () => {
    await fleet.enqueue("ro-to-cancel", { hold: "never" }, { requiredLabels: { pool: "nowhere" } });
    await fleet.clients.rollouts.cancelRollout({ rolloutId: "ro-to-cancel" });
    await page.goto(`${fleet.baseUrl}/rollouts`);
    await eventually(() => page.locator('[data-count="ROLLOUT_CANCELLED"]').textContent({ timeout: 1_000 }).catch(() => null), (t) => t === "1 cancelled");
  });

  it("shows a rollout's required labels, marks it unroutable while no connected runner carries them, and filters on that", async () => {
    await fleet.enqueue("ro-tpu", { question: "1+1" }, { requiredLabels: { pool: "tpu" } });
    await fleet.enqueue("ro-gpu-later", { hold: "later" }, { requiredLabels: { pool: "gpu" } });
    await page.goto(`${fleet.baseUrl}/rollouts`);
    const tpu = page.locator('tr[data-rollout-id="ro-tpu"]');
    await tpu.waitFor();
    expect(await tpu.locator(".label").allTextContents()).toEqual(["pool=tpu"]);
    await tpu.locator('.badge[data-status="UNROUTABLE"]').waitFor();
    expect(await tpu.locator('.badge[data-status="UNROUTABLE"]').getAttribute("title")).toMatch(/no connected runner carries pool=tpu/);
    // Waiting for a busy runner that carries its labels is not unroutable.
    const later = page.locator('tr[data-rollout-id="ro-gpu-later"]');
    expect(await later.locator(".label").allTextContents()).toEqual(["pool=gpu"]);
    expect(await later.locator('.badge[data-status="UNROUTABLE"]').count()).toBe(0);

    await page.click("button.chip-unroutable");
    await eventually(() => page.$$eval("table.rollouts tbody tr", (trs) => trs.map((tr) => tr.getAttribute("data-rollout-id"))), (ids) => JSON.stringify(ids) === '["ro-tpu"]');
    expect(new URL(page.url()).searchParams.get("unroutable")).toBe("1");

    fleet.addRunner({ workerId: "tpu-c", labels: { pool: "tpu" } });
    await eventually(() => fleet.clients.rollouts.getRollout({ rolloutId: "ro-tpu" }), (r) => r.rollout?.status === 4 /* SUCCEEDED */);
    await page.click("button.chip-unroutable");
    await eventually(() => tpu.locator('.badge[data-status="UNROUTABLE"]').count(), (n) => n === 0);
  });
});

describe.runIf(CHROMIUM_AVAILABLE)("Server gone", { timeout: 30_000 }, () => {
  it("says once that the server does not answer, not the same error twice", async () => {
    await page.goto(`${fleet.baseUrl}/runners`);
    await page.locator('tr[data-worker-id="pair-a"]').waitFor();
    const restarting = fleet.restartServer(5_000);
    const notices = () => page.locator(".notice").allTextContents();
    const down = await eventually(notices, (texts) => texts.some((t) => /does not answer/.test(t)), 10_000);
    // Give the other request time to fail too: still one notice.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const after = await notices();
    expect(after, JSON.stringify(after)).toHaveLength(1);
    expect(down.join()).not.toMatch(/\[unknown\]/);
    await restarting;
    await page.locator(".notice").first().waitFor({ state: "detached", timeout: 15_000 });
  });
});

describe.runIf(CHROMIUM_AVAILABLE)("A forgotten runner", { timeout: 30_000 }, () => {
  it("says why the server set it OFFLINE, on the badge and in its detail", async () => {
    const own = await startFleet({ server: { forgetAfterMs: 1_000, retentionPeriodMs: 200 } });
    const relay = await new TcpRelay({ host: "127.0.0.1", port: Number(own.grpcAddress.split(":")[1]) }).start();
    try {
      own.addRunner({ workerId: "killed-9", address: relay.address });
      await eventually(() => own.clients.workers.getWorker({ workerId: "killed-9" }).catch(() => ({ worker: undefined })), (r) => r.worker?.connected === true);
      relay.cut(); // as kill -9: no Goodbye, and it never comes back
      await eventually(() => own.clients.workers.getWorker({ workerId: "killed-9" }), (r) => r.worker?.statusReason.startsWith("forgotten") === true, 15_000);
      const tab = await browser.context.newPage();
      await tab.goto(`${own.baseUrl}/runners?status=all`);
      const badge = tab.locator('tr[data-worker-id="killed-9"] .badge[data-status="OFFLINE"]');
      await badge.waitFor();
      expect(await badge.getAttribute("title")).toMatch(/^not connected · forgotten: UNKNOWN with no attempts/);
      await tab.goto(`${own.baseUrl}/runners/killed-9`);
      await expect.poll(() => tab.locator('aside[aria-label="Runner killed-9"] .status-reason').textContent()).toMatch(/^forgotten: /);
      await tab.close();
    } finally {
      await own.close();
      await relay.close();
    }
  });
});
