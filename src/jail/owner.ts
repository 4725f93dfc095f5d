/**
 * Who owns a jail: the process that made it, named "<pid>.<start time>" so that a reused pid
 * never passes for a dead owner. Jail ids, cgroup names, leases and build disks carry it, and
 * `lj gc` collects what a dead owner left.
 */
import { readFileSync } from "node:fs";
import { shimProcStart } from "./ffi.ts";

/** What lightjail reads of a Linux process's /proc/PID/stat (proc(5)). */
export interface ProcStat {
  /** The command name, without its parentheses. */
  comm: string;
  /** R, S, D, Z, ... */
  state: string;
  ppid: number;
  /** User and system CPU time, in clock ticks (USER_HZ). */
  utime: number;
  stime: number;
  nice: number;
  /** Since boot, in clock ticks, as digits: with the pid, a process's identity. */
  startTime: string;
  /** The scheduling policy (SCHED_OTHER 0, SCHED_BATCH 3, ...). */
  policy: number;
}

/** A Linux process's /proc/PID/stat, or null when it is gone. */
export function procStat(pid: number): ProcStat | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // The command name may hold spaces and parentheses: the fields are counted from the last ")"
  // (f[0] is field 3, the state).
  const close = stat.lastIndexOf(")");
  if (close < 0) return null;
  const f = stat.slice(close + 2).split(" ");
  if (f.length < 39) return null;
  return {
    comm: stat.slice(stat.indexOf("(") + 1, close),
    state: f[0]!,
    ppid: Number(f[1]),
    utime: Number(f[11]),
    stime: Number(f[12]),
    nice: Number(f[16]),
    startTime: f[19]!,
    policy: Number(f[38]),
  };
}

let ownerTag: string | undefined;
let seq = 0;

/** "<pid>.<start time>" of this process: unique across pid reuse. */
export function ownerId(): string {
  if (ownerTag) return ownerTag;
  ownerTag = `${process.pid}.${processStartTime(process.pid)}`;
  return ownerTag;
}

/**
 * A process's start time, as digits (its identity across pid reuse); null when it is gone.
 * Linux: /proc/PID/stat's starttime. FreeBSD has no /proc: the shim reads kern.proc.pid.
 */
export function processStartTime(
  pid: number,
  platform: string = process.platform,
  procStart: (pid: number) => bigint | null = shimProcStart,
): string | null {
  if (platform === "freebsd") {
    try {
      return procStart(pid)?.toString() ?? null;
    } catch {
      return null;
    }
  }
  return procStat(pid)?.startTime ?? null;
}

/**
 * The state letter of a process (R, S, D, Z, ...), or null when there is none. An exited
 * process its parent has not reaped yet is a zombie: its pid and start time still match, but
 * it owns nothing any more (a `kill -9`ed server under a parent that has not waited for it).
 */
export function processState(pid: number): string | null {
  if (process.platform === "freebsd") {
    const r = Bun.spawnSync(["ps", "-o", "stat=", "-p", String(pid)]);
    return r.exitCode === 0 ? r.stdout.toString().trim().charAt(0) || null : null;
  }
  return procStat(pid)?.state ?? null;
}

/** True while the owner "<pid>.<start time>" runs: same start time, and not a zombie. */
export function ownerLive(pid: number, start: string | undefined): boolean {
  if (!(pid > 0) || !start) return false;
  const ended = (state: string | null) => state === null || state === "Z" || state === "X";
  if (process.platform === "freebsd") return processStartTime(pid) === start && !ended(processState(pid));
  // Linux: both from one reading of /proc/PID/stat.
  const st = procStat(pid);
  return st !== null && st.startTime === start && !ended(st.state);
}

/** True while the owner an id "<pid>.<start time>" names (as ownerId() writes it) runs. */
export function ownerIdLive(owner: string | undefined): boolean {
  const m = /^(\d+)\.(\d+)$/.exec(owner ?? "");
  return !!m && ownerLive(Number(m[1]), m[2]);
}

/** True while the owner of a jail id "<owner pid>.<owner start time>.<n>" runs. */
export function jailOwnerLive(id: string): boolean {
  const m = /^(\d+\.\d+)\.\d+$/.exec(id);
  return !!m && ownerIdLive(m[1]);
}

export function newJailId(): string {
  seq += 1;
  return `${ownerId()}.${seq}`;
}
