// Before any test file runs: rebuild dist/ when src/ changed since it was built (scripts/build.mjs --if-stale).
// Tests import the TypeScript sources directly; the few that run the `runnerline` command, `npm start` or the
// packed package run dist/, and this keeps them from running an outdated build (bin/runnerline.mjs refuses one).
import { build } from "../scripts/build.mjs";

export default function setup(): void {
  build({ ifStale: true });
}
