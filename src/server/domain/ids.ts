import { randomBytes } from "node:crypto";

export { CLIENT_ID_PATTERN } from "../../common/client-id.js";

/** Longest id of any kind; client-chosen ones and those this server makes are far shorter. */
export const MAX_ID_LENGTH = 128;

// Rollout and attempt ids sort by creation time, so a database inserts them
// at the right edge of its indexes (a few pages per commit) instead of
// scattering them (a page per row): 44 bits of milliseconds, then 20 bits
// that start at a random point each millisecond and count up. The stores
// still refuse a duplicate (several servers may share one), so ids never repeat.
export const newRolloutId = () => `ro-${timeOrdered64()}`;
export const newAttemptId = () => `at-${timeOrdered64()}`;
export const newSessionId = () => `se-${random64()}`;

let lastMs = -1;
let msHex = "";
let counter = 0;
function timeOrdered64(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    msHex = now.toString(16).padStart(11, "0").slice(-11);
    counter = Number.parseInt(random64().slice(0, 5), 16) >>> 1;
  } else {
    counter = (counter + 1) & 0xfffff;
  }
  return msHex + (counter | 0x100000).toString(16).slice(1);
}

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
