import { randomBytes } from "node:crypto";

/** The longest id the server accepts anywhere (docs/limits.md). */
export const MAX_ID_LENGTH = 128;

/** Client-chosen ids (worker ids, rollout idempotency keys) must look like this. */
export const CLIENT_ID_PATTERN = new RegExp(`^[A-Za-z0-9._:-]{1,${MAX_ID_LENGTH}}$`);

// 64 random bits: collisions are not expected, and the store still refuses a
// duplicate, so ids never repeat, not even across restarts.
export const newRolloutId = () => `ro-${random64()}`;
export const newAttemptId = () => `at-${random64()}`;
export const newSessionId = () => `se-${random64()}`;

// One randomBytes call per 512 ids instead of one per id (it was ~4 % of the
// server's CPU when dispatching); the bits are the same CSPRNG's.
let pool = Buffer.alloc(0);
let offset = 0;
function random64(): string {
  if (offset + 8 > pool.length) {
    pool = randomBytes(4096);
    offset = 0;
  }
  offset += 8;
  return pool.toString("hex", offset - 8, offset);
}
