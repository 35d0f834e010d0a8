import { randomBytes } from "node:crypto";

/** Client-chosen ids (worker ids, rollout idempotency keys) must look like this. */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

// 64 random bits: collisions are not expected, and the store still refuses a
// duplicate, so ids never repeat, not even across restarts.
export const newRolloutId = () => `ro-${randomBytes(8).toString("hex")}`;
export const newAttemptId = () => `at-${randomBytes(8).toString("hex")}`;
export const newSessionId = () => `se-${randomBytes(8).toString("hex")}`;
