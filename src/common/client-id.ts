/**
 * Client-chosen ids (worker ids, rollout idempotency keys) must look like
 * this. Shared so runners refuse a bad worker id before dialling, with the
 * server's own rule.
 */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

export const CLIENT_ID_RULE = "1-128 characters of letters, digits, '.', '_', ':' and '-'";
