/**
 * The web page against a server that requires tokens (--auth-file): it asks
 * for one, shows the server's answer to a wrong one, sends the token on every
 * call (WatchWorkers included), disables what an operator token may not do
 * and enables it for an admin token; and a server without an auth file gets
 * no prompt and no probes.
 */
import type { Page, Request } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TOKEN_STORAGE_KEY } from "../../web/src/auth.js";
import { timestampMs } from "../../web/src/quarantine.js";
import { eventually } from "../polling.js";
import { DEFAULT_ENTRIES, TOKENS, type TokenEntry, writeAuthFile } from "../security/tokens.js";
import { type Browser, CHROMIUM_AVAILABLE, launchBrowser } from "./browser.js";
import { type Fleet, startFleet } from "./fleet.js";

/** An admin token that the last test turns into an operator's while it is signed in. */
const DEMOTED = { name: "demoted", role: "admin", token: "demoted-secret-token" } satisfies TokenEntry;

let authFile: string;
let fleet: Fleet;
let browser: Browser;
let page: Page;
/** Every RPC the page made: method path and the authorization header it carried. */
let calls: { method: string; authorization: string | undefined }[] = [];

const rows = () => page.$$eval("table.runners tbody tr", (trs) => trs.map((tr) => tr.getAttribute("data-worker-id")));
const storedToken = () => page.evaluate((key) => sessionStorage.getItem(key), TOKEN_STORAGE_KEY);
const prompt = () => page.locator('form[aria-label="Sign in with a token"]');
const cancelButton = () => page.locator('aside[aria-label="Rollout ro-waiting"] button[data-action="cancelRollout"]');
const releaseButton = () => page.locator('aside[aria-label="Runner gpu-a"] button[data-action="releaseWorker"]');

async function signIn(token: string): Promise<void> {
  await prompt().locator('input[aria-label="Token"]').fill(token);
  await prompt().locator('button[type="submit"]').click();
}

async function recordCall(request: Request): Promise<void> {
  const method = new URL(request.url()).pathname;
  if (!method.startsWith("/runnerline.v1.")) return;
  calls.push({ method, authorization: (await request.allHeaders()).authorization });
}

beforeAll(async () => {
  if (!CHROMIUM_AVAILABLE) return;
  authFile = writeAuthFile([...DEFAULT_ENTRIES, DEMOTED]);
  fleet = await startFleet({ authFile, token: TOKENS.admin });
  fleet.addRunner({ workerId: "gpu-a", labels: { zone: "a" } });
  fleet.addRunner({ workerId: "gpu-b", labels: { zone: "b" } });
  await eventually(() => fleet.clients.workers.listWorkers({}), (r) => r.workers.length === 2 && r.workers.every((w) => w.connected));
  // Three failures in a row quarantine gpu-a (the server's default policy), so its detail offers Release.
  for (let i = 1; i <= 3; i++) {
    await fleet.enqueue(`ro-bad-${i}`, { fail: "CUDA error: out of memory" }, { requiredLabels: { zone: "a" } });
    await eventually(() => fleet.clients.rollouts.getRollout({ rolloutId: `ro-bad-${i}` }), (r) => r.rollout?.endTime !== undefined);
  }
  await eventually(() => fleet.clients.workers.getWorker({ workerId: "gpu-a" }), (r) => (timestampMs(r.worker?.quarantineUntil) ?? 0) > Date.now());
  // Nobody carries pool=tpu: it stays queued, so its detail offers Cancel.
  await fleet.enqueue("ro-waiting", { question: "1+1" }, { requiredLabels: { pool: "tpu" } });
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.on("request", (request) => void recordCall(request));
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await fleet?.close();
});

