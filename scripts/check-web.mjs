// Fails when web/dist differs from what `npm run build:web` makes now, so an
// edit under web/src (or to the generated code it imports) cannot land
// without the rebuilt page. The build is deterministic: file names carry a
// hash of their content.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const scratch = mkdtempSync(join(tmpdir(), "runnerline-web-"));
try {
  execFileSync(
    join(root, "node_modules/.bin/vite"),
    ["build", "--config", "web/vite.config.ts", "--outDir", scratch, "--emptyOutDir"],
    { cwd: root, stdio: "inherit" },
  );
  const committed = join(root, "web/dist");
  const fresh = listFiles(scratch);
  const have = listFiles(committed);
  const stale = [...new Set([...fresh, ...have])].filter((file) => {
    const want = safeRead(join(scratch, file));
    const got = safeRead(join(committed, file));
    return want === undefined || got === undefined || !want.equals(got);
  });
  if (stale.length > 0) {
    console.error(`web/dist is stale (run \`npm run build:web\`): ${stale.join(", ")}`);
    process.exit(1);
  }
  console.log(`web/dist is up to date (${have.length} files)`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

function listFiles(dir) {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => relative(dir, join(e.parentPath ?? e.path, e.name)));
  } catch {
    return [];
  }
}

function safeRead(path) {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}
