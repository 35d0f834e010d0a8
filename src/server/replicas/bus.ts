/**
 * What servers sharing one store tell each other (docs/scaleout.md). Each
 * server acts on its own runner streams and waiters; the store holds the
 * truth, so an event only says where to look again, never what to believe:
 * a lost event costs a delay until the next resync, not a wrong state.
 */
export type ReplicaEvent =
  /** Rollouts entered the queue (enqueued, retried, released): servers with waiting runners may claim them. */
  | { kind: "queued"; ids: string[] }
  /**
   * Rollouts left the queue (claimed, cancelled, expired) on the sender: other
   * servers drop them from their queue index, instead of spending a claim on
   * each to find it gone (a slower server that did so could fall ever further
   * behind the queue's head and starve).
   */
  | { kind: "dequeued"; ids: string[] }
  /** Rollouts reached a terminal status: wake whoever waits for them. */
  | { kind: "finished"; ids: string[] }
  /** Attempts the server ended (cancelled, timed out) whose runner may still run them: tell the runner to stop. */
  | { kind: "stop"; ids: string[] }
  /** Workers whose status or assignment changed: tell watchers. */
  | { kind: "workers"; ids: string[] }
  /** A worker's session opened with this epoch: an older stream of it, wherever it is, must close. */
  | { kind: "session"; ids: string[]; epoch: number };

export interface ReplicaBus {
  /** This server's id among the replicas. */
  readonly replicaId: string;
  /** Sends an event to every other server (coalesced with others of its kind; never to this one). */
  publish(event: ReplicaEvent): void;
  /** Called with every event another server published. */
  subscribe(handler: (event: ReplicaEvent) => void): void;
  /** Called after the bus reconnected: events sent meanwhile are lost, so look at the store again. */
  onResync(handler: () => void): void;
  close(): Promise<void>;
}
