/**
 * What full shapes (src/server/domain/full-shape.ts) save, in process: a
 * spread that only overwrites properties against one that adds a property
 * the source lacks, and the domain's dispatchRollout on a rollout as
 * protobuf-es makes it against a full-shaped one. docs/benchmarks.md ("Full
 * shapes") quotes these figures.
 *
 *   npx tsx bench/full-shapes.ts
 */
import { create } from "@bufbuild/protobuf";
import { AttemptSchema } from "../src/gen/runnerline/v1/attempt_pb.js";
import { type Rollout, RolloutSchema, RolloutStatus } from "../src/gen/runnerline/v1/rollout_pb.js";
import { fullShape } from "../src/server/domain/full-shape.js";
import { dispatchRollout } from "../src/server/domain/rollout.js";
import { toTimestamp } from "../src/server/domain/time.js";

const ROUNDS = 200_000;

/** Microseconds per call, best of three rounds after a warm-up. */
function timeUs(run: () => unknown): number {
  let best = Infinity;
  for (let round = 0; round < 4; round++) {
    const started = performance.now();
    for (let i = 0; i < ROUNDS; i++) run();
    if (round > 0) best = Math.min(best, ((performance.now() - started) * 1000) / ROUNDS);
  }
  return best;
}

const T0 = Date.UTC(2026, 0, 1);
// As protobuf-es makes it: the unset sub-messages (startTime among them) are not properties at all.
const sparse: Rollout = create(RolloutSchema, {
  rolloutId: "ro-1",
  status: RolloutStatus.QUEUING,
  input: { kind: { case: "stringValue", value: "2 + 2" } },
  createTime: toTimestamp(T0),
  version: 1n,
});
const shaped = fullShape(RolloutSchema, sparse);
const attempt = create(AttemptSchema, { attemptId: "at-1", rolloutId: "ro-1", sequenceId: 1 });
const later = toTimestamp(T0 + 1);

const rows: [string, number][] = [
  ["spread that overwrites (status)", timeUs(() => ({ ...sparse, status: RolloutStatus.PREPARING }))],
  ["spread that adds (startTime), protobuf-es rollout", timeUs(() => ({ ...sparse, startTime: later }))],
  ["spread that overwrites (startTime), full-shaped rollout", timeUs(() => ({ ...shaped, startTime: later }))],
  ["dispatchRollout, protobuf-es rollout", timeUs(() => dispatchRollout(sparse, attempt, T0 + 1))],
  ["dispatchRollout, full-shaped rollout", timeUs(() => dispatchRollout(shaped, attempt, T0 + 1))],
  ["fullShape itself", timeUs(() => fullShape(RolloutSchema, sparse))],
];
for (const [name, us] of rows) console.log(`${name.padEnd(58)} ${us.toFixed(3)} µs`);
