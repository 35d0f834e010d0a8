import type { DescService } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { authInterceptor } from "./interceptor.js";
import { methodRules } from "./policy.js";
import { loadTokenFile, type TokenTable } from "./tokens.js";

export interface Auth {
  /** Installed on both transports; empty when the server runs without an auth file. */
  interceptors: Interceptor[];
  /**
   * Re-reads the auth file (on SIGHUP). New calls see the new tokens at once;
   * streams already open keep running. A file that does not parse keeps the
   * old tokens and logs why.
   */
  reload(): Promise<void>;
}

export async function setupAuth(options: {
  authFile: string | undefined;
  services: readonly DescService[];
  attemptWorker: (attemptId: string) => Promise<string | undefined>;
  log: (line: string) => void;
}): Promise<Auth> {
  const { authFile, log } = options;
  if (authFile === undefined) {
    return { interceptors: [], reload: async () => log("auth: no --auth-file; nothing to reload") };
  }
  let tokens: TokenTable = await loadTokenFile(authFile);
  log(`auth: ${tokens.size} tokens from ${authFile}`);
  const interceptor = authInterceptor({
    tokens: () => tokens,
    rules: methodRules(options.services),
    attemptWorker: options.attemptWorker,
    log,
  });
  return {
    interceptors: [interceptor],
    async reload() {
      try {
        tokens = await loadTokenFile(authFile);
        log(`auth: reloaded ${tokens.size} tokens from ${authFile}`);
      } catch (error) {
        log(`auth: reload failed, keeping the previous ${tokens.size} tokens: ${(error as Error).message}`);
      }
    },
  };
}

/** Loopback hosts: the only ones a server without tokens may listen on unless told otherwise. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  return bare === "localhost" || bare === "::1" || /^127\.\d+\.\d+\.\d+$/.test(bare) || bare === "::ffff:127.0.0.1";
}