describe.runIf(CHROMIUM_AVAILABLE)("Web page with tokens", { timeout: 30_000 }, () => {
  it("asks for a token when the server answers UNAUTHENTICATED", async () => {
    await page.goto(`${fleet.baseUrl}/runners`);
    await prompt().waitFor();
    expect(await prompt().locator(".notice-error").count()).toBe(0);
    expect(await page.locator("table.runners").count()).toBe(0);
    expect(await storedToken()).toBeNull();
  });

  it("shows the server's message for a wrong token and asks again", async () => {
    await signIn("not-a-token");
    await eventually(() => prompt().locator(".notice-error").textContent(), (t) => t === "Token refused: unknown or revoked token");
    expect(await storedToken()).toBeNull();
    // A runner token is a real token, but it may not read the fleet: the server says why.
    await signIn(TOKENS.runner);
    await eventually(() => prompt().locator(".notice-error").textContent(), (t) => /token "gpu-fleet" has role runner/.test(t ?? ""));
    expect(await storedToken()).toBeNull();
    expect(await prompt().isVisible()).toBe(true);
  });

  it("shows everything to an operator token, with Cancel and Release disabled and why", async () => {
    calls = [];
    await signIn(TOKENS.operator);
    await eventually(rows, (r) => JSON.stringify(r) === JSON.stringify(["gpu-a", "gpu-b"]));
    expect(await storedToken()).toBe(TOKENS.operator);
    await eventually(() => page.locator(".signed-in").textContent(), (t) => /read-only/.test(t ?? ""));
    // Every call since sign-in carried the token, the live stream included.
    await eventually(async () => calls.map((c) => c.method), (methods) => methods.includes("/runnerline.v1.WorkerService/WatchWorkers"));
    expect(calls.filter((c) => c.authorization !== `Bearer ${TOKENS.operator}`)).toEqual([]);
    expect(await page.locator('.notice-warn:has-text("Live updates lost")').count()).toBe(0);

    await page.click('tr[data-worker-id="gpu-a"] td.id a');
    await eventually(() => releaseButton().isDisabled(), (disabled) => disabled);
    expect(await releaseButton().getAttribute("title")).toMatch(/^Your token may not do this: token "dashboard" has role operator.*ReleaseWorker/);
    // Cordon is an operator's to do: enabled, without a tooltip.
    const cordonButton = page.locator('aside[aria-label="Runner gpu-a"] button.cordon');
    expect(await cordonButton.isEnabled()).toBe(true);
    expect(await cordonButton.getAttribute("title")).toBeNull();

    await page.goto(`${fleet.baseUrl}/rollouts/ro-waiting`);
    await eventually(() => cancelButton().isDisabled(), (disabled) => disabled);
    expect(await cancelButton().getAttribute("title")).toMatch(/role operator, which may only call read-only queries.*CancelRollout is not among them/);
    expect(await prompt().count()).toBe(0); // the reload kept the tab's token and asked again what it may do
  });

  it("signs out: the token is forgotten and the prompt is back", async () => {
    await page.keyboard.press("Escape"); // the drawer's backdrop covers the header
    await page.click('button:has-text("Sign out")');
    await prompt().waitFor();
    expect(await storedToken()).toBeNull();
    expect(await prompt().locator(".notice-error").count()).toBe(0);
  });

  it("enables Cancel and Release for an admin token", async () => {
    await signIn(TOKENS.admin);
    await page.locator(".signed-in").waitFor();
    await page.goto(`${fleet.baseUrl}/rollouts/ro-waiting`);
    await eventually(() => cancelButton().isEnabled(), (enabled) => enabled);
    expect(await cancelButton().getAttribute("title")).toBeNull();
    expect(await page.locator(".signed-in").textContent()).not.toMatch(/read-only/);
    await page.goto(`${fleet.baseUrl}/runners/gpu-a`);
    await eventually(() => releaseButton().isEnabled(), (enabled) => enabled);
    await releaseButton().click();
    await page.click('button:has-text("Confirm release")');
    await eventually(() => fleet.clients.workers.getWorker({ workerId: "gpu-a" }), (r) => (timestampMs(r.worker?.quarantineUntil) ?? 0) <= Date.now());
  });

  it("disables an action that answers PERMISSION_DENIED after sign-in, with the server's message", async () => {
    await page.keyboard.press("Escape");
    await page.click('button:has-text("Sign out")');
    await signIn(DEMOTED.token);
    // The tab keeps a token only once the server has accepted it: navigating earlier reloads into the prompt.
    await page.locator(".signed-in").waitFor();
    await page.goto(`${fleet.baseUrl}/rollouts/ro-waiting`);
    await eventually(() => cancelButton().isEnabled(), (enabled) => enabled);
    // The token file changes under the page: the same token is an operator's from now on.
    writeAuthFile([...DEFAULT_ENTRIES, { ...DEMOTED, role: "operator" }], authFile);
    await fleet.server.reloadAuth();
    await cancelButton().click();
    await page.click('button:has-text("Confirm cancel")');
    await eventually(() => cancelButton().isDisabled(), (disabled) => disabled);
    expect(await cancelButton().getAttribute("title")).toMatch(/token "demoted" has role operator/);
    expect(await page.locator('aside[aria-label="Rollout ro-waiting"] .notice-error').textContent()).toMatch(/cancel failed: .*has role operator/);
    const { rollout } = await fleet.clients.rollouts.getRollout({ rolloutId: "ro-waiting" });
    expect(rollout?.endTime).toBeUndefined();
  });
});

describe.runIf(CHROMIUM_AVAILABLE)("Web page without an auth file", { timeout: 30_000 }, () => {
  it("asks for nothing and probes nothing", async () => {
    const open = await startFleet();
    try {
      calls = [];
      const fresh = await browser.context.newPage();
      fresh.on("request", (request) => void recordCall(request));
      await fresh.goto(`${open.baseUrl}/runners`);
      await fresh.locator('.notice-info:has-text("No runners yet")').waitFor();
      expect(await fresh.locator('form[aria-label="Sign in with a token"]').count()).toBe(0);
      expect(await fresh.locator(".signed-in").count()).toBe(0);
      expect(calls.some((c) => /CancelRollout|ReleaseWorker|CordonWorker/.test(c.method) || c.authorization !== undefined)).toBe(false);
      await fresh.close();
    } finally {
      await open.close();
    }
  });
});
