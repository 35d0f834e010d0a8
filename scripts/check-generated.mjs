// Fails when src/gen differs from what `npm run generate` makes now, so a proto
// edit without `npm run generate` cannot land: `buf generate` writes the code,
// `buf build` the descriptor sets with comments that server reflection serves
// (ours from proto/, and those of reflection and health, whose protos are not
// our API and live where their services are served from).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const scratch = mkdtempSync(join(tmpdir(), "runnerline-gen-"));
const out = join(scratch, "gen");
try {
  const template = readFileSync(join(root, "buf.gen.yaml"), "utf8").replace(/out: src\/gen/, `out: ${out}`);
  const templatePath = join(scratch, "buf.gen.yaml");
  writeFileSync(templatePath, template);
  buf(["generate", "--template", templatePath]);
  // The same builds as the generate script in package.json, output redirected.
  for (const [input, file] of [
    [[], "runnerline.binpb"],
    [["src/server/transport/protos"], "grpc-reflection.binpb"],
    [["node_modules/grpc-health-check/proto"], "grpc-health.binpb"],
  ]) {
    buf(["build", ...input, "--as-file-descriptor-set", "-o", join(out, file)]);
  }
  const fresh = listFiles(out);
  const committed = listFiles(join(root, "src/gen"));
  const stale = [...new Set([...fresh, ...committed])].filter((file) => {
    const want = safeRead(join(out, file));
    const have = safeRead(join(root, "src/gen", file));
    return want === undefined || have === undefined || !want.equals(have);
  });
  if (stale.length > 0) {
    console.error(`src/gen is stale (run \`npm run generate\`): ${stale.join(", ")}`);
    process.exit(1);
  }
  console.log(`src/gen is up to date (${committed.length} files)`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

function buf(args) {
  execFileSync(join(root, "node_modules/.bin/buf"), args, {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, PATH: `${join(root, "node_modules/.bin")}:${process.env.PATH}` },
  });
}

function listFiles(dir) {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath ?? e.path, e.name)));
}

/** Bytes, not text: the .binpb files are binary. */
function safeRead(path) {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}
