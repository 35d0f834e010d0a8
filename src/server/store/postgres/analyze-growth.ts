/**
 * ANALYZE while the tables are young. A fresh database's tables have no
 * statistics until autovacuum first analyzes them, about a minute after they
 * change (autovacuum_naptime), and each pooled connection keeps the plans of
 * its prepared statements from when it made them: a turn's locking read,
 * planned while `attempts` was empty, would scan the whole table on every turn
 * until then. So the server analyzes a table itself each time the rows it
 * has added to it double (from FIRST rows), which invalidates those plans; beyond
 * LAST rows autovacuum's own thresholds (10 % changed) keep them current.
 * ANALYZE takes no lock that writers wait for.
 */
const FIRST = 256;
const LAST = 1 << 20;

export class GrowthAnalyzer {
  private written = 0;
  private next = FIRST;
  private running = false;

  constructor(private readonly analyze: () => Promise<unknown>) {}

  /** `rows` new rows were added to the table. */
  wrote(rows: number) {
    this.written += rows;
    if (this.running || this.written < this.next || this.next > LAST) return;
    this.running = true;
    this.next = this.written * 2;
    this.analyze()
      // Statistics are an optimisation: a failure (the database away) leaves the next doubling to try again.
      .catch(() => undefined)
      .finally(() => {
        this.running = false;
      });
  }
}
