/**
 * Debian's chromium driven by playwright-core (no browser download: .ci/run
 * installs the chromium package). Headless, sandbox off (CI runs as root),
 * nothing that phones home, and a fresh profile per launch.
 *
 * Where it is not installed, a plain `npm test` leaves the browser tests out
 * and says so in one line (as test/postgres.ts does for PostgreSQL); CI sets
 * RUNNERLINE_REQUIRE_CHROMIUM=1 (.ci/run), and then its absence fails the run.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";

export const CHROMIUM = process.env.RUNNERLINE_CHROMIUM ?? "/usr/bin/chromium";

const MISSING = existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} not found: install Debian's chromium (apt-get install chromium, as .ci/run does) or set RUNNERLINE_CHROMIUM to a Chromium binary`;
if (MISSING !== undefined) {
  if (process.env.RUNNERLINE_REQUIRE_CHROMIUM === "1") throw new Error(`RUNNERLINE_REQUIRE_CHROMIUM=1 but ${MISSING}`);
  if (!(globalThis as { chromiumSkipSaid?: boolean }).chromiumSkipSaid) {
    (globalThis as { chromiumSkipSaid?: boolean }).chromiumSkipSaid = true;
    console.warn(`Browser tests skipped: ${MISSING}`);
  }
}

/** Whether the browser tests run (describe.runIf). */
export const CHROMIUM_AVAILABLE = MISSING === undefined;

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** `bypassCSP` lets scripts pass code as strings to page.evaluate (the page's policy forbids eval). */
export async function launchBrowser(viewport = { width: 1280, height: 800 }, options: { bypassCSP?: boolean } = {}): Promise<Browser> {
  if (MISSING !== undefined) throw new Error(MISSING);
  const profile = mkdtempSync(join(tmpdir(), "runnerline-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
    bypassCSP: options.bypassCSP ?? false,
    // A chromium that cannot start fails here with its own message, not as the tests' timeout.
    timeout: 20_000,
  });
  // Shorter than the tests' own timeouts, so that an element that never comes fails naming its locator
  // instead of as an anonymous test timeout.
  context.setDefaultTimeout(15_000);
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
