import type { Worker } from "../../../gen/runnerline/v1/worker_pb.js";
import { type CordonRequest, cordonWorker, drainWorker, uncordonWorker } from "../../domain/cordon.js";
import { notFound } from "../../domain/errors.js";
import type { Millis } from "../../domain/time.js";
import type { WorkerRecord } from "../../domain/worker.js";
import type { Pump } from "../reactions/pump.js";
import { Effects } from "./effects.js";
import type { Turn } from "./turn.js";

/**
 * An operator's cordon (domain/cordon.ts) as turns: CordonWorker,
 * UncordonWorker, DrainWorker. Routing follows the stored worker (Turn.absorb
 * tracks it); a drained worker's runner is told by the turn that drains it.
 */
export class Cordons {
  constructor(
    private readonly turn: Turn,
    private readonly pump: Pump,
    private readonly log: (line: string) => void,
  ) {}

  /** CordonWorker: no new work until UncordonWorker; the attempts it holds go on. */
  cordonWorker(workerId: string, request: CordonRequest): Promise<Worker> {
    return this.changeCordon(workerId, (record, now) => cordonWorker(record, request, now), `cordoned${byWhom(request)}`);
  }

  /** UncordonWorker: it may take work again (at once, if it is waiting). */
  uncordonWorker(workerId: string): Promise<Worker> {
    return this.changeCordon(workerId, (record) => uncordonWorker(record), "uncordoned");
  }

  /** DrainWorker: cordoned, and its runner is told to finish what it holds and exit (see Turn.absorb and RunnerSessions.openSession). */
  drainWorker(workerId: string, request: CordonRequest): Promise<Worker> {
    return this.changeCordon(workerId, (record, now) => drainWorker(record, request, now), `drained${byWhom(request)}`);
  }

  private async changeCordon(workerId: string, step: (record: WorkerRecord, now: Millis) => WorkerRecord, what: string): Promise<Worker> {
    const now = this.turn.clock.now();
    const record = await this.turn.store.getWorker(workerId);
    if (record === undefined) throw notFound(`worker ${workerId} not found`);
    const fx = new Effects();
    const changes = await this.turn.store.changeWorker(workerId, undefined, (r) => step(r ?? record, now));
    this.turn.absorb(changes, now, fx);
    const after = changes.workers[0]?.after;
    if (after !== undefined) this.log(`worker ${workerId} ${what}`);
    await this.pump.pump(now, fx);
    await this.turn.settle(fx);
    return after?.worker ?? record.worker;
  }
}

function byWhom({ by, reason }: CordonRequest): string {
  return `${by === "" ? "" : ` by ${by}`}${reason === "" ? "" : `: ${reason}`}`;
}
