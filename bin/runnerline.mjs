#!/usr/bin/env node
// The `runnerline` command: runs the CLI compiled to dist/ (no TypeScript loader). In a clone, a dist/ older than
// src/ is refused with the command that rebuilds it, never run silently (bin/build-state.mjs); `npm start`,
// `npm test` and `npm ci` rebuild it themselves.
import { staleReason } from "./build-state.mjs";

const stale = staleReason();
if (stale !== undefined) {
  process.stderr.write(`runnerline: ${stale}; run \`npm run build\` first\n`);
  process.exit(1);
}
await import("../dist/cli/main.js");
