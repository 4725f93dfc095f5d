import { defineCommand } from "citty";
import { client, clientArgs, mb, out, printJson, table } from "./client.ts";

interface Proc {
  name: string;
  release: number;
  state: string;
  restarts: number;
  address: string | null;
  memoryBytes: number | null;
  startedAt: string | null;
  lastExit: string | null;
}

export const psCommand = defineCommand({
  meta: { name: "ps", description: "Show an app's processes: state, restarts, memory" },
  args: { ...clientArgs, app: { type: "positional", required: true, description: "app name" } },
  async run({ args }) {
    const r = await client(args).json<{ processes: Proc[] }>("GET", `/api/v1/apps/${args.app}/ps`);
    if (args.json) return printJson(r);
    if (r.processes.length === 0) return out("no processes");
    table([
      ["PROCESS", "RELEASE", "STATE", "RESTARTS", "MEMORY", "ADDRESS", "LAST EXIT"],
      ...r.processes.map((p) => [
        p.name,
        `v${p.release}`,
        p.state,
        String(p.restarts),
        mb(p.memoryBytes),
        p.address ?? "-",
        p.lastExit ?? "-",
      ]),
    ]);
  },
});
