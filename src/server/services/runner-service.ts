import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type Hello,
  RunnerService,
  type SessionRequest,
  SessionRequestSchema,
  type SessionResponse,
  SessionResponseSchema,
  type Welcome,
} from "../../gen/runnerline/v1/runner_pb.js";
import type { Coordinator } from "../dispatch/coordinator.js";
import { type Replacement, replacementMessage, type SessionLink } from "../dispatch/session-link.js";
import { heartbeatAckMessage } from "../dispatch/sessions/messages.js";
import { DomainError, invalidArgument } from "../domain/errors.js";
import { CLIENT_ID_PATTERN, MAX_ID_LENGTH, newSessionId } from "../domain/ids.js";
import type { Logger } from "../logging.js";
import { connectionKey, peerAddressKey } from "../transport/context.js";
import { AssignmentBatcher } from "./assignment-batcher.js";
import { attemptReport, requireReportableStatus } from "./attempt-service.js";
import { codeOf, toConnectError } from "./errors.js";
import type { HeartbeatGate } from "./heartbeat-gate.js";
import { type Limits, requireBoundedJson, requireBoundedLabels, requireListLength } from "./limits.js";
import { Outbox } from "./outbox.js";
import { RequestPipeline } from "./request-pipeline.js";
import type { SessionCount } from "./session-count.js";
import { TerminalCredits } from "./terminal-credits.js";
import { boundedExtraStats, boundedResult, requireId } from "./validation.js";
import { requireJsonSafe } from "./well-known-types.js";

const MAX_CAPACITY = 1024;
const MAX_SLOTS_PER_READY = 10_000;

export interface RunnerServiceOptions {
  logger: Logger;
  /** Plain-text lines, logged at info (the older shape; prefer `logger` with ids as fields). */
  log: (line: string) => void;
  now: () => number;
  limits: Limits;
  heartbeats: HeartbeatGate;
  sessions: SessionCount;
  /** Counts each session a newer one of the same worker replaced (runnerline_sessions_replaced_total). */
  onSessionReplaced?: () => void;
}

/**
 * The runner session: reads the runner's messages in order and hands them to
 * the coordinator (attempt updates about different attempts without waiting
 * for each other: request-pipeline.ts); everything the server says goes out through one
 * AssignmentBatcher into one outbox.
 * Protocol errors end the stream with a status; domain refusals answer
 * Rejected and keep it open (DESIGN §4).
 */
export function runnerService(coordinator: Coordinator, options: RunnerServiceOptions): ServiceImpl<typeof RunnerService> {
  return {
    // Returned, not delegated with yield*: each generator layer costs promise turns per message.
    session(requests, context) {
      return runSession(coordinator, options, requests, context);
    },
  };
}

