import { createContextKey } from "@connectrpc/connect";

/**
 * IP address of the client that made the call, without the port, filled in by
 * both transports so that handlers and interceptors (rate limits, audit logs)
 * see the same value whichever protocol the call came in on. Empty when the
 * transport cannot tell (e.g. a Unix socket).
 */
export const peerAddressKey = createContextKey<string>("", { description: "peer address" });

/**
 * Identifies the client connection a call came in on ("address:port" of the
 * peer), for bounds per connection. Empty when the transport cannot tell.
 */
export const connectionKey = createContextKey<string>("", { description: "client connection" });

/**
 * Name of the token the call was authenticated with (auth/interceptor.ts), for
 * what a handler records of who acted (Worker.cordoned_by). Empty on a server
 * without tokens.
 */
export const callerNameKey = createContextKey<string>("", { description: "caller's token name" });
