import type {
  DescMessage,
  DescMethod,
  DescMethodStreaming,
  DescMethodUnary,
  DescService,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import { create, isMessage } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createHandlerContext,
  type HandlerContext,
  type Interceptor,
  type ServiceImpl,
  type StreamRequest,
  type StreamResponse,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import type { Readable } from "node:stream";
import { grpcMethodPath, grpcServiceDefinition } from "../../common/grpc-definition.js";
import { normalizePeerAddress } from "./address.js";
import { connectionKey, peerAddressKey } from "./context.js";
import { headerEntriesFromMetadata, metadataFromHeaders } from "./metadata.js";
import { RequestStream } from "./request-stream.js";
import { grpcStatusFromError } from "./status.js";

export type GrpcAdapterOptions = {
  /**
   * Connect interceptors wrapped around every handler, the first outermost.
   * The same ones can be given to the HTTP transport, so auth and metrics are
   * written once for both. Streams are intercepted once per call, not per
   * message.
   */
  interceptors?: Interceptor[];
};

type Message = MessageShape<DescMessage>;
type MessageInit = MessageInitShape<DescMessage>;
type UnaryFn = (request: Message, context: HandlerContext) => Promise<MessageInit> | MessageInit;
type ClientStreamingFn = (requests: AsyncIterable<Message>, context: HandlerContext) => Promise<MessageInit>;
type ServerStreamingFn = (request: Message, context: HandlerContext) => AsyncIterable<MessageInit>;
type BidiStreamingFn = (requests: AsyncIterable<Message>, context: HandlerContext) => AsyncIterable<MessageInit>;
type AnyFn = Parameters<Interceptor>[0];
type CallContext = ReturnType<typeof createHandlerContext>;
/** What every grpc-js server call has (grpc-js does not export its name for it). */
interface SurfaceCall {
  readonly metadata: grpc.Metadata;
  getPeer(): string;
  getDeadline(): grpc.Deadline;
  getHost(): string;
  sendMetadata(metadata: grpc.Metadata): void;
  once(event: "cancelled", listener: () => void): unknown;
  off(event: "cancelled", listener: () => void): unknown;
}

/** What a handler produced, with the headers and trailers to send around it. */
type Reply<T> = { message: T; header: Headers; trailer: Headers };

/**
 * Serve a service written in Connect's ServiceImpl shape on a grpc-js server.
 * Methods missing from `impl` answer UNIMPLEMENTED (after the interceptors, so
 * auth still applies to them).
 */
export function addService<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: Partial<ServiceImpl<S>>,
  options: GrpcAdapterOptions = {},
): void {
  const interceptors = options.interceptors ?? [];
  const methods = impl as Partial<Record<string, (...args: never[]) => unknown>>;
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    // Bound like Connect's router does, so class-based impls keep their `this`.
    const fn = methods[method.localName]?.bind(impl) ?? unimplemented(method);
    handlers[method.localName] = methodHandler(method, fn, interceptors);
  }
  server.addService(grpcServiceDefinition(service), handlers);
}

function methodHandler(method: DescMethod, fn: (...args: never[]) => unknown, interceptors: Interceptor[]): grpc.UntypedHandleCall {
  switch (method.methodKind) {
    case "unary":
      return unaryHandler(method, fn as UnaryFn, interceptors);
    case "server_streaming":
      return serverStreamingHandler(method, fn as ServerStreamingFn, interceptors);
    case "client_streaming":
      return clientStreamingHandler(method, fn as ClientStreamingFn, interceptors);
    case "bidi_streaming":
      return bidiStreamingHandler(method, fn as BidiStreamingFn, interceptors);
  }
}

