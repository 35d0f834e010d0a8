#!/usr/bin/env node
import { runnerCommand } from "./runner-command.js";
import { serveCommand } from "./serve-command.js";

const USAGE = `usage: runnerline <command> [options]

commands:
  serve    run the server (gRPC and HTTP listeners)
  runner   join this machine to the fleet: run a command once per assignment

'runnerline <command> --help' shows a command's options.`;

const commands: Record<string, (argv: string[]) => Promise<number>> = {
  serve: serveCommand,
  runner: runnerCommand,
};

const [name, ...argv] = process.argv.slice(2);
const command = name === undefined ? undefined : commands[name];
if (command === undefined) {
  console.error(USAGE);
  process.exitCode = name === "--help" || name === "-h" ? 0 : 2;
} else {
  command(argv).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(`runnerline ${name}: ${error instanceof Error ? error.message : String(error)}`);
      process.exit(1);
    },
  );
}
