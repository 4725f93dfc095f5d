import { defineCommand } from "citty";
import { usageError } from "../errors.ts";
import { client, clientArgs, failure } from "./client.ts";

export const runCommand = defineCommand({
  meta: {
    name: "run",
    description: "Run a one-off command in a fresh jail of the app's release: lj run APP -- CMD",
  },
  args: { ...clientArgs, app: { type: "positional", required: true, description: "app name" } },
  async run({ args, rawArgs }) {
    const dd = rawArgs.indexOf("--");
    const words = dd >= 0 ? rawArgs.slice(dd + 1) : (args._ as string[]).slice(1);
    if (words.length === 0) throw usageError("give the command after --, e.g. lj run APP -- ls");
    const command =
      words.length === 1 ? words[0]! : words.map((w) => `'${w.replace(/'/g, "'\\''")}'`).join(" ");
    const res = await client(args).request("POST", `/api/v1/apps/${args.app}/run`, { command });
    if (!res.ok || !res.body) throw await failure(res);
    const dec = new TextDecoder();
    let buf = "";
    let status = 1;
    for await (const chunk of res.body) {
      buf += dec.decode(chunk, { stream: true });
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const frame = JSON.parse(buf.slice(0, nl)) as {
          out?: string;
          err?: string;
          exit?: number;
          error?: string;
        };
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
        if (args.json) process.stdout.write(`${JSON.stringify(frame)}\n`);
        else if (frame.out !== undefined) process.stdout.write(frame.out);
        else if (frame.err !== undefined) process.stderr.write(frame.err);
        if (frame.error && !args.json) process.stderr.write(`lj run: ${frame.error}\n`);
        if (frame.exit !== undefined) status = frame.exit;
      }
    }
    process.exitCode = status;
  },
});
