// Fails when src/gen differs from what `buf generate` makes of proto/ now, so a
// proto edit without `npm run generate` cannot land.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const scratch = mkdtempSync(join(tmpdir(), "runnerline-gen-"));
try {
  const template = readFileSync(join(root, "buf.gen.yaml"), "utf8").replace(/out: src\/gen/, `out: ${scratch}`);
  const templatePath = join(scratch, "buf.gen.yaml");
  writeFileSync(templatePath, template);
  execFileSync(join(root, "node_modules/.bin/buf"), ["generate", "--template", templatePath], {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, PATH: `${join(root, "node_modules/.bin")}:${process.env.PATH}` },
  });
  const fresh = listFiles(scratch).filter((f) => f !== "buf.gen.yaml");
  const committed = listFiles(join(root, "src/gen"));
  const stale = [...new Set([...fresh, ...committed])].filter((file) => {
    const want = safeRead(join(scratch, file));
    const have = safeRead(join(root, "src/gen", file));
    return want !== have;
  });
  if (stale.length > 0) {
    console.error(`src/gen is stale (run \`npm run generate\`): ${stale.join(", ")}`);
    process.exit(1);
  }
  console.log(`src/gen is up to date (${committed.length} files)`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

function listFiles(dir) {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath ?? e.path, e.name)));
}

function safeRead(path) {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}