async function* runSession(
  coordinator: Coordinator,
  options: RunnerServiceOptions,
  requests: AsyncIterable<SessionRequest>,
  context: HandlerContext,
): AsyncGenerator<SessionResponse> {
  const { limits, heartbeats } = options;
  let uncount: () => void;
  try {
    uncount = options.sessions.open(context.values.get(connectionKey));
  } catch (error) {
    throw toConnectError(error);
  }
  const outbox = new Outbox<SessionResponse>();
  const outgoing = new AssignmentBatcher((message) => outbox.push(message), limits.maxResponseBytes);
  /** Ends the stream after everything said before, assignments held back for a batch included. */
  const end = (failure?: unknown) => {
    outgoing.flush();
    outbox.end(failure);
  };
  let link: SessionLink | undefined;
  /** Set when the runner asked that terminal updates return their credits (Hello.terminal_update_returns_credit). */
  let terminalCredits: TerminalCredits | undefined;
  const peer = context.values.get(peerAddressKey);
  /** "address:port": tells apart two runners on one host. */
  const connection = context.values.get(connectionKey) || peer;

  /** `returnsCredit`: a terminal update that gives its slot back (decided by handle, before any check). */
  const apply = async (request: SessionRequest, returnsCredit = false) => {
    const message = request.message;
    if (link === undefined) {
      if (message.case !== "hello") throw protocolError("the first message of a session must be hello");
      const hello = message.value;
      ({ link, terminalCredits } = openLink(hello, connection, outgoing, end, limits, (replaced, by) => {
        // Both peers, so that an operator can find the two runners that share a worker id.
        options.logger.warn(
          {
            workerId: replaced.workerId,
            sessionId: replaced.sessionId,
            peer: connection || undefined,
            newSessionId: by.sessionId || undefined,
            newPeer: by.peer || undefined,
          },
          "session replaced by a newer session of the same worker id (a runner reconnecting, or two runners sharing the id)",
        );
        options.onSessionReplaced?.();
      }));
      await coordinator.openSession(
        link,
        {
          labels: hello.labels,
          capacity: hello.capacity || 1,
          clientVersion: hello.clientVersion,
          peer,
        },
        hello.runningAttemptIds,
      );
      options.logger.info(
        {
          sessionId: link.sessionId,
          workerId: link.workerId,
          peer: peer || undefined,
          capacity: hello.capacity || 1,
          resumed: hello.runningAttemptIds.length,
          terminalUpdateReturnsCredit: hello.terminalUpdateReturnsCredit || undefined,
          assignmentBatches: hello.acceptsAssignmentBatches || undefined,
        },
        "session opened",
      );
      return;
    }
    switch (message.case) {
      case "hello":
        throw protocolError("hello may only be sent once per session");
      case "heartbeat": {
        const beat = message.value;
        requireListLength("heartbeat.attempt_ids", beat.attemptIds.length, MAX_CAPACITY);
        beat.attemptIds.forEach((id, i) => requireId(`heartbeat.attempt_ids[${i}]`, id));
        const extraStats = boundedExtraStats(beat.extraStats);
        const admission = heartbeats.admit(link.workerId);
        if (admission === "refuse") throw new DomainError("resource_exhausted", heartbeats.refusal(link.workerId));
        if (admission === "apply") await coordinator.heartbeat(
          link.workerId,
          { snapshot: beat.snapshot, extraStats },
          beat.attemptIds,
        );
        outgoing.send(heartbeatAckMessage(beat.sequence, options.now()));
        return;
      }
      case "ready": {
        const slots = message.value.slots;
        if (slots <= 0 || slots > MAX_SLOTS_PER_READY) {
          throw invalidArgument(`ready.slots must be between 1 and ${MAX_SLOTS_PER_READY}`);
        }
        await coordinator.grantCredits(link, slots);
        return;
      }
      case "attemptUpdate": {
        const update = message.value;
        const session = link;
        try {
          requireId("attempt_update.attempt_id", update.attemptId);
          requireReportableStatus(update.status);
          requireBoundedJson("attempt_update.metadata", update.metadata, limits.maxMetadataBytes);
          boundedResult(update.result);
        } catch (error) {
          // Refused before it reached the coordinator: the slot is free all the same.
          if (returnsCredit && error instanceof DomainError) await coordinator.grantCredits(session, 1);
          throw error;
        }
        // The report and the credit it returns are one pass through the coordinator: one dispatch, one commit.
        await coordinator.report(update.attemptId, attemptReport(update), { workerId: session.workerId, session, returnsCredit });
        return;
      }
      case "goodbye":
        coordinator.goodbye(link);
        options.logger.info({ sessionId: link.sessionId, workerId: link.workerId, reason: message.value.reason || undefined }, "runner said goodbye");
        return;
      case undefined:
        throw invalidArgument("the request carries no message");
    }
  };

  /** Applies a request; a terminal update that returns its credit returns it after, whatever the answer (runner.proto, Hello). */
  const handle = async (request: SessionRequest): Promise<void> => {
    const message = request.message;
    const credited = link;
    // Decided before anything is checked: a refused update (Rejected) frees the runner's slot too.
    const returnsCredit =
      credited !== undefined &&
      message.case === "attemptUpdate" &&
      (terminalCredits?.returnsCredit(message.value.attemptId, message.value.status) ?? false);
    try {
      requireJsonSafe(SessionRequestSchema, request);
    } catch (error) {
      if (returnsCredit && error instanceof DomainError) await coordinator.grantCredits(credited, 1);
      throw error;
    }
    // Past this point apply returns the credit itself, with the report or with its refusal.
    return apply(request, returnsCredit);
  };

  /** A domain refusal answers Rejected and keeps the session; anything else ends it. */
  const answer = async (request: SessionRequest) => {
    try {
      await handle(request);
    } catch (error) {
      if (!(error instanceof DomainError) || link === undefined) throw error;
      outgoing.send(rejected(error, request));
    }
  };
  const pipeline = new RequestPipeline(answer, (error) => end(toConnectError(error)));
  const readRequests = async () => {
    try {
      for await (const request of requests) {
        await pipeline.push(request);
        if (pipeline.failure !== undefined) return;
      }
      await pipeline.idle();
      if (pipeline.failure === undefined) end();
    } catch (error) {
      end(toConnectError(error));
    }
  };

  const reading = readRequests();
  try {
    yield* outbox;
  } finally {
    uncount();
    outbox.end();
    // Not awaited: the request stream may stay open after the response side ends.
    void reading;
    if (link !== undefined) {
      await coordinator.closeSession(link);
      options.logger.info({ sessionId: link.sessionId, workerId: link.workerId }, "session closed");
    }
  }
}

