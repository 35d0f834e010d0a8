// Is dist/ (what bin/runnerline.mjs runs) the build of the sources next to it? In an installed package there are no
// sources, so it is; in a clone, dist/.build-stamp is written by `npm run build` (scripts/build.mjs) with the time
// the build started, and any file under src/ (or a tsconfig) changed since then makes dist/ stale. Plain stat calls,
// no imports beyond node:fs, so that the check costs the CLI's cold start about a millisecond.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_ROOT = fileURLToPath(new URL("..", import.meta.url));
export const STAMP = join(PACKAGE_ROOT, "dist", ".build-stamp");
/** Inputs of the build besides src/: a change to either recompiles everything. */
const CONFIGS = ["tsconfig.json", "tsconfig.build.json"];

/**
 * Why dist/ cannot be run as it is ("dist/ is missing", "src/x.ts changed since dist/ was built"), or undefined when
 * it can.
 */
export function staleReason(root = PACKAGE_ROOT) {
  const src = join(root, "src");
  if (!existsSync(src)) return undefined; // an installed package: dist/ is all there is
  const stamp = join(root, "dist", ".build-stamp");
  if (!existsSync(stamp)) return "dist/ has not been built";
  const built = statSync(stamp).mtimeMs;
  for (const config of CONFIGS) {
    const path = join(root, config);
    if (existsSync(path) && statSync(path).mtimeMs > built) return `${config} changed since dist/ was built`;
  }
  const newer = newerFile(src, built);
  return newer === undefined ? undefined : `${relative(root, newer)} changed since dist/ was built`;
}

function newerFile(dir, than) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      const found = newerFile(path, than);
      if (found !== undefined) return found;
    } else if (statSync(path).mtimeMs > than) {
      return path;
    }
  }
  // A deleted file shows as a newer directory.
  return statSync(dir).mtimeMs > than ? dir : undefined;
}
