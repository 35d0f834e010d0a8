#!/usr/bin/env node
// Loads the TypeScript CLI through tsx's loader in this same process, so the
// command needs no build step and signals reach it directly.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
