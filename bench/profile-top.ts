/**
 * Where a V8 CPU profile's time went: self time by function (the top
 * entries) and by where the code lives (a package under node_modules, a
 * folder of src/server, node's own internals, garbage collection, idle), as
 * shares of the profile's samples. For the profiles that `npm run bench --
 * --cpu-prof DIR` writes, one per server process.
 *
 *   npx tsx bench/profile-top.ts FILE.cpuprofile [--top 25]
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({ options: { top: { type: "string", default: "25" } }, allowPositionals: true });
if (positionals.length !== 1) {
  console.error("usage: npx tsx bench/profile-top.ts FILE.cpuprofile [--top 25]");
  process.exit(2);
}
const profile = JSON.parse(readFileSync(positionals[0]!, "utf8")) as Profile;
const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
const parents = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);

/** For native and node-internal frames (socket writes): the nearest caller that lives in a package or in src. */
function ownerOf(id: number): string {
  for (let at: number | undefined = id; at !== undefined; at = parents.get(at)) {
    const file = nodes.get(at)!.callFrame.url.replace(/^file:\/\//, "");
    if (file !== "" && !file.startsWith("node:")) return placeOf("", file);
  }
  return "(no caller in JavaScript)";
}
const owners = new Map<string, Map<string, number>>();

/** Microseconds of self time per key. */
const byFunction = new Map<string, number>();
const byPlace = new Map<string, number>();
let total = 0;
profile.samples.forEach((id, i) => {
  const us = profile.timeDeltas[i] ?? 0;
  const frame = nodes.get(id)!.callFrame;
  const file = frame.url.replace(/^file:\/\//, "");
  const name = `${frame.functionName || "(anonymous)"} ${file === "" ? "" : `${shortPath(file)}:${frame.lineNumber + 1}`}`.trim();
  byFunction.set(name, (byFunction.get(name) ?? 0) + us);
  byPlace.set(placeOf(frame.functionName, file), (byPlace.get(placeOf(frame.functionName, file)) ?? 0) + us);
  if (file === "" || file.startsWith("node:")) {
    const callers = owners.get(name) ?? new Map<string, number>();
    owners.set(name, callers);
    callers.set(ownerOf(id), (callers.get(ownerOf(id)) ?? 0) + us);
  }
  total += us;
});

function shortPath(file: string): string {
  const modules = file.lastIndexOf("node_modules/");
  if (modules >= 0) return file.slice(modules + "node_modules/".length);
  const src = file.indexOf("/src/");
  return src >= 0 ? file.slice(src + 1) : file;
}

function placeOf(functionName: string, file: string): string {
  if (file === "") return functionName.startsWith("(") ? functionName : "(native)";
  if (file.startsWith("node:")) return "node internals";
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file);
  if (modules !== null) return modules[1]!;
  const src = /\/src\/((?:server\/)?[^/]+)/.exec(file);
  return src === null ? shortPath(file) : `src/${src[1]}`;
}

const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)} %`;
const top = Number(values.top);
console.log(`${positionals[0]}: ${(total / 1e6).toFixed(2)} s sampled\n\nself time by place:`);
for (const [place, us] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`${pct(us)}  ${place}`);
console.log(`\nself time by function (top ${top}):`);
for (const [name, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  const callers = [...(owners.get(name) ?? [])].filter(([, t]) => t >= us * 0.05).sort((a, b) => b[1] - a[1]);
  const from = callers.length === 0 || name.startsWith("(") ? "" : `  ← ${callers.map(([c, t]) => `${c} ${pct(t).trim()}`).join(", ")}`;
  console.log(`${pct(us)}  ${name}${from}`);
}
