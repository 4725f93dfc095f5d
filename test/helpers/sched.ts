import { readFileSync } from "node:fs";

/** SCHED_OTHER and SCHED_BATCH, as /proc/PID/stat's policy field gives them. */
export const SCHED_OTHER = 0;
export const SCHED_BATCH = 3;

/** A process's nice value and scheduling policy (proc(5): stat fields 19 and 41). */
export function schedOf(pid: number): { nice: number; policy: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { nice: Number(f[16]), policy: Number(f[38]) };
}
