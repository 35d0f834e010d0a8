#!/usr/bin/env node
import { readFileSync } from "node:fs";
import type { Command, CommanderError } from "commander";
import type { GlobalOptions } from "./operator/connection.js";

/**
 * `runnerline`: the server (`serve`), the runner (`runner`), and the
 * operator commands that talk to a running server over gRPC. Exit codes:
 * 0 ok, 1 usage, 2 server error (code and message on stderr), 3 `rollouts
 * wait` timed out, 4 a rollout it waited for ended FAILED or CANCELLED.
 *
 * This module imports nothing at load time but node:fs: `--version` answers
 * from package.json alone, and every other path loads only what it needs
 * (docs/benchmarks.md, "CLI cold start").
 */
const version = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string })
  .version;

/**
 * `serve` and `runner` parse their own flags (serve-command.ts, runner-command.ts); each loads only what it needs,
 * so a runner starts without the server's or the operator commands' modules.
 */
const ownParsers: Record<string, (argv: string[]) => Promise<number>> = {
  serve: async (argv) => (await import("./serve-command.js")).serveCommand(argv),
  runner: async (argv) => (await import("./runner-command.js")).runnerCommand(argv),
};

async function program(): Promise<Command> {
  const [{ Command, Option }, { DEFAULT_SERVER }, { serveProgram }] = await Promise.all([
    import("commander"),
    import("./operator/connection.js"),
    import("./serve-command.js"),
  ]);
  const [{ workersCommand }, { rolloutsCommand }, { attemptsCommand }, { summaryCommand }] = await Promise.all([
    import("./operator/workers-command.js"),
    import("./operator/rollouts-command.js"),
    import("./operator/attempts-command.js"),
    import("./operator/summary-command.js"),
  ]);
  const root = new Command("runnerline")
    .description("Fleet tracking and work dispatch for rollout runners")
    .version(version, "-V, --version", "print the version")
    .addOption(new Option("--server <HOST:PORT>", "server to talk to (gRPC)").env("RUNNERLINE_SERVER").default(DEFAULT_SERVER))
    .option("--token <TOKEN>", "bearer token (env RUNNERLINE_TOKEN)")
    .option("--tls-ca <PEM>", "CA of the server's certificate: connect with TLS (env RUNNERLINE_TLS_CA)")
    .option("--tls-cert <PEM>", "client certificate for mutual TLS, with --tls-key (env RUNNERLINE_TLS_CLIENT_CERT)")
    .option("--tls-key <PEM>", "client key for mutual TLS (env RUNNERLINE_TLS_CLIENT_KEY)")
    .option("--json", "print one JSON object per line", false)
    .option("--wide", "more columns, absolute times", false)
    .showHelpAfterError("(add --help for usage)")
    .exitOverride();
  const globals = (command: Command) => command.optsWithGlobals<GlobalOptions>();
  // Listed for help; their arguments go to their own parsers below.
  root.addCommand(serveProgram().helpOption(false).allowUnknownOption());
  root.command("runner").description("join this machine to the fleet: run a command once per assignment").helpOption(false).allowUnknownOption();
  for (const command of [workersCommand(globals), rolloutsCommand(globals), attemptsCommand(globals), summaryCommand(globals)]) {
    root.addCommand(command);
  }
  // Usage errors of every subcommand end the same way: message on stderr, exit 1.
  const exitOnUsage = (command: Command) => {
    command.exitOverride();
    command.commands.forEach(exitOnUsage);
  };
  exitOnUsage(root);
  return root;
}

async function main(argv: string[]): Promise<number> {
  if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-V")) {
    process.stdout.write(`${version}\n`);
    return 0;
  }
  const [{ CommanderError }, { EXIT, reportError }] = await Promise.all([
    import("commander"),
    import("./operator/connection.js"),
  ]);
  const [name, ...rest] = argv;
  const own = name === undefined ? undefined : ownParsers[name];
  if (own !== undefined) {
    try {
      return await own(rest);
    } catch (error) {
      if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : reportUsage(name!, error, EXIT.usage);
      throw error;
    }
  }
  if (argv.length === 0) {
    process.stderr.write((await program()).helpInformation());
    return EXIT.usage;
  }
  try {
    await (await program()).parseAsync(argv, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    return reportError(error);
  }
}

/** A flag value commander accepted but the command refused (InvalidArgumentError thrown after parsing). */
function reportUsage(name: string, error: CommanderError, usage: number): number {
  if (error.code === "commander.invalidArgument") process.stderr.write(`runnerline ${name}: ${error.message}\n`);
  return usage;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`runnerline: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1); // EXIT.usage
  },
);
