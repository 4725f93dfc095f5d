/**
 * What a jail's cgroups say about it: whether the OOM killer fired, memory charged, forks
 * refused and CPU throttled, and which of its processes holds the most descriptors.
 */
import { readdirSync, readFileSync } from "node:fs";
import oomTable from "../../zig/src/oom-evidence.txt" with { type: "text" };
import { cgroupLayout, readText } from "./cgroup.ts";
import { type CgroupDir, CgroupKind } from "./spec.ts";
import { tableRows } from "./table.ts";

/** The number on a keyed file's line `name N` (memory.events, memory.oom_control), or 0. */
export function counter(text: string, name: string): number {
  const at = `\n${text}`.indexOf(`\n${name} `); // where that line starts in `text`
  if (at < 0) return 0;
  const end = text.indexOf("\n", at);
  return Number(text.slice(at + name.length + 1, end < 0 ? undefined : end)) || 0;
}

/** One piece of evidence of an OOM kill, from the table the native ljspawn reads too. */
const OOM_EVIDENCE = tableRows(oomTable).map(([kind, file, name, when]) => ({
  kind: CgroupKind[kind as keyof typeof CgroupKind],
  file: file!,
  counter: name === "-" ? null : name!,
  onlyAfterSigkill: when === "sigkill",
}));

/**
 * True when the jail ran out of memory: the kernel's OOM killer fired in its memory cgroup
 * (zig/src/oom-evidence.txt says which counters show it).
 */
export function oomKilled(dirs: CgroupDir[], diedBySigkill = false): boolean {
  // Synchronous: a cgroup file is read from kernel memory in microseconds, far less than a
  // round trip through the thread pool would add to every jail's end.
  for (const d of dirs) {
    for (const e of OOM_EVIDENCE) {
      if (e.kind !== d.kind || (e.onlyAfterSigkill && !diedBySigkill)) continue;
      try {
        const text = readText(d.dir, e.file);
        if ((e.counter === null ? Number(text) : counter(text, e.counter)) > 0) return true;
      } catch {
        // The directory may never have been created (setup failed before it).
      }
    }
  }
  return false;
}

/** Bytes charged to the memory cgroup among a jail's cgroup directories (null: it has none). */
export function memoryUsage(dirs: readonly string[]): number | null {
  const l = cgroupLayout();
  const base = l?.version === 2 ? l.unified : l?.memory;
  const dir = base && dirs.find((d) => d.startsWith(`${base}/`));
  if (!dir) return null;
  return Number(readText(dir, l?.version === 2 ? "memory.current" : "memory.usage_in_bytes"));
}

/**
 * What a jail's pids and CPU limits held back so far. The counters only grow while its cgroups
 * live, and cgroups made ahead of time are used again, so a caller compares two readings.
 */
export interface LimitCounters {
  /** Forks refused at the pids limit (pids.events `max`). */
  pidsRefused: number;
  /** Scheduler periods in which the jail had used up its CPU quota, and how long it waited. */
  throttled: number;
  throttledUs: number;
}

/** Reads a jail's limit counters (v2: its one cgroup; v1: its pids and cpu hierarchies). */
export function limitCounters(dirs: readonly string[]): LimitCounters {
  const l = cgroupLayout();
  if (!l) return { pidsRefused: 0, throttled: 0, throttledUs: 0 };
  const under = (base: string | undefined) => (base ? dirs.find((d) => d.startsWith(`${base}/`)) : undefined);
  const pidsDir = under(l.version === 2 ? l.unified : l.pids);
  const cpuDir = under(l.version === 2 ? l.unified : l.cpu);
  return parseLimitCounters(
    l.version,
    pidsDir ? readOr(pidsDir, "pids.events") : "",
    cpuDir ? readOr(cpuDir, "cpu.stat") : "",
  );
}

/** The counters from pids.events and cpu.stat texts (the same names in v1 and v2 but one). */
export function parseLimitCounters(version: 1 | 2, pidsEvents: string, cpuStat: string): LimitCounters {
  return {
    pidsRefused: counter(pidsEvents, "max"),
    throttled: counter(cpuStat, "nr_throttled"),
    // v2 counts the time in microseconds, v1 in nanoseconds.
    throttledUs:
      version === 2
        ? counter(cpuStat, "throttled_usec")
        : Math.round(counter(cpuStat, "throttled_time") / 1000),
  };
}

/** A cgroup file's text, or "" when it is not there (not made yet, or already gone). */
function readOr(dir: string, file: string): string {
  try {
    return readText(dir, file);
  } catch {
    return "";
  }
}

/** The descriptors the jail's busiest process holds, and its RLIMIT_NOFILE (soft). */
export interface FdUse {
  pid: number;
  open: number;
  limit: number | null;
}

/**
 * Finds the jail's process with the most open descriptors (its processes are those in its
 * cgroups: the keeper and everything the payload started). Null when none is left. Costs a
 * directory read per process, and one more read for the busiest one's limit.
 */
export function fdUse(dirs: readonly string[]): FdUse | null {
  const first = dirs[0];
  if (!first) return null;
  let best: FdUse | null = null;
  for (const line of readOr(first, "cgroup.procs").split("\n")) {
    const pid = Number(line);
    if (!line || !Number.isInteger(pid)) continue;
    let open: number;
    try {
      open = readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      continue; // it ended meanwhile
    }
    if (!best || open > best.open) best = { pid, open, limit: null };
  }
  if (best) best.limit = openFilesLimit(best.pid);
  return best;
}

/** The soft "Max open files" of a process (null: gone, or unlimited). */
function openFilesLimit(pid: number): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
