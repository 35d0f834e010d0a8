import { type Labels, labelSetKey, labelsMatch } from "../domain/labels.js";

/** A rollout that may be dispatched now, as the dispatch queue keeps it. */
export interface QueueEntry {
  readonly rolloutId: string;
  readonly priority: number;
  readonly requiredLabels: Labels;
  /** Workers that already ran an attempt of it: they get it only when no other worker could (see pick). */
  readonly ranOn: ReadonlySet<string>;
  /** After this time the workers in ranOn may take it again even when others could. */
  readonly avoidUntil: number;
}

/** FIFO of entries that share a priority and a label set; Map keeps insertion order. */
interface Lane {
  readonly labels: Labels;
  readonly entries: Map<string, { entry: QueueEntry; seq: number }>;
}

/** Who is asking, and how to decide about entries it already ran. */
export interface Taker {
  workerId: string;
  labels: Labels;
  /** For an entry `workerId` already ran: may it take it anyway (nobody else could, or the bound passed)? */
  mayRetake(entry: QueueEntry): boolean;
}

/**
 * The queued rollouts that may be dispatched now, in lanes per priority ×
 * required label set. Picking for a worker looks at the head of each lane
 * whose labels it carries, highest priority first: the cost grows with the
 * number of distinct label sets, never with the number of queued rollouts
 * (except for entries the worker itself already ran, which it skips).
 * Within a priority, the oldest entry among the lanes the worker may serve
 * wins, so order is FIFO within what a runner may take.
 */
export class DispatchQueue {
  /** Priorities, highest first, each with its lanes by label-set key. */
  private readonly priorities: { priority: number; lanes: Map<string, Lane> }[] = [];
  private readonly laneOf = new Map<string, Lane>();
  private nextSeq = 0;

  get size() {
    return this.laneOf.size;
  }

  has(rolloutId: string) {
    return this.laneOf.has(rolloutId);
  }

  /** Appends at the back of its lane (moving it there if present). */
  add(entry: QueueEntry) {
    this.remove(entry.rolloutId);
    const lanes = this.lanesFor(entry.priority);
    const key = labelSetKey(entry.requiredLabels);
    let lane = lanes.get(key);
    if (lane === undefined) lanes.set(key, (lane = { labels: entry.requiredLabels, entries: new Map() }));
    lane.entries.set(entry.rolloutId, { entry, seq: this.nextSeq++ });
    this.laneOf.set(entry.rolloutId, lane);
  }

  remove(rolloutId: string): boolean {
    const lane = this.laneOf.get(rolloutId);
    if (lane === undefined) return false;
    this.laneOf.delete(rolloutId);
    lane.entries.delete(rolloutId);
    if (lane.entries.size === 0) this.dropLane(lane);
    return true;
  }

  /** The entry `taker` should get next (left in the queue), or undefined. */
  pick(taker: Taker): QueueEntry | undefined {
    for (const { lanes } of this.priorities) {
      let best: { entry: QueueEntry; seq: number } | undefined;
      for (const lane of lanes.values()) {
        if (!labelsMatch(lane.labels, taker.labels)) continue;
        for (const item of lane.entries.values()) {
          if (best !== undefined && item.seq > best.seq) break;
          if (item.entry.ranOn.has(taker.workerId) && !taker.mayRetake(item.entry)) continue;
          best = item;
          break;
        }
      }
      if (best !== undefined) return best.entry;
    }
    return undefined;
  }

  /** Every lane's required labels with its entries, for questions about routability. */
  *lanes(): Iterable<{ labels: Labels; rolloutIds: Iterable<string>; size: number }> {
    for (const { lanes } of this.priorities) {
      for (const lane of lanes.values()) yield { labels: lane.labels, rolloutIds: lane.entries.keys(), size: lane.entries.size };
    }
  }

  private lanesFor(priority: number): Map<string, Lane> {
    let index = 0;
    while (index < this.priorities.length && this.priorities[index]!.priority > priority) index++;
    const found = this.priorities[index];
    if (found !== undefined && found.priority === priority) return found.lanes;
    const lanes = new Map<string, Lane>();
    this.priorities.splice(index, 0, { priority, lanes });
    return lanes;
  }

  private dropLane(lane: Lane) {
    for (let i = 0; i < this.priorities.length; i++) {
      const { lanes } = this.priorities[i]!;
      for (const [key, candidate] of lanes) {
        if (candidate !== lane) continue;
        lanes.delete(key);
        if (lanes.size === 0) this.priorities.splice(i, 1);
        return;
      }
    }
  }
}
