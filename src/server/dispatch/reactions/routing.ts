import type { Attempt } from "../../../gen/runnerline/v1/attempt_pb.js";
import type { Rollout } from "../../../gen/runnerline/v1/rollout_pb.js";
import { isCordoned } from "../../domain/cordon.js";
import { type Labels, labelsMatch } from "../../domain/labels.js";
import { dispatchableAt } from "../../domain/rollout.js";
import { type Millis, msOf } from "../../domain/time.js";
import type { WorkerRecord } from "../../domain/worker.js";
import { DispatchQueue, type QueueEntry, type QueueShare } from "./dispatch-queue.js";
import type { SessionRegistry } from "../sessions/registry.js";
import type { Watchdog } from "../timers/watchdog.js";

/** The workers that ran a rollout never dispatched. */
const NOBODY: ReadonlySet<string> = new Set();

/** Servers contend for the queue while another one's claims were heard this recently (ms). */
const CONTENDED_MS = 250;
/**
 * While they contend, a pick looks for its own share through at least this
 * many entries per server: about what the others take while its claim is on
 * its way (a pass of more picks reaches further).
 */
const MIN_PASS = 64;

/**
 * Which queued rollout may go to which worker, as this server knows it: the
 * index of the queue (lanes per priority and label set, in the store's order),
 * rollouts waiting out a retry delay, the workers each retry should keep away
 * from, quarantines, and the sessions other servers hold. The store stays the
 * truth; this is what makes picking cheap.
 */
