import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";

type Handler = (request: unknown, context: HandlerContext) => unknown;

/**
 * Calls that stay open until something happens — server streams
 * (WatchWorkers) and long polls (WaitRollouts) — end the moment the server
 * starts to drain, with UNAVAILABLE "the server is shutting down", instead of
 * holding the listeners open past the drain: a browser tab watching the fleet
 * kept a stopping server up for the HTTP port's whole close grace. New such
 * calls during the drain are refused the same way, so a client reconnects to
 * the next server rather than spinning on this one. Runner sessions are not
 * among them: their end is the drain's business.
 */
export class ShutdownStreams {
  private readonly stopping = new AbortController();

  /** Ends every call wrapped by `wrap`, and refuses new ones. */
  end(): void {
    this.stopping.abort();
  }

  /** `impl` with its server-streaming methods and the named long polls ended by `end()`. */
  wrap<S extends DescService>(service: S, impl: ServiceImpl<S>, longPolls: readonly string[] = []): ServiceImpl<S> {
    const methods = impl as unknown as Record<string, Handler>;
    const wrapped: Record<string, Handler> = { ...methods };
    for (const method of service.methods) {
      const handler = methods[method.localName];
      if (handler === undefined) continue;
      if (method.methodKind === "server_streaming") wrapped[method.localName] = this.stream(handler.bind(impl));
      else if (method.methodKind === "unary" && longPolls.includes(method.localName)) wrapped[method.localName] = this.poll(handler.bind(impl));
    }
    return wrapped as unknown as ServiceImpl<S>;
  }

  private stream(handler: Handler): Handler {
    const shutdown = this;
    return async function* (request, context) {
      const call = shutdown.callContext(context);
      yield* handler(request, call) as AsyncIterable<unknown>;
      shutdown.refuseIfStopping(context);
    };
  }

  private poll(handler: Handler): Handler {
    return async (request, context) => {
      const call = this.callContext(context);
      const answer = await handler(request, call);
      this.refuseIfStopping(context);
      return answer;
    };
  }

  /** The call's context with a signal that also aborts when the server stops; refused at once if it has. */
  private callContext(context: HandlerContext): HandlerContext {
    this.refuseIfStopping(context);
    return { ...context, signal: AbortSignal.any([context.signal, this.stopping.signal]) };
  }

  /**
   * A call open when the server stops ends with UNAVAILABLE. (Whether the
   * client left too cannot be told apart from the transport's own abort on
   * close; a client that left reads nothing either way.)
   */
  private refuseIfStopping(_context: HandlerContext): void {
    if (this.stopping.signal.aborted) {
      throw new ConnectError("the server is shutting down; call again (another server, or this one after its restart)", Code.Unavailable);
    }
  }
}
