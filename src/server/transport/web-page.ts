import { existsSync, readdirSync, readFileSync } from "node:fs";
import type http from "node:http";
import { extname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { HttpRoutes } from "./http-server.js";

/** Where `npm run build:web` writes the page (committed; see scripts/check-web.mjs). */
export const WEB_DIST_DIR = fileURLToPath(new URL("../../../web/dist", import.meta.url));

/**
 * Paths the single-page app routes itself (see web/src/route.ts); the server
 * answers them with index.html so a shared link or a reload works.
 */
const APP_ROUTE = /^\/(?:runners|rollouts)(?:\/[^/]+)?\/?$/;

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  // Everything the page loads comes from this server; style attributes are set by the UI code.
  "content-security-policy":
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
};

interface StaticFile {
  status?: number;
  body: Buffer;
  gzipped?: Buffer;
  headers: Record<string, string>;
}

/**
 * Serves the web page: `/` and the app's routes answer index.html (never
 * cached, so a new build shows at once), files under the build folder answer
 * themselves (those under /assets/ carry a content hash in their name and are
 * cached for a year). Everything else — the RPC paths, unknown paths — falls
 * through to the RPC handler, which answers 404 for what it does not know.
 * The files are read once at start: the build is small and never changes
 * under a running server.
 */
export function webPageRoutes(dir: string = WEB_DIST_DIR): HttpRoutes {
  const files = loadFiles(dir);
  const index = files.get("/index.html") ?? missingBuild(dir);
  return (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const raw = (req.url ?? "").split("?", 1)[0]!;
    // Ids in app routes are percent-encoded (an id may hold "/"): match before decoding.
    if (raw === "/" || APP_ROUTE.test(raw)) {
      send(req, res, index);
      return true;
    }
    const path = filePathOf(raw);
    const file = path === undefined ? undefined : files.get(path);
    if (file === undefined) return false;
    send(req, res, file);
    return true;
  };
}

function send(req: http.IncomingMessage, res: http.ServerResponse, file: StaticFile): void {
  const gzip = file.gzipped !== undefined && /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
  const body = gzip ? file.gzipped! : file.body;
  res.writeHead(file.status ?? 200, {
    ...file.headers,
    ...(file.gzipped !== undefined ? { vary: "accept-encoding" } : {}),
    ...(gzip ? { "content-encoding": "gzip" } : {}),
    "content-length": String(body.length),
  });
  res.end(req.method === "HEAD" ? undefined : body);
}

/** The decoded path, or undefined for one that cannot name a file (bad escapes, dot segments). */
function filePathOf(raw: string): string | undefined {
  try {
    const path = decodeURIComponent(raw);
    return path.split("/").some((segment) => segment === "." || segment === "..") ? undefined : path;
  } catch {
    return undefined;
  }
}

function loadFiles(dir: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  if (!existsSync(dir)) return files;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = join(entry.parentPath, entry.name);
    const urlPath = "/" + relative(dir, full).split(sep).join("/");
    const body = readFileSync(full);
    const type = CONTENT_TYPES[extname(entry.name)] ?? "application/octet-stream";
    const immutable = urlPath.startsWith("/assets/");
    const compressible = /^text\/|svg|json/.test(type);
    const gzipped = compressible ? gzipSync(body, { level: 9 }) : undefined;
    files.set(urlPath, {
      body,
      gzipped: gzipped !== undefined && gzipped.length < body.length ? gzipped : undefined,
      headers: {
        "content-type": type,
        "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
        ...SECURITY_HEADERS,
      },
    });
  }
  return files;
}

/** A clone without a build still serves the API; the page says how to build it. */
function missingBuild(dir: string): StaticFile {
  return {
    status: 503,
    body: Buffer.from(`The web page is not built (${dir} is missing): run \`npm run build:web\`.\n`),
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-cache", ...SECURITY_HEADERS },
  };
}