/**
 * Runs `then` once `handled` settles, applied or refused: a terminal update
 * returns its credit whatever the server answers, since the runner's slot is
 * free either way. A refusal (Rejected) is passed on after it; any other
 * failure ends the session, and with it the need for credits.
 */
/** A malformed Hello is a protocol error: the session cannot start, so the stream ends. */
function requireValidHello(hello: Hello, limits: Limits) {
  if (!CLIENT_ID_PATTERN.test(hello.workerId)) {
    throw protocolError("hello.worker_id must be 1-128 characters of letters, digits, '.', '_', ':' and '-'", Code.InvalidArgument);
  }
  if (hello.capacity < 0 || hello.capacity > MAX_CAPACITY) {
    throw protocolError(`hello.capacity must be between 0 and ${MAX_CAPACITY}`, Code.InvalidArgument);
  }
  const overlong = hello.runningAttemptIds.findIndex((id) => id.length > MAX_ID_LENGTH);
  if (overlong >= 0) {
    throw protocolError(`hello.running_attempt_ids[${overlong}] is longer than ${MAX_ID_LENGTH} characters`, Code.InvalidArgument);
  }
  try {
    requireBoundedLabels("hello.labels", hello.labels, limits);
    requireListLength("hello.running_attempt_ids", hello.runningAttemptIds.length, MAX_CAPACITY);
  } catch (error) {
    throw toConnectError(error);
  }
}

/**
 * The session as the coordinator sees it, with the options the runner asked
 * for in Hello applied to what it is sent: Welcome confirms them, batched
 * assignments go through an AssignmentBatcher, and the attempts the session
 * holds are noted for TerminalCredits.
 */
function openLink(
  hello: Hello,
  peer: string,
  outgoing: AssignmentBatcher,
  end: (failure: ConnectError) => void,
  limits: Limits,
  onReplaced: (link: SessionLink, by: Replacement) => void,
): { link: SessionLink; terminalCredits: TerminalCredits | undefined } {
  requireValidHello(hello, limits);
  const terminalCredits = hello.terminalUpdateReturnsCredit ? new TerminalCredits() : undefined;
  if (hello.acceptsAssignmentBatches) outgoing.startBatching();
  const confirmsOptions = hello.terminalUpdateReturnsCredit || hello.acceptsAssignmentBatches;
  const link: SessionLink = {
    sessionId: newSessionId(),
    workerId: hello.workerId,
    peer: peer || undefined,
    credits: 0,
    leaving: false,
    send: (message) => {
      terminalCredits?.sent(message);
      outgoing.send(confirmsOptions && message.message.case === "welcome" ? confirmOptions(message.message.value, hello) : message);
    },
    close: (kind, message) => end(new ConnectError(message, codeOf(kind))),
    replaced: (by) => {
      onReplaced(link, by);
      const value = { workerId: hello.workerId, newSessionId: by.sessionId, newPeer: by.peer };
      link.send(create(SessionResponseSchema, { message: { case: "sessionReplaced", value } }));
      end(new ConnectError(replacementMessage(hello.workerId, by), Code.Aborted));
    },
  };
  return { link, terminalCredits };
}

/** Welcome with the options of Hello this server honours: all of them. */
function confirmOptions(welcome: Welcome, hello: Hello): SessionResponse {
  const confirmed: Welcome = {
    ...welcome,
    terminalUpdateReturnsCredit: hello.terminalUpdateReturnsCredit,
    assignmentBatches: hello.acceptsAssignmentBatches,
  };
  return create(SessionResponseSchema, { message: { case: "welcome", value: confirmed } });
}

function protocolError(message: string, code = Code.FailedPrecondition) {
  return new ConnectError(message, code);
}

function rejected(error: DomainError, request: SessionRequest): SessionResponse {
  const attemptId = request.message.case === "attemptUpdate" ? request.message.value.attemptId : "";
  return create(SessionResponseSchema, {
    message: {
      case: "rejected",
      value: { code: codeOf(error.kind), message: error.message, attemptId, requestKind: snakeCase(request.message.case ?? "") },
    },
  });
}

const snakeCase = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
