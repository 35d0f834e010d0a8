// A runner as a project outside this repository writes it: plain JavaScript, the installed package only.
import { Runner } from "runnerline/client";

const [address, workerId] = process.argv.slice(2);
const runner = new Runner({ address, workerId, capacity: 2 });
process.once("SIGTERM", () => void runner.stop({ drain: true }));

await runner.run(async (job) => {
  const { question } = job.input;
  if (question === "fail") throw new Error("cannot answer fail");
  const answer = question.split("+").reduce((sum, term) => sum + Number(term), 0);
  return { answer, reward: answer === 5 ? 1 : 0 };
});
console.log("runner stopped");
