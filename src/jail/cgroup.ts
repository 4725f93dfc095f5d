/**
 * Per-jail cgroups, v1 (one hierarchy per controller) and v2 (unified). The jail creates its
 * own cgroup directories, writes its limits and joins them before anything runs (the shim's
 * child does it, off the event loop); this module decides where they go, reads what happened
 * (OOM kills, refused forks, CPU throttling) and removes them afterwards. Directory names carry
 * the owner's pid and start time, so `lj gc` can tell leftovers of a dead owner from a live jail.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmdirSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { mkdir, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { shimProcStart } from "./ffi.ts";
import { type CgroupDir, CgroupKind, type JailLimits } from "./spec.ts";

const BASE = "lightjail";

export interface CgroupLayout {
  version: 1 | 2;
  /** v2: the unified base; v1: the base under each controller's hierarchy. */
  unified?: string;
  memory?: string;
  pids?: string;
  cpu?: string;
}

let layout: CgroupLayout | undefined;

const readText = (dir: string, file: string) => readFileSync(join(dir, file), "utf8");

function parseMountinfo(text: string): { fstype: string; point: string; superOpts: string }[] {
  const out: { fstype: string; point: string; superOpts: string }[] = [];
  for (const line of text.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(" ");
    const right = line.slice(sep + 3).split(" ");
    out.push({ point: left[4] ?? "", fstype: right[0] ?? "", superOpts: right[2] ?? "" });
  }
  return out;
}

/** Finds the hierarchies from /proc/self/mountinfo; v1 controllers win over a hybrid v2. */
export function detectLayout(mountinfo = readFileSync("/proc/self/mountinfo", "utf8")): CgroupLayout | null {
  const mounts = parseMountinfo(mountinfo);
  const v1: CgroupLayout = { version: 1 };
  for (const m of mounts) {
    if (m.fstype !== "cgroup") continue;
    const opts = m.superOpts.split(",");
    if (opts.includes("memory")) v1.memory = join(m.point, BASE);
    if (opts.includes("pids")) v1.pids = join(m.point, BASE);
    if (opts.includes("cpu")) v1.cpu = join(m.point, BASE);
  }
  if (v1.memory || v1.pids || v1.cpu) return v1;
  const v2 = mounts.find((m) => m.fstype === "cgroup2");
  if (v2) return { version: 2, unified: join(v2.point, BASE) };
  return null;
}

/**
 * Moving a process between cgroups takes the kernel's threadgroup lock for writing, which
 * normally waits for an RCU grace period (about a millisecond on a VM) and stalls forks and
 * exits machine-wide meanwhile; every jail with limits moves one. The cgroup2 mount option
 * `favordynmods` (Linux 6.0+) makes that lock cheap to take for writing, for slightly dearer
 * forks: the trade a host that starts jails all the time wants. It is global to the kernel, so
 * one cgroup2 mount carrying it (the v2 root, or a hybrid host's unified hierarchy) covers v1
 * controllers too. Opt out with LJ_CGROUP_FAVORDYNMODS=0; kernels without it are left as is.
 */
