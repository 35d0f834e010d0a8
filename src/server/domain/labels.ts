/** Label keys a rollout may require: short, and safe to show and to use as a map key anywhere. */
export const LABEL_KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;
export const LABEL_VALUE_MAX_LENGTH = 256;

export type Labels = Readonly<Record<string, string>>;

/** Whether a worker carrying `labels` may take a rollout that requires `required`: every pair, exactly. */
export function labelsMatch(required: Labels, labels: Labels): boolean {
  for (const key in required) if (labels[key] !== required[key]) return false;
  return true;
}

/**
 * One string per distinct label set, the same whatever the order of the
 * pairs, so rollouts requiring the same labels share one queue.
 */
export function labelSetKey(labels: Labels): string {
  if (isEmpty(labels)) return "";
  const keys = Object.keys(labels);
  keys.sort();
  return JSON.stringify(keys.map((key) => [key, labels[key]]));
}

function isEmpty(labels: Labels): boolean {
  for (const _ in labels) return false;
  return true;
}

/** Why `labels` cannot be required (undefined when they can); `field` names them in the message. */
export function labelProblem(field: string, labels: Labels): string | undefined {
  for (const [key, value] of Object.entries(labels)) {
    if (!LABEL_KEY_PATTERN.test(key)) {
      return `${field} key ${JSON.stringify(key.slice(0, 80))} must be 1-63 letters, digits, '.', '_', '/' and '-', starting with a letter or digit`;
    }
    if (value.length > LABEL_VALUE_MAX_LENGTH) {
      return `${field}[${key}] is longer than ${LABEL_VALUE_MAX_LENGTH} characters`;
    }
  }
  return undefined;
}
