import { defineCommand } from "citty";
import { usageError } from "../errors.ts";
import { client, clientArgs, out, printJson } from "./client.ts";

/** TYPE=N, TYPE=N:MEMORYmb or TYPE:memory=MB / TYPE:pids=N. */
export function parseScale(
  items: string[],
): Record<string, { count?: number; memoryMb?: number; pids?: number }> {
  const out: Record<string, { count?: number; memoryMb?: number; pids?: number }> = {};
  for (const it of items) {
    const m = /^([a-z][a-z0-9_-]*)(?::(memory|pids))?=(\d+)$/.exec(it);
    if (!m) throw usageError(`"${it}" is not TYPE=COUNT (or TYPE:memory=MB, TYPE:pids=N)`);
    const [, type, field, n] = m;
    out[type!] ??= {};
    const e = out[type!]!;
    if (field === "memory") e.memoryMb = Number(n);
    else if (field === "pids") e.pids = Number(n);
    else e.count = Number(n);
  }
  return out;
}

export const scaleCommand = defineCommand({
  meta: { name: "scale", description: "Scale process types: lj scale APP web=2 worker=1 [web:memory=256]" },
  args: { ...clientArgs, app: { type: "positional", required: true, description: "app name" } },
  async run({ args }) {
    const items = (args._ as string[]).slice(1);
    if (items.length === 0) throw usageError("give at least one TYPE=COUNT");
    const r = await client(args).json<{
      formation: Record<string, { count: number }>;
      processes: { name: string; state: string }[];
    }>("PATCH", `/api/v1/apps/${args.app}/formation`, parseScale(items));
    if (args.json) return printJson(r);
    out(
      `formation: ${Object.entries(r.formation)
        .map(([t, f]) => `${t}=${f.count}`)
        .join(" ")}`,
    );
    for (const p of r.processes) out(`  ${p.name} ${p.state}`);
  },
});
