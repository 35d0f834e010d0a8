import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { type Attempt, AttemptSchema, AttemptStatus } from "../src/gen/runnerline/v1/attempt_pb.js";
import {
  type Rollout,
  RolloutConfigSchema,
  RolloutSchema,
  RolloutStatus,
} from "../src/gen/runnerline/v1/rollout_pb.js";
import { toTimestamp } from "../src/server/domain/time.js";

export const T0 = Date.UTC(2026, 0, 1);

export function rolloutFixture(
  fields: Partial<Rollout> = {},
  config: { maxAttempts?: number; retryOn?: AttemptStatus[]; timeoutMs?: number; unresponsiveMs?: number } = {},
): Rollout {
  const base = create(RolloutSchema, {
    rolloutId: "ro-1",
    status: RolloutStatus.RUNNING,
    createTime: toTimestamp(T0),
    attemptCount: 1,
    latestAttemptId: "at-1",
    version: 1n,
    config: create(RolloutConfigSchema, {
      maxAttempts: config.maxAttempts ?? 1,
      retryOn: config.retryOn ?? [],
      timeout: config.timeoutMs === undefined ? undefined : durationFromMs(config.timeoutMs),
      unresponsiveTimeout: config.unresponsiveMs === undefined ? undefined : durationFromMs(config.unresponsiveMs),
    }),
  });
  return { ...base, ...fields };
}

export function attemptFixture(fields: Partial<Attempt> = {}): Attempt {
  const base = create(AttemptSchema, {
    attemptId: "at-1",
    rolloutId: "ro-1",
    sequenceId: 1,
    workerId: "w-1",
    status: AttemptStatus.RUNNING,
    createTime: toTimestamp(T0),
    version: 1n,
  });
  return { ...base, ...fields };
}

/** Every value of a generated enum except UNSPECIFIED. */
export function enumValues<E extends number>(enumObject: Record<string, string | number>): E[] {
  return Object.values(enumObject).filter((v): v is E => typeof v === "number" && v !== 0);
}
