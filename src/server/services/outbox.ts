/**
 * An unbounded single-consumer queue that a streaming handler yields from:
 * producers push from anywhere (the coordinator pushing assignments, the
 * request loop answering heartbeats), the handler's generator drains it.
 */
export class Outbox<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private waiter: { resolve: (result: IteratorResult<T>) => void; reject: (reason: unknown) => void } | undefined;
  private ended = false;
  private failure: unknown;

  push(item: T) {
    if (this.ended) return;
    const waiter = this.waiter;
    if (waiter !== undefined) {
      // The consumer is parked: hand the item over without queueing it.
      this.waiter = undefined;
      waiter.resolve({ done: false, value: item });
      return;
    }
    this.items.push(item);
  }

  /** No more items: the consumer finishes after draining (or throws `failure`). */
  end(failure?: unknown) {
    if (this.ended) return;
    this.ended = true;
    this.failure = failure;
    const waiter = this.waiter;
    this.waiter = undefined;
    if (waiter === undefined) return;
    if (failure !== undefined) waiter.reject(failure);
    else waiter.resolve({ done: true, value: undefined });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  // Hand-rolled rather than an async generator: a queued item is returned
  // without the generator's extra promise turns.
  next(): Promise<IteratorResult<T>> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.items.length > 0) return Promise.resolve({ done: false, value: this.items.shift()! });
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  return(): Promise<IteratorResult<T>> {
    this.end();
    return Promise.resolve({ done: true, value: undefined });
  }
}