function unaryHandler(method: DescMethod, fn: UnaryFn, interceptors: Interceptor[]): grpc.handleUnaryCall<Message, Message> {
  const invoke: (request: Message, context: CallContext) => Promise<Reply<Message>> =
    interceptors.length === 0
      ? async (request, context) => replyOf(context, normalize(method.output, await fn(request, context)))
      : (request, context) =>
          intercept(interceptors, unaryRequest(method, context, request), async (req) => ({
            ...responseCommon(method, context),
            stream: false,
            method: method as DescMethodUnary,
            message: normalize(method.output, await fn(req.message as Message, mergeRequest(context, req))),
          })).then((response) => unaryReply(response));
  return (call, callback) => {
    const context = callContext(call, method);
    const release = abortOnCancel(call, context);
    invoke(call.request, context).then(
      (reply) => {
        sendHeader(call, reply.header);
        callback(null, reply.message, metadataFromHeaders(reply.trailer));
        release();
      },
      (error: unknown) => {
        callback(grpcStatusFromError(error, pathOf(method), context.responseHeader, context.responseTrailer));
        release();
      },
    );
  };
}

function clientStreamingHandler(
  method: DescMethod,
  fn: ClientStreamingFn,
  interceptors: Interceptor[],
): grpc.handleClientStreamingCall<Message, Message> {
  const invoke: (requests: AsyncIterable<Message>, context: CallContext) => Promise<Reply<Message>> =
    interceptors.length === 0
      ? async (requests, context) => replyOf(context, normalize(method.output, await fn(requests, context)))
      : (requests, context) =>
          intercept(interceptors, streamRequest(method, context, requests), async (req) => ({
            ...responseCommon(method, context),
            stream: true,
            method: method as DescMethodStreaming,
            message: single(normalize(method.output, await fn(req.message as AsyncIterable<Message>, mergeRequest(context, req)))),
          }))
            .then(streamReply)
            .then(async (reply) => ({ ...reply, message: await first(reply.message) }));
  return (call, callback) => {
    const context = callContext(call, method);
    const requests = new RequestStream<Message>(call as unknown as Readable);
    const release = abortOnCancel(call, context, requests);
    invoke(requests, context).then(
      (reply) => {
        sendHeader(call, reply.header);
        callback(null, reply.message, metadataFromHeaders(reply.trailer));
        void requests.return();
        release();
      },
      (error: unknown) => {
        callback(grpcStatusFromError(error, pathOf(method), context.responseHeader, context.responseTrailer));
        void requests.return();
        release();
      },
    );
  };
}

function serverStreamingHandler(
  method: DescMethod,
  fn: ServerStreamingFn,
  interceptors: Interceptor[],
): grpc.handleServerStreamingCall<Message, Message> {
  const open: (request: Message, context: CallContext) => Reply<AsyncIterable<MessageInit>> | Promise<Reply<AsyncIterable<MessageInit>>> =
    interceptors.length === 0
      ? (request, context) => replyOf(context, fn(request, context))
      : (request, context) =>
          intercept(interceptors, streamRequest(method, context, single(request)), async (req) => ({
            ...responseCommon(method, context),
            stream: true,
            method: method as DescMethodStreaming,
            message: normalizeAll(method.output, fn(await first(req.message as AsyncIterable<Message>), mergeRequest(context, req))),
          })).then(streamReply);
  return (call) => {
    const context = callContext(call, method);
    void serveStream(call, method, context, undefined, () => open(call.request, context));
  };
}

function bidiStreamingHandler(
  method: DescMethod,
  fn: BidiStreamingFn,
  interceptors: Interceptor[],
): grpc.handleBidiStreamingCall<Message, Message> {
  const open: (requests: AsyncIterable<Message>, context: CallContext) => Reply<AsyncIterable<MessageInit>> | Promise<Reply<AsyncIterable<MessageInit>>> =
    interceptors.length === 0
      ? (requests, context) => replyOf(context, fn(requests, context))
      : (requests, context) =>
          intercept(interceptors, streamRequest(method, context, requests), (req) =>
            Promise.resolve({
              ...responseCommon(method, context),
              stream: true as const,
              method: method as DescMethodStreaming,
              message: normalizeAll(method.output, fn(req.message as AsyncIterable<Message>, mergeRequest(context, req))),
            }),
          ).then(streamReply);
  return (call) => {
    const context = callContext(call, method);
    const requests = new RequestStream<Message>(call as unknown as Readable);
    void serveStream(call, method, context, requests, () => open(requests, context));
  };
}

