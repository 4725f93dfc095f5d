import { defineCommand } from "citty";
import { appAndRest, client, clientArgs, out, printJson } from "./client.ts";

export const restartCommand = defineCommand({
  meta: { name: "restart", description: "Restart an app's processes (new jails, same release)" },
  args: {
    ...clientArgs,
    app: { type: "positional", required: false, description: "app name (default: the lj git remote's)" },
  },
  async run({ args }) {
    const { app } = appAndRest(args._ as string[]);
    const r = await client(args).json<{ processes: { name: string; state: string }[] }>(
      "POST",
      `/api/v1/apps/${app}/restart`,
    );
    if (args.json) return printJson(r);
    out(`restarted ${app}: ${r.processes.map((p) => `${p.name} ${p.state}`).join(", ") || "no processes"}`);
  },
});
