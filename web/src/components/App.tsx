import { useRoute } from "../route.js";
import { Header } from "./Header.js";
import { RolloutsPage } from "./RolloutsPage.js";
import { RunnersPage } from "./RunnersPage.js";

export function App() {
  const route = useRoute();
  return (
    <>
      <Header route={route} />
      {route.page === "rollouts" ? (
        <RolloutsPage query={route.query} rolloutId={route.rolloutId} />
      ) : (
        <RunnersPage query={route.query} workerId={route.workerId} />
      )}
    </>
  );
}
