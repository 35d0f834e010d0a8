// The Python SDK's generated stubs (python/src/runnerline/v1/*_pb2*.py) from the
// same proto/ files as src/gen, with Debian's protoc and grpc_python_plugin
// (whose versions match Debian's python3-protobuf and python3-grpcio runtime).
//   node scripts/python-stubs.mjs          regenerate them
//   node scripts/python-stubs.mjs --check  fail when the committed ones are stale (part of `npm test`)
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const PROTOC = "/usr/bin/protoc";
const GRPC_PLUGIN = "/usr/bin/grpc_python_plugin";
const WKT_INCLUDE = "/usr/include"; // google/protobuf/*.proto, from libprotobuf-dev
const root = new URL("..", import.meta.url).pathname;
const target = join(root, "python/src/runnerline/v1");
const check = process.argv.includes("--check");

const missing = [
  [PROTOC, "protobuf-compiler"],
  [GRPC_PLUGIN, "protobuf-compiler-grpc"],
  [join(WKT_INCLUDE, "google/protobuf/struct.proto"), "libprotobuf-dev"],
].filter(([path]) => !existsSync(path));
if (missing.length > 0) {
  console.error(
    `the Python stubs need Debian's ${missing.map(([path, pkg]) => `${pkg} (${path})`).join(", ")}: ` +
      "apt-get install -y --no-install-recommends protobuf-compiler protobuf-compiler-grpc libprotobuf-dev (.ci/run does this)",
  );
  process.exit(1);
}

const scratch = mkdtempSync(join(tmpdir(), "runnerline-pystubs-"));
try {
  const protos = readdirSync(join(root, "proto/runnerline/v1"))
    .filter((name) => name.endsWith(".proto"))
    .sort()
    .map((name) => `proto/runnerline/v1/${name}`);
  execFileSync(
    PROTOC,
    ["-I", "proto", "-I", WKT_INCLUDE, `--python_out=${scratch}`, `--grpc_python_out=${scratch}`, `--plugin=protoc-gen-grpc_python=${GRPC_PLUGIN}`, ...protos],
    { cwd: root, stdio: "inherit" },
  );
  const generatedDir = join(scratch, "runnerline/v1");
  const fresh = readdirSync(generatedDir).filter((name) => name.endsWith(".py")).sort();
  const committed = existsSync(target) ? readdirSync(target).filter((name) => /_pb2(_grpc)?\.py$/.test(name)).sort() : [];
  if (check) {
    const stale = [...new Set([...fresh, ...committed])].filter((name) => {
      const want = fresh.includes(name) ? readFileSync(join(generatedDir, name)) : undefined;
      const have = committed.includes(name) ? readFileSync(join(target, name)) : undefined;
      return want === undefined || have === undefined || !want.equals(have);
    });
    if (stale.length > 0) {
      console.error(`python/src/runnerline/v1 is stale (run \`node scripts/python-stubs.mjs\`): ${stale.join(", ")}`);
      process.exit(1);
    }
    console.log(`python/src/runnerline/v1 is up to date (${committed.length} files)`);
  } else {
    for (const name of committed) if (!fresh.includes(name)) rmSync(join(target, name));
    for (const name of fresh) writeFileSync(join(target, name), readFileSync(join(generatedDir, name)));
    console.log(`wrote ${fresh.length} files to python/src/runnerline/v1`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
