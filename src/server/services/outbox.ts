/**
 * An unbounded single-consumer queue that a streaming handler yields from:
 * producers push from anywhere (the coordinator pushing assignments, the
 * request loop answering heartbeats), the handler's generator drains it.
 */
export class Outbox<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private failure: unknown;

  push(item: T) {
    if (this.ended) return;
    this.items.push(item);
    this.wakeConsumer();
  }

  /** No more items: the consumer finishes after draining (or throws `failure`). */
  end(failure?: unknown) {
    if (this.ended) return;
    this.ended = true;
    this.failure = failure;
    this.wakeConsumer();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.failure !== undefined) throw this.failure;
      if (this.items.length > 0) {
        yield this.items.shift()!;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private wakeConsumer() {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
