// The training-loop API: enqueue rollouts and wait for their results with plain JSON in and out (rollout-json.ts),
// over the typed clients of clients.ts. Waiting is one WaitRollouts call per pending rollout (at most
// `maxConcurrentWaits` at a time), so each result comes back as soon as its rollout finishes.
import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { type RunnerlineClients, createRunnerlineClients } from "./clients.js";
import { type DurationInput, durationMs, toDuration } from "./duration.js";
import { enqueueRequest, type RolloutOutcome, type RolloutSpec, rolloutOutcome } from "./rollout-json.js";
import type { ClientSecurity } from "./security.js";

export interface RolloutClientOptions {
  /** The server's gRPC port, "HOST:PORT" or a URL ("https://…" for TLS). Default "127.0.0.1:50051". */
  address?: string;
  /** Bearer token and TLS files (docs/security.md); a CA or client certificate means TLS. */
  security?: ClientSecurity;
  /** Run around every call, e.g. to add headers or trace. */
  interceptors?: Interceptor[];
  /** Most WaitRollouts calls in flight at once while waiting (default 1000); further rollouts wait their turn. */
  maxConcurrentWaits?: number;
  /**
   * How long a server out of reach (UNAVAILABLE: restarting, unreachable; ABORTED: the connection reset) is retried, with back-off, before the error is thrown
   * (default "30s"). Retrying is safe: enqueues carry a rollout id, so a repeat returns the same rollout.
   */
  retryUnavailableFor?: DurationInput;
}

export interface WaitOptions {
  /** Give up after this long (RolloutWaitTimeoutError). Default: wait as long as it takes. */
  timeout?: DurationInput;
  /** Stops the wait (the iterator throws the signal's reason). */
  signal?: AbortSignal;
}

/** Enqueue options shared by every rollout of one call; a spec's own fields win. */
export type EnqueueDefaults = Omit<RolloutSpec, "input" | "rolloutId">;

/** Not every rollout finished within the wait's timeout; those that did were returned or yielded already. */
export class RolloutWaitTimeoutError extends Error {
  constructor(
    /** The rollouts still unfinished, in the order they were asked for. */
    readonly pendingRolloutIds: string[],
    readonly timeoutMs: number,
  ) {
    super(
      `${pendingRolloutIds.length} rollout(s) did not finish within ${timeoutMs} ms: ` +
        `${pendingRolloutIds.slice(0, 5).join(", ")}${pendingRolloutIds.length > 5 ? ", …" : ""}`,
    );
    this.name = "RolloutWaitTimeoutError";
  }
}

const DEFAULT_ADDRESS = "127.0.0.1:50051";
/** Codes of a server out of reach, as opposed to one that answered. */
const RETRIED: ReadonlySet<Code> = new Set([Code.Unavailable, Code.Aborted]);

/**
 * A training loop's view of the server:
 *
 *     const client = new RolloutClient();
 *     const ids = await client.enqueueMany(tasks.map((task) => ({ input: task })), { config: { timeout: "5m" } });
 *     for await (const rollout of client.wait(ids)) console.log(rollout.rolloutId, rollout.status, rollout.result);
 *
 * Server errors are ConnectErrors (code, rawMessage) as the server sent them; input the client can judge alone is
 * refused before anything is sent (InvalidDurationError, TypeError, RangeError).
 */
export class RolloutClient {
  readonly #clients: RunnerlineClients;
  readonly #maxConcurrentWaits: number;
  readonly #retryUnavailableMs: number;

