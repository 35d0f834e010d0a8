import { Fragment } from "preact";
import { useEffect } from "preact/hooks";
import { useAuth } from "../auth.js";
import { useRoute } from "../route.js";
import { refreshPermissions } from "../sign-in.js";
import { Header } from "./Header.js";
import { RolloutsPage } from "./RolloutsPage.js";
import { RunnersPage } from "./RunnersPage.js";
import { TokenPrompt } from "./TokenPrompt.js";

export function App() {
  const route = useRoute();
  const auth = useAuth();
  // A reload keeps the tab's token but not what it may do: ask again.
  useEffect(() => void refreshPermissions(), []);
  if (auth.prompt) {
    // No pages while there is no token: they would only fail, and keep failing.
    return (
      <>
        <header class="top">
          <span class="brand">Runnerline</span>
        </header>
        <TokenPrompt error={auth.error} />
      </>
    );
  }
  // Keyed by sign-in, so every page starts over (streams included) with the new token.
  return (
    <Fragment key={auth.generation}>
      <Header route={route} />
      {route.page === "rollouts" ? (
        <RolloutsPage query={route.query} rolloutId={route.rolloutId} />
      ) : (
        <RunnersPage query={route.query} workerId={route.workerId} />
      )}
    </Fragment>
  );
}
