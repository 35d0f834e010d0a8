import type { Worker } from "../../../gen/runnerline/v1/worker_pb.js";
import { type Labels, labelSetKey, labelsMatch } from "../../domain/labels.js";
import type { SessionLink } from "../session-link.js";

/** What this process knows of one live runner session. */
export interface LiveSession {
  readonly link: SessionLink;
  readonly labels: Labels;
  /** The fence of every write made for it (WorkerRecord.epoch after its Hello). */
  readonly epoch: number;
  /** The worker as last stored (its held attempts, its connect and heartbeat times). */
  worker: Worker;
  /** When it last asked for work (Ready, or a credit returned with a report), by this process's clock. */
  askedAt?: number;
}

/**
 * The runner sessions this process holds, and their credits: which sessions
 * wait for work, served round-robin so that waiting runners are treated
 * fairly. Only this process's streams live here; everything else is in the store.
 */
export class SessionRegistry {
  private readonly byWorker = new Map<string, LiveSession>();
  /** Sessions with credits, in the order they are served. */
  private waiting: SessionLink[] = [];

  /** Sessions held now. */
  get size(): number {
    return this.byWorker.size;
  }

  values(): IterableIterator<LiveSession> {
    return this.byWorker.values();
  }

  get(workerId: string): LiveSession | undefined {
    return this.byWorker.get(workerId);
  }

  /** The session now holding `link`'s worker, if it is `link`'s (a newer session replaces it). */
  liveOf(link: SessionLink): LiveSession | undefined {
    const session = this.byWorker.get(link.workerId);
    return session?.link === link ? session : undefined;
  }

  isLive(link: SessionLink): boolean {
    return this.byWorker.get(link.workerId)?.link === link;
  }

  /** Adds a session; returns the one of the same worker it replaces, if any. */
  attach(session: LiveSession): LiveSession | undefined {
    const previous = this.byWorker.get(session.link.workerId);
    if (previous !== undefined) this.detach(previous.link);
    this.byWorker.set(session.link.workerId, session);
    return previous;
  }

  detach(link: SessionLink) {
    if (!this.isLive(link)) return;
    this.byWorker.delete(link.workerId);
    link.credits = 0;
    this.waiting = this.waiting.filter((waiting) => waiting !== link);
  }

  /** Ready: adds credits (asked for at `now`); a session that had none joins the back of the waiting line. */
  grant(link: SessionLink, slots: number, now: number) {
    const session = this.liveOf(link);
    if (session !== undefined) session.askedAt = now;
    const wasWaiting = link.credits > 0;
    link.credits += slots;
    if (!wasWaiting) this.waiting.push(link);
  }

  /**
   * Credits a claim could not use (its picks were taken elsewhere, or the
   * claim failed) go back to the session, which waits again if it stopped.
   */
  refund(link: SessionLink, slots: number) {
    if (slots <= 0 || !this.isLive(link) || link.leaving) return;
    link.credits += slots;
    if (!this.waiting.includes(link)) this.waiting.push(link);
  }

  /** The workers with a session here. */
  workerIds(): string[] {
    return [...this.byWorker.keys()];
  }

  /** Whether some session could be served now. */
  get anyWaiting(): boolean {
    return this.waiting.length > 0;
  }

  /**
   * Serves waiting sessions round-robin, one credit each per round: `serve`
   * returns whether it gave the session something (then it spends a credit);
   * a served session goes behind those not served yet, and one that found
   * nothing keeps its place. Stops when `more()` says there is nothing left.
   */
  serveRoundRobin(serve: (session: LiveSession) => boolean, more: () => boolean) {
    let stuck: SessionLink[] | undefined;
    let round = this.waiting;
    for (;;) {
      let served: SessionLink[] | undefined;
      let i = 0;
      for (; i < round.length && more(); i++) {
        const link = round[i]!;
        const session = this.liveOf(link);
        if (session === undefined || link.leaving || link.credits <= 0) continue;
        if (!serve(session)) {
          (stuck ??= []).push(link);
          continue;
        }
        link.credits -= 1;
        if (link.credits > 0) (served ??= []).push(link);
      }
      if (i < round.length || served === undefined || !more()) {
        const rest = round.slice(i);
        this.waiting = stuck === undefined && served === undefined ? rest : [...(stuck ?? []), ...rest, ...(served ?? [])];
        return;
      }
      round = served;
    }
  }

  /** Whether some live session, not leaving, carries each label set asked about (memoized per set). */
  routableLabelSets(): (labels: Labels) => boolean {
    const known = new Map<string, boolean>();
    return (labels) => {
      const key = labelSetKey(labels);
      let answer = known.get(key);
      if (answer === undefined) {
        answer = false;
        for (const session of this.byWorker.values()) {
          if (!session.link.leaving && labelsMatch(labels, session.labels)) {
            answer = true;
            break;
          }
        }
        known.set(key, answer);
      }
      return answer;
    };
  }
}