export function favorDynamicMoves(mountinfo = readFileSync("/proc/self/mountinfo", "utf8")): string | null {
  if (process.env.LJ_CGROUP_FAVORDYNMODS === "0") return null;
  const v2 = parseMountinfo(mountinfo).find((m) => m.fstype === "cgroup2");
  if (!v2) return null;
  if (v2.superOpts.split(",").includes("favordynmods")) return v2.point;
  const r = Bun.spawnSync(["mount", "-o", "remount,favordynmods", v2.point], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  return r.exitCode === 0 ? v2.point : null;
}

/** Creates the lightjail base cgroups once per process (and enables v2 controllers). */
export function cgroupLayout(): CgroupLayout | null {
  if (layout) return layout;
  const mountinfo = readFileSync("/proc/self/mountinfo", "utf8");
  const found = detectLayout(mountinfo);
  if (!found) return null;
  favorDynamicMoves(mountinfo);
  if (found.version === 2 && found.unified) {
    const parent = join(found.unified, "..");
    mkdirSync(found.unified, { recursive: true });
    for (const dir of [parent, found.unified]) {
      const available = readText(dir, "cgroup.controllers").trim().split(/\s+/);
      const want = ["memory", "pids", "cpu"].filter((c) => available.includes(c));
      try {
        writeFileSync(join(dir, "cgroup.subtree_control"), want.map((c) => `+${c}`).join(" "));
      } catch (e) {
        throw new LjError("isolation", "cgroup", `cannot enable cgroup controllers in ${dir}: ${e}`, {
          hint: "lightjail needs a delegated cgroup v2 subtree (run as root, or under systemd Delegate=yes)",
        });
      }
    }
  } else {
    for (const d of [found.memory, found.pids, found.cpu]) if (d) mkdirSync(d, { recursive: true });
  }
  layout = found;
  return layout;
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

export function newJailId(): string {
  seq += 1;
  return `${ownerId()}.${seq}`;
}

/** The cgroup directories a jail with these limits creates and joins. */
export function cgroupDirsFor(id: string, limits: JailLimits | undefined): CgroupDir[] {
  if (!limits || !(limits.memoryBytes || limits.pids || limits.cpus)) return [];
  if (process.platform === "freebsd") return []; // the shim enforces limits with RCTL
  const l = cgroupLayout();
  if (!l) {
    throw new LjError("unavailable", "no-cgroups", "limits need cgroups, and none are mounted", {
      hint: "mount cgroup2 on /sys/fs/cgroup, or the v1 memory, pids and cpu controllers",
    });
  }
  if (l.version === 2) return [{ kind: CgroupKind.unified, dir: join(l.unified!, id) }];
  const dirs: CgroupDir[] = [];
  if (limits.memoryBytes) dirs.push(need(l.memory, "memory", id, CgroupKind.memory));
  if (limits.pids) dirs.push(need(l.pids, "pids", id, CgroupKind.pids));
  if (limits.cpus) dirs.push(need(l.cpu, "cpu", id, CgroupKind.cpu));
  return dirs;
}

function need(base: string | undefined, controller: string, id: string, kind: number): CgroupDir {
  if (!base) {
    throw new LjError(
      "unavailable",
      "no-cgroup-controller",
      `the cgroup ${controller} controller is not mounted`,
    );
  }
  return { kind, dir: join(base, id) };
}

/** The files a cgroup of this kind gets for these limits; `optional` ones may be missing. */
function limitFiles(kind: number, limits: JailLimits): { file: string; value: string; optional?: boolean }[] {
  const mem = limits.memoryBytes ? String(Math.floor(limits.memoryBytes)) : undefined;
  const pids = limits.pids ? String(Math.floor(limits.pids)) : undefined;
  const quota = limits.cpus ? String(Math.round(limits.cpus * 100_000)) : undefined;
  const out: { file: string; value: string; optional?: boolean }[] = [];
  if (kind === CgroupKind.unified) {
    if (mem) {
      out.push({ file: "memory.max", value: mem });
      out.push({ file: "memory.swap.max", value: "0", optional: true });
      out.push({ file: "memory.oom.group", value: "1", optional: true });
    }
    if (pids) out.push({ file: "pids.max", value: pids });
    if (quota) out.push({ file: "cpu.max", value: `${quota} 100000` });
  } else if (kind === CgroupKind.memory && mem) {
    out.push({ file: "memory.limit_in_bytes", value: mem });
    out.push({ file: "memory.memsw.limit_in_bytes", value: mem, optional: true });
  } else if (kind === CgroupKind.pids && pids) {
    out.push({ file: "pids.max", value: pids });
  } else if (kind === CgroupKind.cpu && quota) {
    out.push({ file: "cpu.cfs_period_us", value: "100000" });
    out.push({ file: "cpu.cfs_quota_us", value: quota });
  }
  return out;
}

/** A missing optional file (no swap accounting, an older kernel) is not an error. */
function tolerated(e: unknown, optional: boolean | undefined): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return !!optional && (code === "ENOENT" || code === "EACCES" || code === "EINVAL");
}

const existed = (e: unknown) => (e as NodeJS.ErrnoException).code === "EEXIST";

/**
 * Creates a jail's cgroups, writes its limits and moves its first process in. Runs off the
 * event loop while the jail sets itself up; the jail's payload starts only after this is done.
 * (Moving a process between cgroup v1 hierarchies waits for an RCU grace period: doing it here,
 * in parallel, keeps that wait out of a spawn's latency.)
 */
export async function joinCgroups(dirs: CgroupDir[], limits: JailLimits, pid: number): Promise<void> {
  await Promise.all(
    dirs.map(async (d) => {
      await mkdir(d.dir).catch((e) => {
        if (!existed(e)) throw e;
      });
      for (const l of limitFiles(d.kind, limits)) {
        await writeFile(join(d.dir, l.file), l.value).catch((e) => {
          if (!tolerated(e, l.optional)) throw e;
        });
      }
      await writeFile(join(d.dir, "cgroup.procs"), String(pid));
    }),
  );
}

/**
 * Cgroups made ahead of time, and used again. Creating a jail's cgroups and removing them is
 * most of what its limits cost: a memory cgroup allocates per-CPU state and a dozen files, and
 * its removal takes the kernel three more passes (offline, release, free, each after an RCU
 * grace period); together about as much CPU as the rest of the jail's cgroup work. The owner
 * keeps a stock of a few sets for the latest limits jails ask for, so a jail only joins one.
 *
 * A set comes back to the stock when its jail is gone, if it is as good as new: no process left
 * in it (the jail's pid namespace is torn down by then), its limit never reached (no failed
 * charge, no OOM, so the counters a result is judged by are still zero), and next to nothing
 * still charged to it (the page cache and kernel objects a jail leaves are charged to its
 * memory cgroup until reclaimed). Its limits are written again before it is lent out anew, in
 * case a jail that was allowed to changed them. Otherwise it is removed, like the cgroups a jail
 * without the stock makes. A cgroup holds nothing of a jail once its processes are gone: no
 * files, no processes, no limits but the ones written, and a jail never sees another's counters
 * (its cgroup namespace starts at its own cgroup, and /sys is not mounted in it).
 *
 * New sets are made right after a take that leaves fewer than two ready (up to two), with plain
 * system calls: a trip through the thread pool per file would cost the owner more than the
 * calls themselves. Directory names carry the owner (`lj gc` collects a dead owner's stock with
 * its jails' leftovers), not the id of the jail that uses them.
 */
const STOCK_SIZE = 4;
/** New sets are made only when fewer than this many are ready (jails usually bring theirs back). */
const REFILL_BELOW = 2;
/** Recycled only if at most this much (and a 16th of the limit) is still charged to it. */
const RESIDUE_BYTES = 4 * 1024 * 1024;
export interface MadeCgroups {
  /** The id of the jail that takes them. */
  id: string;
  dirs: CgroupDir[];
}

/**
 * One directory of a set in the stock, with the files its check reads and its limits held
 * open: reading a cgroup file through a held descriptor costs about a microsecond, opening,
 * reading and closing it about nine, and a set is checked after every jail.
 */
interface HeldDir {
  /** cgroup.procs: empty once the jail is gone. */
  procs: number;
  /** Counters that must still be zero: a file holding one number, or lines of a keyed file. */
  zero: { fd: number; keys?: string[] }[];
  /** What is charged to it now (memory), or -1. */
  usage: number;
  /** The limit files, with the values they are given again before the set is lent anew. */
  limits: { fd: number; value: string; optional?: boolean }[];
}
interface StockSet {
  dirs: CgroupDir[];
  held: HeldDir[];
}

const stock = {
  key: "",
  limits: {} as JailLimits,
  ready: [] as StockSet[],
  refilling: false,
  /** Making failed for this key: jails make their own (and report what fails). */
  failed: false,
};
/** Sets lent to running jails, by the directory list the jail was given. */
const lent = new Map<CgroupDir[], StockSet>();

function limitsKey(limits: JailLimits | undefined): string {
  if (!limits || !(limits.memoryBytes || limits.pids || limits.cpus)) return "";
  return `${Math.floor(limits.memoryBytes ?? 0)}/${Math.floor(limits.pids ?? 0)}/${limits.cpus ?? 0}`;
}

/** Lends a set made for these limits (null when none is ready); the next ones follow. */
export function takeMadeCgroups(limits: JailLimits | undefined): MadeCgroups | null {
  const key = limitsKey(limits);
  if (!key || process.platform !== "linux" || !cgroupLayout()) return null;
  if (key !== stock.key) {
    removeStock();
    stock.key = key;
    stock.limits = { ...limits };
  }
  const set = stock.ready.shift();
  if (!stock.refilling && !stock.failed && stock.ready.length < REFILL_BELOW) {
    stock.refilling = true;
    removeStockAtExit();
    queueMicrotask(refill);
  }
  if (!set) return null;
  lent.set(set.dirs, set);
  return { id: newJailId(), dirs: set.dirs };
}

function refill(): void {
  stock.refilling = false;
  while (stock.key && !stock.failed && stock.ready.length < REFILL_BELOW) {
    const set: StockSet = { dirs: cgroupDirsFor(newJailId(), stock.limits), held: [] };
    try {
      for (const d of set.dirs) {
        mkdirSync(d.dir);
        set.held.push(holdDir(d, stock.limits));
      }
      writeLimits(set);
      stock.ready.push(set);
    } catch {
      stock.failed = true;
      removeSync(set);
    }
  }
}

/** Opens what a set's check reads and its limit files; a missing optional file is skipped. */
function holdDir(d: CgroupDir, limits: JailLimits): HeldDir {
  const held: HeldDir = { procs: -1, zero: [], usage: -1, limits: [] };
  try {
    const open = (file: string, flags: "r" | "w") => openSync(join(d.dir, file), flags);
    held.procs = open("cgroup.procs", "r");
    if (d.kind === CgroupKind.unified && limits.memoryBytes) {
      held.zero.push({ fd: open("memory.events", "r"), keys: ["max", "oom"] });
      held.usage = open("memory.current", "r");
    } else if (d.kind === CgroupKind.memory) {
      held.zero.push({ fd: open("memory.oom_control", "r"), keys: ["oom_kill"] });
      held.zero.push({ fd: open("memory.failcnt", "r") });
      if (swapAccounted(d.dir)) held.zero.push({ fd: open("memory.memsw.failcnt", "r") });
      held.usage = open("memory.usage_in_bytes", "r");
    }
    for (const l of limitFiles(d.kind, limits)) {
      try {
        held.limits.push({ fd: open(l.file, "w"), value: l.value, optional: l.optional });
      } catch (e) {
        if (!tolerated(e, l.optional)) throw e;
      }
    }
    return held;
  } catch (e) {
    closeHeld([held]);
    throw e;
  }
}

function closeHeld(held: HeldDir[]): void {
  for (const h of held) {
    for (const fd of [h.procs, h.usage, ...h.zero.map((z) => z.fd), ...h.limits.map((l) => l.fd)]) {
      if (fd >= 0) closeSync(fd);
    }
  }
  held.length = 0;
}

/** Writes a set's limits through its held files (an optional one may refuse its value). */
function writeLimits(set: StockSet): void {
  for (const h of set.held) {
    for (const l of h.limits) {
      try {
        writeSync(l.fd, l.value, 0);
      } catch (e) {
        if (!tolerated(e, l.optional)) throw e;
      }
    }
  }
}

/**
 * Once a jail is gone: its cgroups go back to the stock if they are as good as new and the
 * stock has room for them, or are removed.
 */
export async function releaseCgroups(dirs: CgroupDir[], limits: JailLimits | undefined): Promise<void> {
  if (dirs.length === 0) return;
  const set = lent.get(dirs);
  lent.delete(dirs);
  const key = limitsKey(limits);
  if (set && key && key === stock.key && !stock.failed && stock.ready.length < STOCK_SIZE) {
    if (asGoodAsNew(set, stock.limits)) {
      stock.ready.push(set);
      return;
    }
  }
  if (set) closeHeld(set.held);
  await removeCgroups(dirs);
}

let swapAccounting: boolean | undefined;
/** v1: whether memory+swap is accounted (the kernel's setting; the same for every cgroup). */
function swapAccounted(dir: string): boolean {
  swapAccounting ??= existsSync(join(dir, "memory.memsw.failcnt"));
  return swapAccounting;
}

const scratch = Buffer.alloc(4096);
/** A held cgroup file's current content (read from its start: the kernel renders it anew). */
function readHeld(fd: number): string {
  return scratch.toString("latin1", 0, readSync(fd, scratch, 0, scratch.length, 0));
}

/** No process, the limit never reached, next to nothing charged; then its limits again. */
function asGoodAsNew(set: StockSet, limits: JailLimits): boolean {
  const residue = Math.min(RESIDUE_BYTES, (limits.memoryBytes ?? Number.POSITIVE_INFINITY) / 16);
  try {
    for (const h of set.held) {
      if (readSync(h.procs, scratch, 0, 1, 0) !== 0) return false;
      for (const z of h.zero) {
        const text = readHeld(z.fd);
        if (z.keys ? z.keys.some((k) => counter(text, k) > 0) : Number(text) > 0) return false;
      }
      if (h.usage >= 0 && Number(readHeld(h.usage)) > residue) return false;
    }
    writeLimits(set);
    return true;
  } catch {
    return false;
  }
}

function removeSync(set: StockSet): void {
  closeHeld(set.held);
  for (const d of set.dirs) {
    try {
      rmdirSync(d.dir);
    } catch {}
  }
}

/** Removes the cgroups made ahead of time, e.g. before counting what jails left behind. */
export function removeStock(): void {
  for (const set of stock.ready.splice(0)) removeSync(set);
  stock.key = "";
  stock.failed = false;
}

let exitHooked = false;
/** At exit, the stock goes (synchronously: the event loop is over). */
function removeStockAtExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on("exit", removeStock);
}

