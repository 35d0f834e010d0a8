import type { Store } from "../store/store.js";

/**
 * Answers a read only once everything it may have seen is committed, so no
 * client is shown a transition that a crash could still undo (writes of the
 * current turn are visible to reads before their group commit).
 */
export async function durable<T>(store: Store, answer: T): Promise<T> {
  await store.commit();
  return answer;
}
