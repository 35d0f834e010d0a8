import { DomainError } from "../domain/errors.js";

/** Open runner session streams, in total and per client connection, each with a bound. */
export class SessionCount {
  private total = 0;
  private readonly perConnection = new Map<string, number>();

  constructor(private readonly bounds: { maxSessions: number; maxSessionsPerConnection: number }) {}

  /** Counts a new stream or throws RESOURCE_EXHAUSTED; the returned function uncounts it (once). */
  open(connection: string): () => void {
    const onConnection = this.perConnection.get(connection) ?? 0;
    if (this.total >= this.bounds.maxSessions) {
      throw new DomainError("resource_exhausted", `the server has ${this.total} open sessions, its bound; try again later`);
    }
    if (onConnection >= this.bounds.maxSessionsPerConnection) {
      throw new DomainError(
        "resource_exhausted",
        `this connection has ${onConnection} open sessions, the bound per connection; open another connection`,
      );
    }
    this.total++;
    this.perConnection.set(connection, onConnection + 1);
    let closed = false;
    return () => {
      if (closed) return;
      closed = true;
      this.total--;
      const left = (this.perConnection.get(connection) ?? 1) - 1;
      if (left === 0) this.perConnection.delete(connection);
      else this.perConnection.set(connection, left);
    };
  }
}