/**
 * Drive a handler's output onto a response stream: one write per message,
 * waiting for 'drain' only when grpc-js says its buffer is full, then OK with
 * the trailers, or the handler's error as the status. A client cancel aborts
 * the context, fails pending request reads and asks the output to return, so
 * a generator's `finally` blocks run even when it is parked on something else.
 */
async function serveStream(
  call: grpc.ServerWritableStream<Message, Message> | grpc.ServerDuplexStream<Message, Message>,
  method: DescMethod,
  context: CallContext,
  requests: RequestStream<Message> | undefined,
  open: () => Reply<AsyncIterable<MessageInit>> | Promise<Reply<AsyncIterable<MessageInit>>>,
): Promise<void> {
  let output: AsyncIterator<MessageInit> | undefined;
  let cancelled = false;
  let headerSent = false;
  const onCancel = (): void => {
    cancelled = true;
    const reason = cancelledError();
    context.abort(reason);
    requests?.fail(reason);
    output?.return?.().catch(() => undefined);
  };
  call.once("cancelled", onCancel);
  try {
    const reply = await open();
    output = reply.message[Symbol.asyncIterator]();
    while (!cancelled) {
      const result = await output.next();
      if (result.done === true || cancelled) {
        break;
      }
      if (!headerSent) {
        headerSent = true;
        sendHeader(call, reply.header);
      }
      if (!call.write(normalize(method.output, result.value))) {
        await drained(call);
      }
    }
    if (!cancelled) {
      if (!headerSent) {
        sendHeader(call, reply.header);
      }
      call.end(metadataFromHeaders(reply.trailer));
    }
  } catch (error) {
    const status = grpcStatusFromError(
      error,
      pathOf(method),
      ...(headerSent ? [context.responseTrailer] : [context.responseHeader, context.responseTrailer]),
    );
    if (!cancelled) {
      // grpc-js's documented way to end a stream with a status.
      call.emit("error", status);
    }
  } finally {
    call.off("cancelled", onCancel);
    void requests?.return();
    context.abort();
  }
}

function drained(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off("drain", done);
      stream.off("close", done);
      stream.off("cancelled", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
    stream.on("cancelled", done);
  });
}

/** A Connect HandlerContext for a grpc-js call. */
function callContext(call: SurfaceCall, method: DescMethod): CallContext {
  return createHandlerContext({
    service: method.parent,
    method,
    protocolName: "grpc",
    requestMethod: "POST",
    url: `http://${call.getHost()}${pathOf(method)}`,
    timeoutMs: remainingMs(call.getDeadline()),
    requestHeader: headerEntriesFromMetadata(call.metadata),
    contextValues: createContextValues().set(peerAddressKey, peerHost(call.getPeer())).set(connectionKey, call.getPeer()),
  });
}

/** Abort the context if the client cancels; the returned function ends the call's context. */
function abortOnCancel(call: SurfaceCall, context: CallContext, requests?: RequestStream<Message>): () => void {
  const onCancel = (): void => {
    const reason = cancelledError();
    context.abort(reason);
    requests?.fail(reason);
  };
  call.once("cancelled", onCancel);
  return () => {
    call.off("cancelled", onCancel);
    context.abort();
  };
}

