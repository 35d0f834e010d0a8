import { defineConfig } from "vite";

// The page is served by the Runnerline server itself (src/server/transport/web-page.ts);
// `npm run build:web` writes web/dist, which is committed and checked by scripts/check-web.mjs.
export default defineConfig({
  root: import.meta.dirname,
  base: "/",
  logLevel: "warn",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // One small bundle: no source maps or module preload polyfill to ship.
    sourcemap: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
});