export class Routing {
  private readonly queue = new DispatchQueue();
  /** Queued rollouts waiting out their retry_delay, released by a "release" timer. */
  private readonly delayed = new Map<string, QueueEntry>();
  /** Per unfinished rollout that may be retried, the workers that ran its attempts. */
  private readonly ranOn = new Map<string, Set<string>>();
  /** When each worker that carries a quarantine has it lifted (ms). */
  private readonly quarantineEnds = new Map<string, Millis>();
  /** Workers an operator cordoned (domain/cordon.ts). */
  private readonly cordoned = new Set<string>();
  /** Sessions other servers sharing the store hold (worker → labels), for retry-elsewhere. */
  private remoteSessions = new Map<string, Labels>();
  /** Until when servers sharing the store contend for the queue (othersClaimed). */
  private contendedUntil = -Infinity;

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly watchdog: Watchdog,
    private readonly retryElsewhereMs: number,
    /** A connected worker that asked for work this recently will have a free slot soon (retry-elsewhere). */
    private readonly freeSoonMs: number,
    /**
     * Servers sharing the store learn each other's enqueues out of order: each
     * entry then takes its place by when it entered the queue (clocks in sync).
     */
    private readonly orderByTime: boolean,
  ) {}

  /** Rollouts that may be dispatched now. */
  get size() {
    return this.queue.size;
  }

  /** Whether the rollout is indexed (ready or delayed). */
  has(rolloutId: string) {
    return this.queue.has(rolloutId) || this.delayed.has(rolloutId);
  }

  /** Every indexed rollout id (ready and delayed). */
  indexedIds(): string[] {
    const ids = [...this.delayed.keys()];
    for (const lane of this.queue.lanes()) ids.push(...lane.rolloutIds);
    return ids;
  }

  /** A rollout entered the queue: ready at once, or after its retry_delay. */
  add(rollout: Rollout, latest: Attempt | undefined, now: Millis) {
    const ranOn = rollout.attemptCount > 0 ? (this.ranOn.get(rollout.rolloutId) ?? NOBODY) : NOBODY;
    const lastEnd = latest === undefined ? undefined : (msOf(latest.endTime) ?? now);
    const readyAt = dispatchableAt(rollout);
    const delayed = readyAt !== undefined && readyAt > now;
    // A retry joins the back when its attempt ended (or, delayed, when it is released); a new rollout when created.
    const enteredAt = delayed ? readyAt : rollout.attemptCount > 0 ? (lastEnd ?? now) : (msOf(rollout.createTime) ?? now);
    const entry: QueueEntry = {
      rolloutId: rollout.rolloutId,
      priority: rollout.priority,
      requiredLabels: rollout.config?.requiredLabels ?? {},
      ranOn,
      avoidUntil: Math.max(readyAt ?? -Infinity, lastEnd ?? now) + this.retryElsewhereMs,
      ...(this.orderByTime && { enqueuedAt: enteredAt }),
    };
    if (delayed) {
      this.delayed.set(rollout.rolloutId, entry);
      this.watchdog.schedule("release", rollout.rolloutId, readyAt);
    } else {
      this.queue.add(entry);
    }
    if (ranOn.size > 0) this.watchdog.schedule("pump", rollout.rolloutId, entry.avoidUntil);
  }

  /** A delayed rollout's retry_delay passed: it joins the back of the queue. Returns whether it was delayed. */
  release(rolloutId: string): boolean {
    const entry = this.delayed.get(rolloutId);
    if (entry === undefined) return false;
    this.delayed.delete(rolloutId);
    this.queue.add(entry);
    return true;
  }

  /** It left the queue (dispatched, cancelled, expired). */
  remove(rolloutId: string) {
    this.queue.remove(rolloutId);
    this.delayed.delete(rolloutId);
    this.watchdog.cancel("release", rolloutId);
    this.watchdog.cancel("pump", rolloutId);
  }

  /** A pick is being claimed: out of the index now, so no concurrent pick takes it too. */
  take(entry: QueueEntry) {
    this.queue.remove(entry.rolloutId);
  }

  /** Picks a claim could not use go back (at the back of their lanes). */
  putBack(entries: readonly QueueEntry[]) {
    for (const entry of entries) this.queue.add(entry);
  }

  /** This server's share of a queue several servers take from (DispatchQueue, QueueShare). */
  setShare(share: QueueShare) {
    this.queue.setShare(share);
  }

  /** Another server sharing the store took rollouts from the queue (its `dequeued` event): the servers contend. */
  othersClaimed(now: Millis) {
    this.contendedUntil = now + CONTENDED_MS;
  }

  /**
   * The queued rollout `workerId` should get now, if any (it stays queued
   * until taken); `picksBefore`: the picks its pump pass made before. While
   * other servers claim too, a pick looks first within this server's share
   * of the queue, as far as the servers would together take in a pass
   * (QueueShare); otherwise it takes the oldest, in exact FIFO order.
   */
  pickFor(workerId: string, labels: Labels, now: Millis, picksBefore = 0): QueueEntry | undefined {
    if (this.queue.size === 0 || !this.mayTakeWork(workerId, now)) return undefined;
    const reachPerServer = now < this.contendedUntil ? Math.max(MIN_PASS, picksBefore + 1) : 0;
    return this.queue.pick(
      {
        workerId,
        labels,
        mayRetake: (entry) => now >= entry.avoidUntil || !this.anotherCouldTake(entry, workerId, now),
      },
      reachPerServer,
    );
  }

  // ---- where rollouts ran ----------------------------------------------------

  /** An attempt of a rollout that may be retried went to `workerId`. */
  ran(rolloutId: string, workerId: string) {
    let ranOn = this.ranOn.get(rolloutId);
    if (ranOn === undefined) this.ranOn.set(rolloutId, (ranOn = new Set()));
    ranOn.add(workerId);
  }

  /** The workers that ran a rollout's attempts, as read from the store (at start, or learned from another server). */
  setRanOn(rolloutId: string, workerIds: Iterable<string>) {
    this.ranOn.set(rolloutId, new Set(workerIds));
  }

  /** The rollout finished: no retry will need to know. */
  finished(rolloutId: string) {
    this.ranOn.delete(rolloutId);
  }

  // ---- quarantine --------------------------------------------------------------

  /** The worker's quarantine and cordon, as `record` has them. */
  track(record: WorkerRecord) {
    const until = msOf(record.worker.quarantineUntil);
    if (until === undefined) this.quarantineEnds.delete(record.worker.workerId);
    else this.quarantineEnds.set(record.worker.workerId, until);
    if (isCordoned(record.worker)) this.cordoned.add(record.worker.workerId);
    else this.cordoned.delete(record.worker.workerId);
  }

  /** The one routability predicate: neither quarantined nor cordoned. */
  mayTakeWork(workerId: string, now: Millis): boolean {
    return !this.isQuarantined(workerId, now) && !this.cordoned.has(workerId);
  }

  isQuarantined(workerId: string, now: Millis) {
    return (this.quarantineEnds.get(workerId) ?? -Infinity) > now;
  }

  /** Whether the worker carries a quarantine (now or ended, until a success or a release clears it). */
  knowsQuarantine(workerId: string) {
    return this.quarantineEnds.has(workerId);
  }

  /** Workers quarantined now: only those ever quarantined are looked at. */
  quarantinedCount(now: Millis): number {
    let count = 0;
    for (const [workerId, until] of this.quarantineEnds) {
      if (until > now) count++;
      else this.quarantineEnds.delete(workerId);
    }
    return count;
  }

  /** Connected workers (here or on other servers) quarantined now. */
  quarantinedConnected(now: Millis): number {
    let count = 0;
    for (const [workerId, until] of this.quarantineEnds) {
      if (until > now && (this.sessions.get(workerId) !== undefined || this.remoteSessions.has(workerId))) count++;
    }
    return count;
  }

  /** Workers holding a session now, on this server or another sharing the store. */
  connectedCount(): number {
    let count = this.sessions.size;
    for (const workerId of this.remoteSessions.keys()) if (this.sessions.get(workerId) === undefined) count++;
    return count;
  }

  // ---- sessions elsewhere --------------------------------------------------------

  /** Every session other servers hold, as the store has them. */
  setRemoteSessions(sessions: Map<string, Labels>) {
    this.remoteSessions = sessions;
  }

  addRemoteSession(workerId: string, labels: Labels) {
    this.remoteSessions.set(workerId, labels);
  }

  /** Whether another server holds a session of this worker (as last learned from the store or its events). */
  hasRemoteSession(workerId: string): boolean {
    return this.remoteSessions.has(workerId);
  }

  // ---- routability -------------------------------------------------------------

  /** Indexed rollouts that no session of this server can take: none carries their required labels. */
  unroutableIds(): string[] {
    const ids: string[] = [];
    const routable = this.sessions.routableLabelSets();
    for (const lane of this.queue.lanes()) if (!routable(lane.labels)) ids.push(...lane.rolloutIds);
    for (const entry of this.delayed.values()) if (!routable(entry.requiredLabels)) ids.push(entry.rolloutId);
    return ids;
  }

  /** How many indexed rollouts no session of this server can take (see unroutableIds). */
  unroutableCount(): number {
    let count = 0;
    const routable = this.sessions.routableLabelSets();
    for (const lane of this.queue.lanes()) if (!routable(lane.labels)) count += lane.size;
    for (const entry of this.delayed.values()) if (!routable(entry.requiredLabels)) count += 1;
    return count;
  }

  /**
   * Whether a worker other than `workerId`, new to the rollout, could take it
   * now: connected, carrying its labels, allowed work (mayTakeWork), and with
   * a free slot soon — it waits for work now, or asked for some within
   * freeSoonMs (a runner busy with long attempts is no reason to hold a
   * retry back). Sessions on other servers count when they carry the labels:
   * their slots are not known here.
   */
  private anotherCouldTake(entry: QueueEntry, workerId: string, now: Millis): boolean {
    for (const session of this.sessions.values()) {
      const other = session.link.workerId;
      if (other === workerId || session.link.leaving || entry.ranOn.has(other)) continue;
      if (!labelsMatch(entry.requiredLabels, session.labels)) continue;
      if (!this.mayTakeWork(other, now)) continue;
      if (session.link.credits <= 0) {
        const soonUntil = (session.askedAt ?? -Infinity) + this.freeSoonMs;
        if (now > soonUntil) continue;
        // When it stops counting as free soon, the retry may go back: look again then.
        this.watchdog.pumpNoLaterThan(`soon:${other}`, soonUntil + 1);
      }
      return true;
    }
    for (const [other, labels] of this.remoteSessions) {
      if (other === workerId || entry.ranOn.has(other) || this.sessions.get(other) !== undefined) continue;
      if (labelsMatch(entry.requiredLabels, labels) && this.mayTakeWork(other, now)) return true;
    }
    return false;
  }
}
