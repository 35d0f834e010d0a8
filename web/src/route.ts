// Client-side routes; the server answers the same paths with index.html
// (APP_ROUTE in src/server/transport/web-page.ts).
import { useEffect, useState } from "preact/hooks";

export type Route =
  | { page: "runners"; workerId?: string; query: string }
  | { page: "rollouts"; rolloutId?: string; query: string };

export function parseRoute(pathname: string, search: string): Route {
  const query = search.startsWith("?") ? search.slice(1) : search;
  const [, section = "", id] = pathname.split("/");
  const decoded = id === undefined || id === "" ? undefined : safeDecode(id);
  if (section === "rollouts") return { page: "rollouts", rolloutId: decoded, query };
  return { page: "runners", workerId: decoded, query };
}

export function runnerPath(workerId: string, query = ""): string {
  return `/runners/${encodeURIComponent(workerId)}${query ? `?${query}` : ""}`;
}

export function rolloutPath(rolloutId: string, query = ""): string {
  return `/rollouts/${encodeURIComponent(rolloutId)}${query ? `?${query}` : ""}`;
}

/** pushState for links, replaceState for table state changes (so Back leaves the page, not the last keystroke). */
export function navigate(href: string, replace = false): void {
  if (href === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", href);
  else history.pushState(null, "", href);
  dispatchEvent(new PopStateEvent("popstate"));
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.pathname, location.search));
  useEffect(() => {
    const update = () => setRoute(parseRoute(location.pathname, location.search));
    addEventListener("popstate", update);
    return () => removeEventListener("popstate", update);
  }, []);
  return route;
}

/** Left clicks on links navigate in place; modified clicks open tabs as usual. */
export function onLinkClick(event: MouseEvent): void {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const href = (event.currentTarget as HTMLAnchorElement).getAttribute("href");
  if (href === null || !href.startsWith("/")) return;
  event.preventDefault();
  navigate(href);
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
