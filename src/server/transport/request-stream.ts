import type { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { UndecodableRequest, undecodableRequestError } from "./undecodable.js";

/**
 * The request side of a grpc-js client-streaming or bidi call as the
 * AsyncIterable a Connect handler reads. Ends when the client half-closes,
 * throws CANCELED when the call is cancelled, so a handler blocked on the next
 * request always wakes up and can tell a clean end from a lost stream.
 *
 * Hand-rolled instead of Readable's own async iterator because that one
 * destroys the whole duplex when the handler stops reading (ending the
 * response side too) and costs several promises per message; here a message
 * that arrives while the handler waits resolves its pending promise directly,
 * and a handler that falls behind pauses the socket (HTTP/2 flow control does
 * the rest) instead of growing a queue.
 *
 * A message that could not be decoded (UndecodableRequest) ends the stream
 * with INVALID_ARGUMENT once the handler has read the messages before it.
 */
export class RequestStream<T> implements AsyncIterableIterator<T> {
  private readonly queue: T[] = [];
  private resolveNext: ((result: IteratorResult<T>) => void) | undefined;
  private rejectNext: ((reason: unknown) => void) | undefined;
  private ended = false;
  private failure: ConnectError | undefined;
  private paused = false;

  constructor(
    private readonly source: Readable,
    private readonly highWaterMark = 16,
  ) {
    source.on("data", this.onData);
    source.once("end", this.onEnd);
    // grpc-js destroys the stream on cancellation; 'close' before 'end' means
    // the client went away without half-closing.
    source.once("close", this.onClose);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.queue.length > 0) {
      const value = this.queue.shift() as T;
      if (this.paused && this.queue.length <= this.highWaterMark >> 1) {
        this.paused = false;
        this.source.resume();
      }
      return Promise.resolve({ done: false, value });
    }
    if (this.failure) {
      return Promise.reject(this.failure);
    }
    if (this.ended) {
      return Promise.resolve({ done: true, value: undefined });
    }
    // Reached also between 'end' and finish(): the read waits for the verdict.
    return new Promise<IteratorResult<T>>((resolve, reject) => {
      this.resolveNext = resolve;
      this.rejectNext = reject;
    });
  }

  /** The handler stopped reading: drop what is queued and stop pulling. */
  return(): Promise<IteratorResult<T>> {
    this.detach();
    this.queue.length = 0;
    this.ended = true;
    if (!this.source.destroyed) {
      this.source.pause();
    }
    return Promise.resolve({ done: true, value: undefined });
  }

  /** The call is gone: fail the pending and all later reads with `reason`. */
  fail(reason: ConnectError): void {
    if (this.ended || this.failure) {
      return;
    }
    this.queue.length = 0;
    this.failAfterQueued(reason);
  }

  private readonly onData = (message: T | UndecodableRequest): void => {
    if (message instanceof UndecodableRequest) {
      this.failAfterQueued(undecodableRequestError(message.methodPath));
      return;
    }
    const resolve = this.resolveNext;
    if (resolve) {
      this.resolveNext = this.rejectNext = undefined;
      resolve({ done: false, value: message });
      return;
    }
    this.queue.push(message);
    if (!this.paused && this.queue.length >= this.highWaterMark) {
      this.paused = true;
      this.source.pause();
    }
  };

  /** Like fail(), but what is already queued is still read first. */
  private failAfterQueued(reason: ConnectError): void {
    if (this.ended || this.failure) {
      return;
    }
    this.failure = reason;
    this.detach();
    const reject = this.rejectNext;
    this.resolveNext = this.rejectNext = undefined;
    reject?.(reason);
  }

  private readonly onEnd = (): void => {
    // grpc-js ends the request side before it reports a cancellation (both
    // within the same turn of the event loop), so a cancel would read as a
    // clean half-close; waiting for the next turn lets fail() win that race.
    setImmediate(this.finish);
  };

  private readonly finish = (): void => {
    if (this.ended || this.failure) {
      return;
    }
    this.ended = true;
    this.detach();
    const resolve = this.resolveNext;
    this.resolveNext = this.rejectNext = undefined;
    resolve?.({ done: true, value: undefined });
  };

  private readonly onClose = (): void => {
    this.fail(new ConnectError("the client cancelled the call", Code.Canceled));
  };

  private detach(): void {
    this.source.off("data", this.onData);
    this.source.off("end", this.onEnd);
    this.source.off("close", this.onClose);
  }
}
