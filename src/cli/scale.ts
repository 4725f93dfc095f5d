import { defineCommand } from "citty";
import { usageError } from "../errors.ts";
import type { FormationChange } from "../paas/formation.ts";
import { appAndRest, client, clientArgs, out, printJson } from "./client.ts";

const FIELDS: Record<string, keyof FormationChange> = {
  memory: "memoryMb",
  pids: "pids",
  cpus: "cpus",
  nofile: "nofile",
};

/** TYPE=N, or TYPE:memory=MB / TYPE:pids=N / TYPE:cpus=X / TYPE:nofile=N (the server checks ranges). */
export function parseScale(items: string[]): Record<string, FormationChange> {
  const out: Record<string, FormationChange> = {};
  for (const it of items) {
    const m = /^([a-z][a-z0-9_-]*)(?::(memory|pids|cpus|nofile))?=(\d+(?:\.\d+)?)$/.exec(it);
    if (!m || (m[2] !== "cpus" && m[3]!.includes(".")))
      throw usageError(
        `"${it}" is not TYPE=COUNT (or TYPE:memory=MB, TYPE:pids=N, TYPE:cpus=X, TYPE:nofile=N)`,
      );
    const [, type, field, n] = m;
    out[type!] ??= {};
    out[type!]![field ? FIELDS[field]! : "count"] = Number(n);
  }
  return out;
}

export const scaleCommand = defineCommand({
  meta: {
    name: "scale",
    description:
      "Scale process types: lj scale APP web=2 worker=1 [web:memory=256 web:cpus=0.5 web:nofile=4096]",
  },
  args: {
    ...clientArgs,
    app: { type: "positional", required: false, description: "app name (default: the lj git remote's)" },
  },
  async run({ args }) {
    const { app, rest: items } = appAndRest(args._ as string[], (w) => w.includes("="));
    if (items.length === 0) throw usageError("give at least one TYPE=COUNT");
    const r = await client(args).json<{
      formation: Record<string, { count: number }>;
      processes: { name: string; state: string }[];
    }>("PATCH", `/api/v1/apps/${app}/formation`, parseScale(items));
    if (args.json) return printJson(r);
    out(
      `formation: ${Object.entries(r.formation)
        .map(([t, f]) => `${t}=${f.count}`)
        .join(" ")}`,
    );
    for (const p of r.processes) out(`  ${p.name} ${p.state}`);
  },
});
