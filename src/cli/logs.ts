import { defineCommand } from "citty";
import { client, clientArgs, failure, pipeToStdout } from "./client.ts";

export const logsCommand = defineCommand({
  meta: { name: "logs", description: "Show an app's logs (processes, router, platform); -f follows" },
  args: {
    ...clientArgs,
    app: { type: "positional", required: true, description: "app name" },
    follow: { type: "boolean", alias: "f", description: "keep streaming new lines" },
    lines: { type: "string", alias: "n", description: "lines of history", default: "100" },
  },
  async run({ args }) {
    const q = new URLSearchParams({
      lines: args.lines,
      ...(args.follow ? { follow: "1" } : {}),
      ...(args.json ? { format: "json" } : {}),
    });
    const res = await client(args).request("GET", `/api/v1/apps/${args.app}/logs?${q}`);
    if (!res.ok) throw await failure(res);
    await pipeToStdout(res);
  },
});
