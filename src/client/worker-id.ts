import { hostname } from "node:os";
import { CLIENT_ID_PATTERN } from "../common/client-id.js";

/**
 * The worker id a runner gets when it names none: the host name, with any
 * character a worker id may not hold replaced by "-" (at most 128).
 *
 * Worker ids must be unique across the fleet: the server keeps one session
 * per worker id, and a newer session replaces an older one (that is how a
 * runner gets its work back after a dead connection). A second runner with
 * the same id therefore takes the first one's session, and the first stops
 * with SessionReplacedError. The host name suits one runner per host; run
 * several on one host with ids of their own (e.g. `${hostname}-0`, `-1`).
 */
export function workerIdFromHostname(host: string = hostname()): string {
  const id = host.replace(/[^A-Za-z0-9._:-]/g, "-").slice(0, 128);
  return CLIENT_ID_PATTERN.test(id) ? id : "runner";
}
