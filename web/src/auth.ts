// What the page knows about its token: whether the server asked for one, the
// token itself (in the tab's session storage, so it leaves with the tab and is
// never shared with other tabs or written to disk by localStorage), and which
// of the page's actions the token may take. No requests are made here: api.ts
// reports refusals to this store, sign-in.ts asks the server.
import { Code } from "@connectrpc/connect";
import { useEffect, useState } from "preact/hooks";

/** Session-storage key the token is kept under (per tab, never in localStorage). */
export const TOKEN_STORAGE_KEY = "runnerline.token";

/**
 * The page's actions that a token's role may not allow. "cordonWorker"
 * stands for CordonWorker, UncordonWorker and DrainWorker, which the server
 * allows to the same roles.
 */
export type Action = "cancelRollout" | "releaseWorker" | "cordonWorker";

/** Whether the token may take an action; "unknown" (no token, or not asked yet) leaves the action enabled. */
export type Permission = { state: "unknown" } | { state: "allowed" } | { state: "denied"; reason: string };

export interface AuthState {
  /** The server asked for a token and the page has none that works: show the prompt instead of the pages. */
  prompt: boolean;
  /** The server's answer to the last token it refused, shown with the prompt. */
  error?: string;
  /** A token is in use (the header offers to sign out). */
  signedIn: boolean;
  /** Changes at every sign-in and sign-out, so the pages start over with the new token. */
  generation: number;
  permissions: Record<Action, Permission>;
}

const UNKNOWN: Record<Action, Permission> = {
  cancelRollout: { state: "unknown" },
  releaseWorker: { state: "unknown" },
  cordonWorker: { state: "unknown" },
};

// Read from storage on first use, not at import (unit tests import this file without a browser).
let state: AuthState | undefined;
function current(): AuthState {
  return (state ??= { prompt: false, signedIn: storedToken() !== undefined, generation: 0, permissions: UNKNOWN });
}
const listeners = new Set<(state: AuthState) => void>();

function set(patch: Partial<AuthState>): void {
  const next = { ...current(), ...patch };
  state = next;
  for (const listener of listeners) listener(next);
}

export function useAuth(): AuthState {
  const [seen, setSeen] = useState(current);
  useEffect(() => {
    listeners.add(setSeen);
    setSeen(current()); // it may have changed between render and effect
    return () => void listeners.delete(setSeen);
  }, []);
  return seen;
}

export function storedToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_STORAGE_KEY) ?? undefined;
}

/** The authorization header value for a token. */
export function bearer(token: string): string {
  return `Bearer ${token}`;
}

/**
 * A call answered UNAUTHENTICATED. `sentHeader` is the authorization header
 * it carried: an answer to a call made before the current token was stored
 * (or with a token being tried at sign-in) says nothing about that token.
 */
export function tokenRefused(sentHeader: string | null, message: string): void {
  const token = storedToken();
  const sent = token === undefined ? null : bearer(token);
  if (sentHeader !== sent || (current().prompt && token === undefined)) return;
  sessionStorage.removeItem(TOKEN_STORAGE_KEY);
  // No token sent: the server just says it wants one, which the prompt says already.
  set({ prompt: true, error: token === undefined ? undefined : message, signedIn: false, permissions: UNKNOWN });
}

/** A token the server accepted at sign-in: kept for the tab, and the pages start over with it. */
export function tokenAccepted(token: string, permissions: Record<Action, Permission>): void {
  sessionStorage.setItem(TOKEN_STORAGE_KEY, token);
  set({ prompt: false, error: undefined, signedIn: true, permissions, generation: current().generation + 1 });
}

/** Sign-in failed: the prompt stays, with the server's message. */
export function signInFailed(message: string): void {
  set({ prompt: true, error: message });
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_STORAGE_KEY);
  set({ prompt: true, error: undefined, signedIn: false, permissions: UNKNOWN, generation: current().generation + 1 });
}

export function setPermissions(permissions: Record<Action, Permission>): void {
  set({ permissions });
}

/** An action answered PERMISSION_DENIED after all (the probe was not asked, or the token file changed): disable it. */
export function actionDenied(action: Action, reason: string): void {
  set({ permissions: { ...current().permissions, [action]: { state: "denied", reason } } });
}

/**
 * What a probe's answer says about an action. The probe calls the action with
 * an empty id: authorization runs before validation, so a token that may not
 * act is refused with PERMISSION_DENIED, and one that may gets
 * INVALID_ARGUMENT (the id is required), with nothing changed either way.
 * Anything else (the server is down) tells nothing.
 */
export function permissionFromProbe(code: Code | undefined, message: string): Permission {
  if (code === Code.PermissionDenied) return { state: "denied", reason: message };
  if (code === Code.InvalidArgument || code === undefined) return { state: "allowed" };
  return { state: "unknown" };
}

/** The tooltip of a disabled action. */
export function deniedTitle(permission: Permission): string | undefined {
  return permission.state === "denied" ? `Your token may not do this: ${permission.reason}` : undefined;
}
