import { type Labels, labelSetKey, labelsMatch } from "../../domain/labels.js";

/** A rollout that may be dispatched now, as the dispatch queue keeps it. */
export interface QueueEntry {
  readonly rolloutId: string;
  readonly priority: number;
  readonly requiredLabels: Labels;
  /** Workers that already ran an attempt of it: they get it only when no other worker could (see pick). */
  readonly ranOn: ReadonlySet<string>;
  /** After this time the workers in ranOn may take it again even when others could. */
  readonly avoidUntil: number;
  /**
   * When it (re)entered the queue, where servers share the store: entries
   * learned from other servers arrive out of order, and this puts each in its
   * place. Unset, an entry goes to the back of its lane (one server's order).
   */
  readonly enqueuedAt?: number;
}

/** An entry in its lane; removal only marks it, and the lane skips it (lazy deletion, O(1) removal). */
interface Slot {
  readonly entry: QueueEntry;
  readonly seq: number;
  removed: boolean;
  /** hashOf(rolloutId), worked out the first time a shared queue looks at it (-1 until then). */
  hash: number;
}

/**
 * Servers sharing a store each index the whole queue; left alone, they all
 * pick its oldest entries at once, and all but one lose each claim and pick
 * again (in the three-replica bench, more than half of all picks). Each
 * prefers its own share instead — the rollouts whose id hashes to its rank
 * among the live servers — looking through at most `reach` takeable entries
 * outside it for one inside it before taking the oldest. The reach is the
 * caller's (Routing): none while no other server is claiming, so that order
 * is exact FIFO when it can be; a bounded one while others claim too. An
 * entry is then overtaken only by entries within that reach.
 */
export interface QueueShare {
  /** This server's rank among the live servers (0-based). */
  readonly index: number;
  /** How many servers share the queue; 1: no preference (exact FIFO). */
  readonly count: number;
}

/** The most entries outside its share one pick looks through (a pass of thousands of picks stays linear). */
export const MAX_SHARE_REACH = 4096;

