/** Compiles src/ to dist/ and stamps it; with `ifStale`, only when dist/ is older than src/ (scripts/build.mjs). */
export function build(options?: { ifStale?: boolean; quiet?: boolean }): void;
