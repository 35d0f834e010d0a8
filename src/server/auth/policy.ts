import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { Role } from "./tokens.js";

/**
 * What a method needs. `worker` methods are a runner's: a runner token may
 * call them only for a worker id its patterns match, named where `scope` says.
 * `operate` methods are the fleet's maintenance (cordon, drain): operators
 * and admins.
 */
export type MethodRule =
  | { access: "admin" }
  | { access: "read" }
  | { access: "operate" }
  | { access: "worker"; scope: WorkerScope };

/** Where a runner call names the worker it acts for. */
export type WorkerScope =
  /** The stream's first message, a Hello with worker_id (checked once per stream). */
  | { from: "hello" }
  /** A worker_id field of the request. */
  | { from: "request"; field: "workerId" }
  /** The worker holding the attempt named by the request's attempt_id. */
  | { from: "attempt"; field: "attemptId" };

/** The runner's methods, by full name; everything else is a read or admin's. */
const WORKER_METHODS: Record<string, WorkerScope> = {
  "runnerline.v1.RunnerService.Session": { from: "hello" },
  "runnerline.v1.WorkerService.SendHeartbeat": { from: "request", field: "workerId" },
  "runnerline.v1.RolloutService.DequeueRollout": { from: "request", field: "workerId" },
  "runnerline.v1.AttemptService.UpdateAttempt": { from: "attempt", field: "attemptId" },
};

/** Maintenance an operator may do: keep a runner from new work and let it go again. Nothing is lost by them. */
const OPERATE_METHODS = new Set([
  "runnerline.v1.WorkerService.CordonWorker",
  "runnerline.v1.WorkerService.UncordonWorker",
  "runnerline.v1.WorkerService.DrainWorker",
]);

/** Reads change nothing; methods added later without a rule fall to admin (fail closed). */
const READ_METHOD = /^(Get|List|Watch|Wait)[A-Z]/;

/** Rule per method, derived once from the service descriptors; looked up by identity on every call. */
export function methodRules(services: readonly DescService[]): Map<DescMethod, MethodRule> {
  const rules = new Map<DescMethod, MethodRule>();
  for (const service of services) {
    for (const method of service.methods) {
      const name = `${service.typeName}.${method.name}`;
      const scope = WORKER_METHODS[name];
      rules.set(
        method,
        scope
          ? { access: "worker", scope }
          : OPERATE_METHODS.has(name)
            ? { access: "operate" }
            : READ_METHOD.test(method.name)
              ? { access: "read" }
              : { access: "admin" },
      );
    }
  }
  return rules;
}

export function roleAllows(role: Role, rule: MethodRule): boolean {
  switch (role) {
    case "admin":
      return true;
    case "operator":
      return rule.access === "read" || rule.access === "operate";
    case "runner":
      return rule.access === "worker";
  }
}

/** What each role may do, for PERMISSION_DENIED messages (and docs/security.md says the same). */
export const ROLE_SUMMARY: Record<Role, string> = {
  runner:
    "may only open runner sessions, heartbeat, dequeue and report attempts, as a worker id its patterns match",
  operator:
    "may only call read-only queries and watches (Get*, List*, Watch*, WaitRollouts) and cordon, uncordon or drain workers",
  admin: "may call everything",
};
