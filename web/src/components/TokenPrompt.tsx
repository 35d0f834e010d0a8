import { useState } from "preact/hooks";
import { signIn } from "../sign-in.js";
import { Notice } from "./common.js";

/** Shown instead of the pages while the server wants a token the tab does not have. */
export function TokenPrompt({ error }: { error?: string }) {
  const [token, setToken] = useState("");
  const [checking, setChecking] = useState(false);
  return (
    <main class="page">
      <form
        class="token-prompt"
        aria-label="Sign in with a token"
        onSubmit={(e) => {
          e.preventDefault();
          setChecking(true);
          void signIn(token).finally(() => setChecking(false));
        }}
      >
        <h2>This server requires a token</h2>
        <p class="muted">
          Paste an operator token to watch the fleet, or an admin token to also cancel rollouts and release runners. It is kept in this tab
          only, until you sign out or close the tab.
        </p>
        {error && <Notice kind="error">Token refused: {error}</Notice>}
        <input
          type="password"
          autoComplete="off"
          spellcheck={false}
          aria-label="Token"
          placeholder="Token"
          value={token}
          onInput={(e) => setToken((e.currentTarget as HTMLInputElement).value)}
          autoFocus
        />
        <button type="submit" disabled={checking}>
          {checking ? "Checking…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
