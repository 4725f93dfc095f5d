import { defineCommand } from "citty";
import type { LimitsSeen } from "../paas/supervisor.ts";
import { appAndRest, client, clientArgs, mb, out, printJson, table } from "./client.ts";

interface Proc {
  name: string;
  release: number;
  state: string;
  restarts: number;
  address: string | null;
  memoryBytes: number | null;
  startedAt: string | null;
  lastExit: string | null;
  node?: string | null;
  limits?: LimitsSeen | null;
}

/** Descriptors held by the busiest process of a run, against its limit ("-": not sampled). */
export function fdColumn(l: LimitsSeen | null | undefined): string {
  if (!l || l.fds === null) return "-";
  return `${l.fds}/${l.fdLimit ?? "?"}`;
}

/** The limits a run ran into, shortest first ("-": none). */
export function limitsColumn(l: LimitsSeen | null | undefined): string {
  if (!l) return "-";
  const hit: string[] = [];
  if (l.pidsRefused > 0) hit.push(`pids (${l.pidsRefused} forks refused)`);
  if (l.cpuThrottled > 0)
    hit.push(`cpu (throttled ${l.cpuThrottled}x, ${(l.cpuThrottledMs / 1000).toFixed(1)} s)`);
  if (l.fdsExhausted) hit.push("fds (all used)");
  return hit.length ? hit.join(", ") : "-";
}

export const psCommand = defineCommand({
  meta: {
    name: "ps",
    description: "Show an app's processes: state, restarts, memory, descriptors, limits hit",
  },
  args: {
    ...clientArgs,
    app: { type: "positional", required: false, description: "app name (default: the lj git remote's)" },
  },
  async run({ args }) {
    const { app } = appAndRest(args._ as string[]);
    const r = await client(args).json<{ processes: Proc[] }>("GET", `/api/v1/apps/${app}/ps`);
    if (args.json) return printJson(r);
    if (r.processes.length === 0) return out("no processes");
    // Under the Kubernetes scheduler every process has a node.
    const nodes = r.processes.some((p) => p.node !== undefined);
    const rows = [
      ["PROCESS", "RELEASE", "STATE", "RESTARTS", "MEMORY", "FDS", "ADDRESS", "LIMITS HIT", "LAST EXIT"],
      ...r.processes.map((p) => [
        p.name,
        `v${p.release}`,
        p.state,
        String(p.restarts),
        mb(p.memoryBytes),
        fdColumn(p.limits),
        p.address ?? "-",
        limitsColumn(p.limits),
        p.lastExit ?? "-",
      ]),
    ];
    table(
      nodes ? rows.map((row, i) => [...row, i === 0 ? "NODE" : (r.processes[i - 1]!.node ?? "-")]) : rows,
    );
  },
});
