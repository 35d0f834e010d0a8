/**
 * Without Debian's chromium, the browser tests are left out with one line
 * that says what is missing and how to install it; with
 * RUNNERLINE_REQUIRE_CHROMIUM=1 (CI) its absence fails them instead.
 */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

const root = new URL("../..", import.meta.url).pathname;

/** Imports test/web/browser.ts in a fresh process with `env`; prints CHROMIUM_AVAILABLE. */
function importBrowser(env: Record<string, string>) {
  const script = `const m = await import("./test/web/browser.ts"); console.log("available=" + m.CHROMIUM_AVAILABLE);`;
  const result = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: root,
    env: { ...process.env, RUNNERLINE_REQUIRE_CHROMIUM: "", ...env },
    encoding: "utf8",
    timeout: 30_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe("browser tests without chromium", { timeout: 40_000 }, () => {
  it("are left out with one line naming what is missing and how to install it", () => {
    const { status, stdout, stderr } = importBrowser({ RUNNERLINE_CHROMIUM: "/nonexistent/chromium" });
    expect(status).toBe(0);
    expect(stdout.trim()).toBe("available=false");
    const lines = stderr.trim().split("\n");
    expect(lines).toEqual([
      "Browser tests skipped: /nonexistent/chromium not found: install Debian's chromium (apt-get install chromium, as .ci/run does) or set RUNNERLINE_CHROMIUM to a Chromium binary",
    ]);
  });

  it("fail when CI requires them (RUNNERLINE_REQUIRE_CHROMIUM=1)", () => {
    const { status, stderr } = importBrowser({ RUNNERLINE_CHROMIUM: "/nonexistent/chromium", RUNNERLINE_REQUIRE_CHROMIUM: "1" });
    expect(status).not.toBe(0);
    expect(stderr).toContain("RUNNERLINE_REQUIRE_CHROMIUM=1 but /nonexistent/chromium not found: install Debian's chromium");
  });
});
