import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Rebuilds dist/ when it is older than src/ (what the tests that run the command use).
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Tests start real servers on loopback; separate processes keep their
    // sockets and timers apart.
    pool: "forks",
  },
});
