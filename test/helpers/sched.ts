import { procStat } from "../../src/jail/owner.ts";

/** SCHED_OTHER and SCHED_BATCH, as /proc/PID/stat's policy field gives them. */
export const SCHED_OTHER = 0;
export const SCHED_BATCH = 3;

/** A live process's nice value and scheduling policy. */
export function schedOf(pid: number): { nice: number; policy: number } {
  const st = procStat(pid);
  if (!st) throw new Error(`process ${pid} is gone`);
  return { nice: st.nice, policy: st.policy };
}
