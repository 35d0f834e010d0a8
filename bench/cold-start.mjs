// `npm run bench:cold-start [-- --runs 30] [--bin PATH] [--compare PATH]`: the CLI's cold start, each run a new
// node process, as a shell script calling `runnerline` sees it. Prints the median, p90 and min wall time of
// `runnerline --version`, `runnerline --help` and, for scale, `node -e 0` (node's own start on this machine), one
// JSON line each; --compare adds `--version` of another checkout's bin/runnerline.mjs (an older one, say). Plain
// node, no TypeScript loader: it measures what users run (docs/benchmarks.md, "CLI cold start"). Each round runs
// every command once, so that load on the machine hits them alike.
import { spawnSync } from "node:child_process";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "30" },
    bin: { type: "string", default: new URL("../bin/runnerline.mjs", import.meta.url).pathname },
    compare: { type: "string" },
  },
});
const runs = Number(values.runs);
const commands = [
  { name: "runnerline --version", args: [values.bin, "--version"] },
  { name: "runnerline --help", args: [values.bin, "--help"] },
  { name: "node -e 0", args: ["-e", "0"] },
  ...(values.compare === undefined ? [] : [{ name: `${values.compare} --version`, args: [values.compare, "--version"] }]),
];
const times = new Map(commands.map((c) => [c.name, []]));
for (let i = 0; i < runs + 1; i++) {
  for (const command of commands) {
    const started = process.hrtime.bigint();
    const result = spawnSync(process.execPath, command.args, { stdio: ["ignore", "ignore", "pipe"] });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (result.status !== 0 && command.name !== "runnerline --help") {
      throw new Error(`${command.name} exited ${result.status}: ${result.stderr}`);
    }
    if (i > 0) times.get(command.name).push(ms); // the first round warms the disk cache
  }
}
const at = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
console.log(`| command | median ms | p90 ms | min ms | runs |\n| --- | --- | --- | --- | --- |`);
for (const [name, list] of times) {
  const sorted = [...list].sort((a, b) => a - b);
  const row = { command: name, medianMs: at(sorted, 0.5), p90Ms: at(sorted, 0.9), minMs: sorted[0], runs };
  console.log(`| \`${name}\` | ${row.medianMs.toFixed(0)} | ${row.p90Ms.toFixed(0)} | ${row.minMs.toFixed(0)} | ${runs} |`);
  console.error(JSON.stringify(row));
}
