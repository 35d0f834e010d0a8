// Trying a token before the page keeps it, and finding out which actions it
// may take. The server has no "who am I" call, so each guarded action is
// probed with a request it can only refuse: an empty id. Authorization runs
// before validation, so the answer (PERMISSION_DENIED or INVALID_ARGUMENT)
// tells whether the token may take the action, and nothing ever changes.
import { Code, ConnectError } from "@connectrpc/connect";
import { rolloutClient, workerClient } from "./api.js";
import {
  type Action,
  bearer,
  type Permission,
  permissionFromProbe,
  setPermissions,
  signInFailed,
  storedToken,
  tokenAccepted,
} from "./auth.js";

const PROBES: Record<Action, (headers: HeadersInit) => Promise<unknown>> = {
  cancelRollout: (headers) => rolloutClient.cancelRollout({ rolloutId: "" }, { headers }),
  releaseWorker: (headers) => workerClient.releaseWorker({ workerId: "" }, { headers }),
  cordonWorker: (headers) => workerClient.cordonWorker({ workerId: "" }, { headers }),
};

/** Tries `token` with a read; keeps it when the server accepts it, else shows the server's answer with the prompt. */
export async function signIn(input: string): Promise<void> {
  const token = input.trim();
  // The header carries one word; the server would refuse anything else as malformed.
  if (token === "" || /\s/.test(token)) {
    signInFailed(token === "" ? "paste a token first" : "a token is one word, without spaces");
    return;
  }
  const headers = { authorization: bearer(token) };
  try {
    await workerClient.getFleetSummary({}, { headers });
  } catch (error) {
    const refusal = ConnectError.from(error);
    // A runner token is valid but may not read: the server's message says so.
    const known = refusal.code === Code.Unauthenticated || refusal.code === Code.PermissionDenied;
    signInFailed(known ? refusal.rawMessage : `could not check the token: ${refusal.rawMessage}`);
    return;
  }
  tokenAccepted(token, await probePermissions(headers));
}

/** Asks again for the token kept in this tab (after a reload); without one there is nothing to ask. */
export async function refreshPermissions(): Promise<void> {
  const token = storedToken();
  if (token === undefined) return;
  const permissions = await probePermissions({ authorization: bearer(token) });
  if (storedToken() === token) setPermissions(permissions);
}

async function probePermissions(headers: HeadersInit): Promise<Record<Action, Permission>> {
  const entries = await Promise.all(
    (Object.keys(PROBES) as Action[]).map(async (action) => {
      try {
        await PROBES[action](headers);
        return [action, permissionFromProbe(undefined, "")] as const;
      } catch (error) {
        const refusal = ConnectError.from(error);
        return [action, permissionFromProbe(refusal.code, refusal.rawMessage)] as const;
      }
    }),
  );
  return Object.fromEntries(entries) as Record<Action, Permission>;
}
