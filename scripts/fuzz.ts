/**
 * `npm run fuzz -- [--cases N] [--seed S]`: the fuzz suite of test/fuzz for
 * as long as you like. Prints progress, the outcome counts, defects known to
 * be fixed on another branch, and every finding; exits 1 on a finding.
 */
import { parseArgs } from "node:util";
import { fuzz } from "../test/fuzz/harness.js";

const { values } = parseArgs({ options: { cases: { type: "string", default: "10000" }, seed: { type: "string" } } });
const cases = Number(values.cases);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const started = Date.now();
let reported = 0;
console.log(`fuzz: ${cases} cases, seed ${seed}`);
const report = await fuzz({
  cases,
  seed,
  onProgress: (r) => {
    console.log(`fuzz: ${r.cases} cases, ${r.findings.length} findings, ${Math.round((Date.now() - started) / 1000)} s, known defects ${JSON.stringify(Object.fromEntries(r.pending))}`);
    for (const finding of r.findings.slice(reported)) console.log(`  finding: ${finding.problem}\n    case: ${finding.case}`);
    reported = r.findings.length;
  },
});
console.log(`fuzz: done: ${report.cases} cases in ${Math.round((Date.now() - started) / 1000)} s`);
console.log(`outcomes (transport code: count): ${JSON.stringify(Object.fromEntries([...report.outcomes].sort()))}`);
console.log(`ms per kind: ${JSON.stringify(Object.fromEntries([...report.time].map(([k, v]) => [k, Math.round(v)])))}`);
console.log(`known defects met (test/fuzz/known-defects.ts): ${JSON.stringify(Object.fromEntries(report.pending))}`);
const distinct = new Map<string, { count: number; example: string }>();
for (const finding of report.findings) {
  const key = finding.problem.replace(/\b(ro|at|se)-[0-9a-f]{16}\b/g, "$1-…").slice(0, 200);
  const entry = distinct.get(key) ?? { count: 0, example: finding.case };
  entry.count++;
  distinct.set(key, entry);
}
for (const [problem, { count, example }] of distinct) console.log(`FINDING ×${count}: ${problem}\n  e.g. ${example}`);
process.exit(report.findings.length > 0 ? 1 : 0);
