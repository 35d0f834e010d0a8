/**
 * Debian's chromium driven by playwright-core (no browser download: .ci/run
 * installs the chromium package). Headless, sandbox off (CI runs as root),
 * nothing that phones home, and a fresh profile per launch.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";

export const CHROMIUM = process.env.RUNNERLINE_CHROMIUM ?? "/usr/bin/chromium";

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
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: install Debian's chromium (apt-get install chromium), as .ci/run does`);
  }
  const profile = mkdtempSync(join(tmpdir(), "runnerline-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
    bypassCSP: options.bypassCSP ?? false,
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