  constructor(options: RolloutClientOptions = {}) {
    const security = options.security ?? {};
    const address = options.address ?? DEFAULT_ADDRESS;
    const tls = security.tlsCa !== undefined || security.tlsCert !== undefined;
    const baseUrl = address.includes("://") ? address : `${tls ? "https" : "http"}://${address}`;
    this.#clients = createRunnerlineClients({ baseUrl, transport: "grpc", security, interceptors: options.interceptors ?? [] });
    const concurrency = options.maxConcurrentWaits ?? 1000;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(`maxConcurrentWaits must be a whole number ≥ 1, got ${concurrency}`);
    }
    this.#maxConcurrentWaits = concurrency;
    this.#retryUnavailableMs = durationMs("retryUnavailableFor", options.retryUnavailableFor ?? "30s");
  }

  /** The typed clients underneath, for what this API does not cover (ListRollouts, attempts, workers). */
  get clients(): RunnerlineClients {
    return this.#clients;
  }

  /** Enqueues one rollout and returns its id. */
  async enqueue(spec: RolloutSpec): Promise<string> {
    const request = enqueueRequest(spec, "rollout", randomUUID);
    const { rollout } = await this.#retrying(() => this.#clients.rollouts.enqueueRollout(request));
    return rollout!.rolloutId;
  }

  /** Enqueues several rollouts atomically (all or none, at most 10,000) and returns their ids in order. */
  async enqueueMany(specs: readonly RolloutSpec[], defaults: EnqueueDefaults = {}): Promise<string[]> {
    if (!Array.isArray(specs)) throw new TypeError("enqueueMany takes an array of rollouts");
    if (specs.length === 0) return [];
    const requests = specs.map((spec, i) =>
      enqueueRequest(
        { ...defaults, ...spec, config: { ...defaults.config, ...spec?.config } },
        `rollouts[${i}]`,
        randomUUID,
      ),
    );
    const { rollouts } = await this.#retrying(() => this.#clients.rollouts.enqueueRollouts({ requests }));
    return rollouts.map((rollout) => rollout.rolloutId);
  }

  /**
   * Yields each rollout as it finishes (SUCCEEDED, FAILED or CANCELLED), in the order they finish, until all have;
   * throws RolloutWaitTimeoutError when `timeout` passes first (after yielding those that finished).
   */
  async *wait(rolloutIds: readonly string[], options: WaitOptions = {}): AsyncGenerator<RolloutOutcome, void, undefined> {
    if (!Array.isArray(rolloutIds)) throw new TypeError("wait takes an array of rollout ids");
    const timeoutMs = options.timeout === undefined ? undefined : durationMs("timeout", options.timeout);
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    const stop = new AbortController();
    const signal = options.signal === undefined ? stop.signal : AbortSignal.any([stop.signal, options.signal]);
    const queue = [...new Set(rolloutIds)];
    const timedOut = new Set<string>();
    // Settled, never rejected: a call failing while the loop is suspended at a yield is not an unhandled rejection.
    type Settled = { id: string; outcome?: RolloutOutcome; error?: unknown };
    const inFlight = new Map<string, Promise<Settled>>();
    const start = (id: string) =>
      inFlight.set(
        id,
        this.#waitOne(id, deadline, signal).then(
          (outcome): Settled => ({ id, outcome }),
          (error: unknown): Settled => ({ id, error }),
        ),
      );
    try {
      while (queue.length > 0 || inFlight.size > 0) {
        while (queue.length > 0 && inFlight.size < this.#maxConcurrentWaits) start(queue.shift()!);
        const { id, outcome, error } = await Promise.race(inFlight.values());
        inFlight.delete(id);
        if (error !== undefined) throw error;
        if (outcome === undefined) {
          // Timed out. The others reach the same deadline, and those still queued are asked with no time left, so
          // every rollout that did finish is still yielded before the error names exactly those that did not.
          timedOut.add(id);
          continue;
        }
        yield outcome;
      }
      if (timedOut.size > 0) throw new RolloutWaitTimeoutError([...new Set(rolloutIds)].filter((r) => timedOut.has(r)), timeoutMs!);
    } finally {
      stop.abort(); // a break, a throw or a timeout cancels the calls still waiting
      await Promise.allSettled(inFlight.values());
    }
  }

  /** Waits until all have finished and returns them in the order asked for (RolloutWaitTimeoutError on timeout). */
  async waitAll(rolloutIds: readonly string[], options: WaitOptions = {}): Promise<RolloutOutcome[]> {
    const byId = new Map<string, RolloutOutcome>();
    for await (const outcome of this.wait(rolloutIds, options)) byId.set(outcome.rolloutId, outcome);
    return rolloutIds.map((id) => byId.get(id)!);
  }

  /** Enqueues `specs` (enqueueMany) and yields each as it finishes (wait). */
  async *run(
    specs: readonly RolloutSpec[],
    options: WaitOptions & { defaults?: EnqueueDefaults } = {},
  ): AsyncGenerator<RolloutOutcome, void, undefined> {
    const ids = await this.enqueueMany(specs, options.defaults);
    yield* this.wait(ids, options);
  }

  /** The rollout as it is now (finished or not); NOT_FOUND (ConnectError) for an unknown id. */
  async get(rolloutId: string): Promise<RolloutOutcome> {
    const { rollout } = await this.#retrying(() => this.#clients.rollouts.getRollout({ rolloutId }));
    return rolloutOutcome(rollout!);
  }

  /** Cancels a rollout that has not finished; FAILED_PRECONDITION (ConnectError) when it already had. */
  async cancel(rolloutId: string): Promise<RolloutOutcome> {
    const { rollout } = await this.#retrying(() => this.#clients.rollouts.cancelRollout({ rolloutId }));
    return rolloutOutcome(rollout!);
  }

  /** One rollout's WaitRollouts call, repeated until it finishes; undefined when the deadline passed first. */
  async #waitOne(rolloutId: string, deadline: number | undefined, signal: AbortSignal): Promise<RolloutOutcome | undefined> {
    for (;;) {
      const leftMs = deadline === undefined ? undefined : Math.max(0, deadline - Date.now());
      const { rollouts } = await this.#retrying(
        () => this.#clients.rollouts.waitRollouts({ rolloutIds: [rolloutId], timeout: toDuration("timeout", leftMs) }, { signal }),
        signal,
      );
      const finished = rollouts[0];
      if (finished !== undefined) return rolloutOutcome(finished);
      if (leftMs !== undefined && leftMs <= 0) return undefined;
      // Unset timeout ends at the call's deadline or a server's timer bound; ask again.
    }
  }

  /**
   * `call`, retried with jittered back-off while the server cannot be reached (UNAVAILABLE, or ABORTED: a connection
   * reset under a call in flight), for at most retryUnavailableFor. Every call made through it is idempotent.
   */
  async #retrying<T>(call: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const giveUpAt = Date.now() + this.#retryUnavailableMs;
    for (let delay = 100; ; delay = Math.min(delay * 2, 5_000)) {
      try {
        return await call();
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (!(error instanceof ConnectError) || !RETRIED.has(error.code) || Date.now() + delay > giveUpAt) throw error;
        await new Promise((resolve) => setTimeout(resolve, delay / 2 + (Math.random() * delay) / 2));
      }
    }
  }
}
