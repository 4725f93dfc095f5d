import { defineCommand } from "citty";
import { client, clientArgs, out, printJson } from "./client.ts";

export const restartCommand = defineCommand({
  meta: { name: "restart", description: "Restart an app's processes (new jails, same release)" },
  args: { ...clientArgs, app: { type: "positional", required: true, description: "app name" } },
  async run({ args }) {
    const r = await client(args).json<{ processes: { name: string; state: string }[] }>(
      "POST",
      `/api/v1/apps/${args.app}/restart`,
    );
    if (args.json) return printJson(r);
    out(
      `restarted ${args.app}: ${r.processes.map((p) => `${p.name} ${p.state}`).join(", ") || "no processes"}`,
    );
  },
});