function remainingMs(deadline: grpc.Deadline): number | undefined {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

/**
 * grpc-js reports the peer as "address:port" (IPv6 without brackets); keep the
 * address alone so the key means the same as on the HTTP side.
 */
function peerHost(peer: string): string {
  const colon = peer.lastIndexOf(":");
  if (colon <= 0) {
    return peer === "unknown" ? "" : peer;
  }
  const port = peer.slice(colon + 1);
  return normalizePeerAddress(/^\d+$/.test(port) ? peer.slice(0, colon) : peer);
}

function sendHeader(call: SurfaceCall, header: Headers): void {
  const metadata = metadataFromHeaders(header);
  if (metadata) {
    call.sendMetadata(metadata);
  }
}

function cancelledError(): ConnectError {
  return new ConnectError("the client cancelled the call", Code.Canceled);
}

function unimplemented(method: DescMethod): () => never {
  return () => {
    throw new ConnectError(`${method.parent.typeName}.${method.name} is not implemented`, Code.Unimplemented);
  };
}

function pathOf(method: DescMethod): string {
  return grpcMethodPath(method.parent, method);
}

/** Handlers may answer with an init object; the wire needs a message. */
function normalize(schema: DescMessage, value: MessageInit): Message {
  return isMessage(value, schema) ? value : create(schema, value);
}

/**
 * Hand-rolled rather than an async generator: with interceptors on (auth),
 * every session message passes here, and a generator layer would cost
 * several promise turns per message on the heartbeat hot path.
 */
function normalizeAll(schema: DescMessage, values: AsyncIterable<MessageInit>): AsyncIterable<Message> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<Message> {
      const inner = values[Symbol.asyncIterator]();
      const done = (): IteratorResult<Message> => ({ done: true, value: undefined });
      return {
        next: () =>
          inner.next().then((result): IteratorResult<Message> => (result.done === true ? done() : { done: false, value: normalize(schema, result.value) })),
        return: (value?: unknown) => (inner.return ? inner.return(value).then(done) : Promise.resolve(done())),
        throw: (error?: unknown) => (inner.throw ? inner.throw(error).then(done) : Promise.reject(error)),
      };
    },
  };
}

function replyOf<T>(context: CallContext, message: T): Reply<T> {
  return { message, header: context.responseHeader, trailer: context.responseTrailer };
}

// ---- Interceptor plumbing: only used when interceptors are configured, so
// the plain path above pays nothing for it.

function intercept(
  interceptors: Interceptor[],
  request: UnaryRequest | StreamRequest,
  innermost: AnyFn,
): Promise<UnaryResponse | StreamResponse> {
  let next = innermost;
  for (let i = interceptors.length - 1; i >= 0; i--) {
    next = (interceptors[i] as Interceptor)(next);
  }
  // An interceptor may throw before it returns a promise (an auth check
  // does); that must become the call's status, not an UNKNOWN from grpc-js.
  try {
    return next(request);
  } catch (error) {
    return Promise.reject(error);
  }
}

function requestCommon(method: DescMethod, context: CallContext) {
  return {
    service: method.parent,
    requestMethod: context.requestMethod,
    url: context.url,
    signal: context.signal,
    header: context.requestHeader,
    contextValues: context.values,
  };
}

function responseCommon(method: DescMethod, context: CallContext) {
  return { service: method.parent, header: context.responseHeader, trailer: context.responseTrailer };
}

function unaryRequest(method: DescMethod, context: CallContext, message: Message): UnaryRequest {
  return { ...requestCommon(method, context), stream: false, method: method as DescMethodUnary, message };
}

function streamRequest(method: DescMethod, context: CallContext, message: AsyncIterable<Message>): StreamRequest {
  return { ...requestCommon(method, context), stream: true, method: method as DescMethodStreaming, message };
}

/** An interceptor may swap the request's header, signal or values; the handler sees its choice. */
function mergeRequest(context: CallContext, req: UnaryRequest | StreamRequest): HandlerContext {
  if (req.header === context.requestHeader && req.signal === context.signal && req.contextValues === context.values) {
    return context;
  }
  return { ...context, requestHeader: req.header, signal: req.signal, values: req.contextValues };
}

function unaryReply(response: UnaryResponse | StreamResponse): Reply<Message> {
  if (response.stream) {
    throw new ConnectError("an interceptor returned a stream for a unary call", Code.Internal);
  }
  return { message: response.message, header: response.header, trailer: response.trailer };
}

function streamReply(response: UnaryResponse | StreamResponse): Reply<AsyncIterable<Message>> {
  if (!response.stream) {
    throw new ConnectError("an interceptor returned a single message for a streaming call", Code.Internal);
  }
  return { message: response.message, header: response.header, trailer: response.trailer };
}

async function* single<T>(value: T): AsyncGenerator<T> {
  yield value;
}

async function first<T>(values: AsyncIterable<T>): Promise<T> {
  for await (const value of values) {
    return value;
  }
  throw new ConnectError("protocol error: missing message", Code.Unimplemented);
}
