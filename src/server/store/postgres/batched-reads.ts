/**
 * Reads by id asked for in one turn of the event loop, answered by one
 * statement: the callers of `load` made while a turn runs (an enqueue of
 * 1,000 requests checks each idempotency key with its own read) are
 * collected, and a microtask later one `= ANY($1)` query serves them all.
 * Every caller still sees committed rows only, as a statement of its own
 * would have shown it.
 */
export class BatchedReads<T> {
  private waiting = new Map<string, { resolve: (row: T | undefined) => void; reject: (error: unknown) => void }[]>();
  private scheduled = false;

  /** `read` answers the rows that exist among `ids` (in any order); `idOf` says which id each is. */
  constructor(
    private readonly read: (ids: string[]) => Promise<T[]>,
    private readonly idOf: (row: T) => string,
    /** Ids per statement, so that one read never grows without bound. */
    private readonly chunk = 5_000,
  ) {}

  load(id: string): Promise<T | undefined> {
    return new Promise((resolve, reject) => {
      const callers = this.waiting.get(id);
      if (callers === undefined) this.waiting.set(id, [{ resolve, reject }]);
      else callers.push({ resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => this.flush());
      }
    });
  }

  private flush() {
    this.scheduled = false;
    const batch = this.waiting;
    this.waiting = new Map();
    const ids = [...batch.keys()];
    for (let start = 0; start < ids.length; start += this.chunk) {
      const part = ids.slice(start, start + this.chunk);
      this.read(part).then(
        (rows) => {
          const found = new Map(rows.map((row) => [this.idOf(row), row]));
          for (const id of part) for (const caller of batch.get(id)!) caller.resolve(found.get(id));
        },
        (error: unknown) => {
          for (const id of part) for (const caller of batch.get(id)!) caller.reject(error);
        },
      );
    }
  }
}
