import pg from "pg";
import type { ReplicaBus, ReplicaEvent } from "./bus.js";

const CHANNEL = "runnerline_events";
/** NOTIFY payloads must stay under 8,000 bytes: ids go in chunks below that. */
const MAX_PAYLOAD = 7_000;
/** Events of a kind published within this window leave as one notification (NOTIFY takes a lock at commit). */
const COALESCE_MS = 2;

/** What goes over the wire: the sender, the kind, the ids (and a session's epoch). */
interface Wire {
  r: string;
  k: ReplicaEvent["kind"];
  i: string[];
  e?: number;
}

/**
 * The replica bus on PostgreSQL's LISTEN/NOTIFY: one dedicated connection per
 * server listens (and sends), outside any pool, as NOTIFY needs; events of a
 * kind are coalesced for a couple of milliseconds and sent as ids. When the
 * connection drops it reconnects with back-off and tells its subscribers to
 * resync, since notifications sent meanwhile are gone.
 */
export class PostgresBus implements ReplicaBus {
  private client: pg.Client | undefined;
  private readonly handlers: ((event: ReplicaEvent) => void)[] = [];
  private readonly resyncHandlers: (() => void)[] = [];
  private pending = new Map<string, { kind: ReplicaEvent["kind"]; ids: Set<string>; epoch?: number }>();
  private flushTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private backoffMs = 100;

  private constructor(
    private readonly url: string,
    readonly replicaId: string,
    private readonly log: (line: string) => void,
  ) {}

  static async open(url: string, replicaId: string, log: (line: string) => void): Promise<PostgresBus> {
    const bus = new PostgresBus(url, replicaId, log);
    await bus.connect();
    return bus;
  }

  publish(event: ReplicaEvent) {
    if (event.ids.length === 0) return;
    const key = event.kind === "session" ? `session:${event.epoch}` : event.kind;
    let batch = this.pending.get(key);
    if (batch === undefined) {
      batch = { kind: event.kind, ids: new Set(), ...(event.kind === "session" && { epoch: event.epoch }) };
      this.pending.set(key, batch);
    }
    for (const id of event.ids) batch.ids.add(id);
    this.flushTimer ??= setTimeout(() => this.flush(), COALESCE_MS);
  }

  subscribe(handler: (event: ReplicaEvent) => void) {
    this.handlers.push(handler);
  }

  onResync(handler: () => void) {
    this.resyncHandlers.push(handler);
  }

  async close() {
    this.closed = true;
    clearTimeout(this.flushTimer);
    await this.client?.end().catch(() => undefined);
  }

  private async connect() {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 5_000 });
    client.on("notification", (message) => this.receive(message.payload));
    client.on("error", () => this.reconnect(client));
    client.on("end", () => this.reconnect(client));
    await client.connect();
    await client.query(`LISTEN ${CHANNEL}`);
    this.client = client;
    this.backoffMs = 100;
  }

  private reconnect(lost: pg.Client) {
    if (this.closed || this.client !== lost) return;
    this.client = undefined;
    const retry = () => {
      if (this.closed) return;
      this.connect().then(
        () => {
          this.log("replica bus reconnected; resyncing from the store");
          for (const handler of this.resyncHandlers) handler();
        },
        () => {
          this.backoffMs = Math.min(5_000, this.backoffMs * 2);
          setTimeout(retry, this.backoffMs * (0.5 + Math.random()));
        },
      );
    };
    setTimeout(retry, this.backoffMs);
  }

  private flush() {
    this.flushTimer = undefined;
    const batches = this.pending;
    this.pending = new Map();
    const payloads: string[] = [];
    for (const { kind, ids, epoch } of batches.values()) {
      let chunk: string[] = [];
      let size = 0;
      const send = () => {
        if (chunk.length === 0) return;
        const wire: Wire = { r: this.replicaId, k: kind, i: chunk, ...(epoch !== undefined && { e: epoch }) };
        payloads.push(JSON.stringify(wire));
        chunk = [];
        size = 0;
      };
      for (const id of ids) {
        if (size + id.length + 3 > MAX_PAYLOAD) send();
        chunk.push(id);
        size += id.length + 3;
      }
      send();
    }
    const client = this.client;
    // Lost while disconnected: the others resync from the store on their own schedule.
    if (client === undefined || payloads.length === 0) return;
    client.query(`SELECT pg_notify('${CHANNEL}', payload) FROM unnest($1::text[]) AS payload`, [payloads]).catch(() => undefined);
  }

  private receive(payload: string | undefined) {
    if (payload === undefined) return;
    let wire: Wire;
    try {
      wire = JSON.parse(payload) as Wire;
    } catch {
      return;
    }
    if (wire.r === this.replicaId) return;
    const event: ReplicaEvent =
      wire.k === "session" ? { kind: "session", ids: wire.i, epoch: wire.e ?? 0 } : { kind: wire.k, ids: wire.i };
    for (const handler of this.handlers) handler(event);
  }
}