/** The number on a keyed file's line `name N` (memory.events, memory.oom_control), or 0. */
function counter(text: string, name: string): number {
  const at = `\n${text}`.indexOf(`\n${name} `); // where that line starts in `text`
  if (at < 0) return 0;
  const end = text.indexOf("\n", at);
  return Number(text.slice(at + name.length + 1, end < 0 ? undefined : end)) || 0;
}

/**
 * True when the jail ran out of memory: the kernel's OOM killer fired in its memory cgroup.
 * For a jail that died by SIGKILL (which nobody else sent) hitting the limit is evidence
 * enough: under heavy load the v1 kill counter has been seen to lag behind the kill itself.
 */
export function oomKilled(dirs: CgroupDir[], diedBySigkill = false): boolean {
  // Synchronous: a cgroup file is read from kernel memory in microseconds, far less than a
  // round trip through the thread pool would add to every jail's end.
  for (const d of dirs) {
    try {
      if (d.kind === CgroupKind.unified) {
        const events = readText(d.dir, "memory.events");
        if (counter(events, "oom_kill") > 0 || (diedBySigkill && counter(events, "oom") > 0)) return true;
      } else if (d.kind === CgroupKind.memory) {
        const control = readText(d.dir, "memory.oom_control");
        if (counter(control, "oom_kill") > 0) return true;
        if (diedBySigkill && Number(readText(d.dir, "memory.failcnt")) > 0) return true;
      }
    } catch {
      // The directory may never have been created (setup failed before it).
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

/** Removes a finished jail's cgroups (retrying briefly while the kernel lets go of them). */
export async function removeCgroups(dirs: CgroupDir[]): Promise<void> {
  for (const d of dirs) {
    for (let attempt = 0; ; attempt++) {
      try {
        await rmdir(d.dir);
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "ENOENT") break;
        if (code !== "EBUSY" || attempt >= 50) throw e;
        await Bun.sleep(Math.min(2 ** attempt, 20));
      }
    }
  }
}

export interface CgroupLeftover {
  dir: string;
  owner: string;
  pids: number[];
}

/** Jail cgroups whose owner process is gone. */
export function findLeftoverCgroups(): CgroupLeftover[] {
  if (process.platform !== "linux") return [];
  const l = detectLayout();
  if (!l) return [];
  const bases = [l.unified, l.memory, l.pids, l.cpu].filter((b): b is string => !!b && existsSync(b));
  const out: CgroupLeftover[] = [];
  for (const base of bases) {
    for (const name of readdirSync(base)) {
      const m = /^(\d+)\.(\d+)\.\d+$/.exec(name);
      if (!m) continue;
      const [, pid, start] = m;
      if (ownerLive(Number(pid), start)) continue;
      const dir = join(base, name);
      let pids: number[] = [];
      try {
        pids = readText(dir, "cgroup.procs").split("\n").filter(Boolean).map(Number);
      } catch {}
      out.push({ dir, owner: `${pid}`, pids });
    }
  }
  return out;
}

/** Kills what is left in a dead owner's cgroup and removes it. */
export async function reclaimCgroup(left: CgroupLeftover): Promise<void> {
  if (existsSync(join(left.dir, "cgroup.kill"))) {
    writeFileSync(join(left.dir, "cgroup.kill"), "1");
  } else {
    for (const pid of left.pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
  }
  for (let i = 0; i < 100; i++) {
    try {
      rmdirSync(left.dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code !== "EBUSY") throw e;
      await Bun.sleep(10);
    }
  }
  throw new LjError("isolation", "cgroup-busy", `cgroup ${left.dir} still has processes`);
}
