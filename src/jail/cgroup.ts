/**
 * Per-jail cgroups, v1 (one hierarchy per controller) and v2 (unified). The jail creates its
 * own cgroup directories, writes its limits and joins them before anything runs (the shim's
 * child does it, off the event loop); this module decides where they go and what limits they
 * get, and removes them afterwards. Directory names carry the owner's pid and start time
 * (owner.ts), so `lj gc` can tell leftovers of a dead owner from a live jail. Sets made ahead
 * of time are cgroup-stock.ts; what the kernel counted in them (OOM kills, refused forks, CPU
 * throttling) is cgroup-usage.ts.
 */
import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { mkdir, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import limitTable from "../../zig/src/cgroup-limits.txt" with { type: "text" };
import { LjError } from "../errors.ts";
import { shimCgroupLayout } from "./ffi.ts";
import { ownerLive } from "./owner.ts";
import { type CgroupDir, CgroupKind, type JailLimits } from "./spec.ts";
import { tableRows } from "./table.ts";

export interface CgroupLayout {
  version: 1 | 2;
  /** v2: the unified base; v1: the base under each controller's hierarchy. */
  unified?: string;
  memory?: string;
  pids?: string;
  cpu?: string;
  /** Where a cgroup2 hierarchy is mounted (also on a hybrid v1 host), and with favordynmods. */
  cgroup2?: { point: string; favordynmods: boolean };
}

let layout: CgroupLayout | undefined;

export const readText = (dir: string, file: string) => readFileSync(join(dir, file), "utf8");

/** The layout as the shim finds it (zig/src/cgroup_layout.zig, the one owner of it). */
function parseLayout(text: string): CgroupLayout | null {
  const [version, ...rest] = text.trim().split("\n");
  if (version !== "1" && version !== "2") return null;
  const out: CgroupLayout = { version: Number(version) as 1 | 2 };
  for (const line of rest) {
    const [name, dir, opt] = line.split(" ") as [string, string, string?];
    if (name === "cgroup2") out.cgroup2 = { point: dir, favordynmods: opt === "favordynmods" };
    else out[name as "unified" | "memory" | "pids" | "cpu"] = dir;
  }
  return out;
}

/** Finds the hierarchies in mountinfo (this process's by default); v1 controllers win over a hybrid v2. */
export function detectLayout(mountinfo = ""): CgroupLayout | null {
  return parseLayout(shimCgroupLayout(mountinfo, false));
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
export function favorDynamicMoves(found: CgroupLayout | null = detectLayout()): string | null {
  if (process.env.LJ_CGROUP_FAVORDYNMODS === "0") return null;
  const v2 = found?.cgroup2;
  if (!v2) return null;
  if (v2.favordynmods) return v2.point;
  const r = Bun.spawnSync(["mount", "-o", "remount,favordynmods", v2.point], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  return r.exitCode === 0 ? v2.point : null;
}

/** Finds the hierarchies and makes the lightjail bases ready, once per process. */
export function cgroupLayout(): CgroupLayout | null {
  if (layout) return layout;
  let found: CgroupLayout | null;
  try {
    found = parseLayout(shimCgroupLayout("", true));
  } catch (e) {
    throw new LjError(
      "isolation",
      "cgroup",
      `cannot prepare the cgroups for jails: ${(e as Error).message}`,
      {
        hint: "lightjail needs a delegated cgroup v2 subtree (run as root, or under systemd Delegate=yes)",
      },
    );
  }
  if (!found) return null;
  favorDynamicMoves(found);
  layout = found;
  return layout;
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

/** One line of the table the shim's placer reads too (zig/src/cgroup-limits.txt). */
interface LimitFile {
  kind: number;
  limit: "memory" | "pids" | "cpu";
  file: string;
  value: string;
  optional: boolean;
}

const LIMIT_FILES: LimitFile[] = tableRows(limitTable).map(([kind, limit, file, value, required]) => ({
  kind: CgroupKind[kind as keyof typeof CgroupKind],
  limit: limit as LimitFile["limit"],
  file: file!,
  value: value!,
  optional: required !== "yes",
}));
/** The files a cgroup of this kind gets for these limits; `optional` ones may be missing. */
export function limitFiles(
  kind: number,
  limits: JailLimits,
): { file: string; value: string; optional?: boolean }[] {
  const has = { memory: limits.memoryBytes, pids: limits.pids, cpu: limits.cpus };
  const token: Record<string, string | undefined> = {
    BYTES: limits.memoryBytes ? String(Math.floor(limits.memoryBytes)) : undefined,
    PIDS: limits.pids ? String(Math.floor(limits.pids)) : undefined,
    QUOTA: limits.cpus ? String(Math.round(limits.cpus * 100_000)) : undefined,
  };
  return LIMIT_FILES.filter((l) => l.kind === kind && has[l.limit]).map((l) => ({
    file: l.file,
    value: l.value
      .split("_")
      .map((w) => token[w] ?? w)
      .join(" "),
    ...(l.optional ? { optional: true } : {}),
  }));
}

/** A missing optional file (no swap accounting, an older kernel) is not an error. */
export function tolerated(e: unknown, optional: boolean | undefined): boolean {
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