/** FNV-1a over the id's UTF-16 code units: the same share for the same id on every server. */
export function hashOf(rolloutId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < rolloutId.length; i++) hash = Math.imul(hash ^ rolloutId.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

/** Which server's share a rollout is in, among `count`. */
export function shareOf(rolloutId: string, count: number): number {
  return hashOf(rolloutId) % count;
}

/**
 * FIFO of entries that share a priority and a label set: an array read from
 * `head`, so taking from the front never rescans what was taken before.
 */
class Lane {
  private slots: Slot[] = [];
  private head = 0;
  size = 0;

  constructor(readonly labels: Labels) {}

  /** At the back, or — for an entry older than the back — in its place (binary search, then a splice). */
  push(slot: Slot) {
    const slots = this.slots;
    if (slots.length === this.head || slots[slots.length - 1]!.seq <= slot.seq) {
      slots.push(slot);
    } else {
      let low = this.head;
      let high = slots.length;
      while (low < high) {
        const middle = (low + high) >> 1;
        if (slots[middle]!.seq <= slot.seq) low = middle + 1;
        else high = middle;
      }
      slots.splice(low, 0, slot);
    }
    this.size += 1;
  }

  remove(slot: Slot) {
    slot.removed = true;
    this.size -= 1;
    while (this.head < this.slots.length && this.slots[this.head]!.removed) this.head += 1;
    if (this.head > 1024 && this.head * 2 > this.slots.length) {
      this.slots = this.slots.slice(this.head);
      this.head = 0;
    }
  }

  /** Live slots, oldest first. */
  *live(): Iterable<Slot> {
    for (let i = this.head; i < this.slots.length; i++) {
      const slot = this.slots[i]!;
      if (!slot.removed) yield slot;
    }
  }

  /**
   * The oldest live slot for which `accept` holds; stops early once past
   * `before`. With a share of several servers and a reach, the oldest such
   * slot in the share, if one comes before `reach` accepted slots outside it
   * (else the oldest).
   */
  first(accept: (entry: QueueEntry) => boolean, before: number, share: QueueShare, reach: number): Slot | undefined {
    if (share.count > 1 && reach > 0) return this.firstOfShare(accept, before, share, reach);
    for (let i = this.head; i < this.slots.length; i++) {
      const slot = this.slots[i]!;
      if (slot.seq > before) return undefined;
      if (!slot.removed && accept(slot.entry)) return slot;
    }
    return undefined;
  }

  private firstOfShare(accept: (entry: QueueEntry) => boolean, before: number, share: QueueShare, reach: number): Slot | undefined {
    let oldest: Slot | undefined;
    let seen = 0;
    for (let i = this.head; i < this.slots.length && seen < reach; i++) {
      const slot = this.slots[i]!;
      if (slot.seq > before) break;
      if (slot.removed || !accept(slot.entry)) continue;
      if (slot.hash < 0) slot.hash = hashOf(slot.entry.rolloutId);
      if (slot.hash % share.count === share.index) return slot;
      oldest ??= slot;
      seen += 1;
    }
    return oldest;
  }
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
 * wins, so order is FIFO within what a runner may take (on servers sharing
 * a store and claiming at once, first within this server's share:
 * QueueShare).
 */
export class DispatchQueue {
  /** Priorities, highest first, each with its lanes by label-set key. */
  private readonly priorities: { priority: number; lanes: Map<string, Lane> }[] = [];
  private readonly slotOf = new Map<string, { lane: Lane; slot: Slot }>();
  private nextSeq = 0;
  /** Places within one millisecond for entries that carry enqueuedAt: 4,096 of them fit a double's precision. */
  private withinMs = 0;
  private share: QueueShare = { index: 0, count: 1 };

  get size() {
    return this.slotOf.size;
  }

  has(rolloutId: string) {
    return this.slotOf.has(rolloutId);
  }

  /** Appends at the back of its lane (moving it there if present). */
  add(entry: QueueEntry) {
    this.remove(entry.rolloutId);
    const lanes = this.lanesFor(entry.priority);
    const key = labelSetKey(entry.requiredLabels);
    let lane = lanes.get(key);
    if (lane === undefined) lanes.set(key, (lane = new Lane(entry.requiredLabels)));
    const seq = entry.enqueuedAt === undefined ? this.nextSeq++ : entry.enqueuedAt + (this.withinMs++ & 4095) / 4096;
    const slot: Slot = { entry, seq, removed: false, hash: -1 };
    lane.push(slot);
    this.slotOf.set(entry.rolloutId, { lane, slot });
  }

  remove(rolloutId: string): boolean {
    const found = this.slotOf.get(rolloutId);
    if (found === undefined) return false;
    this.slotOf.delete(rolloutId);
    found.lane.remove(found.slot);
    if (found.lane.size === 0) this.dropLane(found.lane);
    return true;
  }

  /** This server's share of a queue several servers take from (QueueShare); {0, 1} alone. */
  setShare(share: QueueShare) {
    if (!Number.isInteger(share.count) || share.count < 1 || !Number.isInteger(share.index) || share.index < 0 || share.index >= share.count) {
      throw new Error(`invalid queue share ${share.index} of ${share.count}`);
    }
    this.share = share;
  }

  /**
   * The entry `taker` should get next (left in the queue), or undefined;
   * `reachPerServer` × the servers sharing the queue: how many entries outside
   * this server's share it may look through for one inside it (QueueShare; 0:
   * the oldest, whatever its share).
   */
  pick(taker: Taker, reachPerServer = 0): QueueEntry | undefined {
    const accept = (entry: QueueEntry) => !entry.ranOn.has(taker.workerId) || taker.mayRetake(entry);
    const share = this.share;
    const reach = share.count > 1 ? Math.min(MAX_SHARE_REACH, reachPerServer * share.count) : 0;
    for (const { lanes } of this.priorities) {
      let best: Slot | undefined;
      // Whether best is in this server's share (or none is sought): one in the share beats an older one outside it.
      let bestOwn = false;
      for (const lane of lanes.values()) {
        if (!labelsMatch(lane.labels, taker.labels)) continue;
        const found = lane.first(accept, bestOwn ? best!.seq : Infinity, share, reach);
        if (found === undefined) continue;
        const own = reach === 0 || found.hash % share.count === share.index;
        if (best === undefined || (own && !bestOwn) || (own === bestOwn && found.seq < best.seq)) {
          best = found;
          bestOwn = own;
        }
      }
      if (best !== undefined) return best.entry;
    }
    return undefined;
  }

  /** Every lane's required labels with its entries, for questions about routability. */
  *lanes(): Iterable<{ labels: Labels; rolloutIds: Iterable<string>; size: number }> {
    for (const { lanes } of this.priorities) {
      for (const lane of lanes.values()) {
        yield { labels: lane.labels, rolloutIds: Array.from(lane.live(), (slot) => slot.entry.rolloutId), size: lane.size };
      }
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
