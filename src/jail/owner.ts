/**
 * Who owns a jail: the process that made it, named "<pid>.<start time>" so that a reused pid
 * never passes for a dead owner. Jail ids, cgroup names, leases and build disks carry it, and
 * `lj gc` collects what a dead owner left.
 */
import { readFileSync } from "node:fs";
import { shimProcStart } from "./ffi.ts";

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
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 22 (starttime) counts from after the parenthesised command name.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19] ?? null;
  } catch {
    return null;
  }
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
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.charAt(stat.lastIndexOf(")") + 2) || null;
  } catch {
    return null;
  }
}

/** True while the owner "<pid>.<start time>" runs: same start time, and not a zombie. */
export function ownerLive(pid: number, start: string | undefined): boolean {
  if (!(pid > 0) || !start || processStartTime(pid) !== start) return false;
  const state = processState(pid);
  return state !== null && state !== "Z" && state !== "X";
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
