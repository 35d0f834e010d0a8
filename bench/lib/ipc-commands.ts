/**
 * The child side of the bench's IPC protocol (see LoadWorker in processes.ts):
 * numbered requests name a command; each answer carries its result or error.
 * The process exits when the bench goes away.
 */
export function serveCommands(commands: Record<string, (args: never) => unknown>): void {
  process.on("message", async (message: { id: number; command: string }) => {
    const handler = commands[message.command];
    try {
      if (handler === undefined) throw new Error(`unknown command ${message.command}`);
      const result = await handler(message as never);
      process.send!({ id: message.id, ok: true, result });
    } catch (error) {
      process.send!({ id: message.id, ok: false, error: error instanceof Error ? error.message : String(error) });
    }
  });
  process.on("disconnect", () => process.exit(0));
}
