import { closeSync, existsSync, mkdirSync, openSync, readSync, rmdirSync, writeSync } from "node:fs";
import { join } from "node:path";
import { cgroupDirsFor, cgroupLayout, limitFiles, removeCgroups, tolerated } from "./cgroup.ts";
import { counter } from "./cgroup-usage.ts";
import { newJailId } from "./owner.ts";
import { type CgroupDir, CgroupKind, type JailLimits } from "./spec.ts";

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
export interface StockCgroups {
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
const inUse = new Map<CgroupDir[], StockSet>();

function limitsKey(limits: JailLimits | undefined): string {
  if (!limits || !(limits.memoryBytes || limits.pids || limits.cpus)) return "";
  return `${Math.floor(limits.memoryBytes ?? 0)}/${Math.floor(limits.pids ?? 0)}/${limits.cpus ?? 0}`;
}

/** Lends a set made for these limits (null when none is ready); the next ones follow. */
export function takeStockCgroups(limits: JailLimits | undefined): StockCgroups | null {
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
  inUse.set(set.dirs, set);
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
  const set = inUse.get(dirs);
  inUse.delete(dirs);
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
