/**
 * Garbage collection of what jails leave behind when their owner dies before cleaning up
 * (a SIGKILLed `lj serve`, a crashed test run). The jails themselves die with their owner
 * (PDEATHSIG on the keeper); what can outlive it are host-side objects: cgroup directories,
 * and on FreeBSD (no mount namespaces) mounts under the run directory. Each collector finds
 * leftovers of dead owners only: live jails are never touched.
 */
import { readdirSync, readFileSync } from "node:fs";
import { paths } from "../store/paths.ts";
import { findLeftoverCgroups, reclaimCgroup } from "./cgroup.ts";
import { shimCleanup, shimUnmount } from "./ffi.ts";
import { collectNetLeftovers } from "./net.ts";
import { jailOwnerLive } from "./owner.ts";
import { freebsdJailName } from "./spec.ts";

export interface GcReport {
  removed: { kind: string; what: string }[];
  errors: { kind: string; what: string; error: string }[];
}

export interface GcCollector {
  kind: string;
  collect(report: GcReport): Promise<void>;
}

const unescapeMount = (s: string) =>
  s.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));

/** Mount points of the host's mount table (Linux: mountinfo; FreeBSD: `mount -p`). */
function mountPoints(): string[] {
  if (process.platform === "freebsd") {
    const out = Bun.spawnSync(["mount", "-p"]).stdout.toString();
    return out.split("\n").map((l) => unescapeMount(l.split(/\s+/)[1] ?? ""));
  }
  try {
    return readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .map((l) => unescapeMount(l.split(" ")[4] ?? ""));
  } catch {
    return [];
  }
}

/**
 * Mounts under the run directory in the host's mount table, deepest first, except those of
 * live jails (FreeBSD keeps each jail's root on run/stage/<jail id>; Linux jails mount only
 * inside their own mount namespace, so there should never be any).
 */
export function leftoverMounts(root = paths.run()): string[] {
  const prefix = root.endsWith("/") ? root : `${root}/`;
  return mountPoints()
    .filter((p) => p.startsWith(prefix))
    .filter((p) => !jailOwnerLive(p.slice(prefix.length).split("/")[1] ?? ""))
    .sort((a, b) => b.length - a.length);
}

/** FreeBSD: the names of jails whose owner died, from their stage directories. */
function deadFreebsdJails(): string[] {
  let ids: string[] = [];
  try {
    ids = readdirSync(paths.stage());
  } catch {
    return [];
  }
  return ids.filter((id) => /^\d+\.\d+\.\d+$/.test(id) && !jailOwnerLive(id)).map(freebsdJailName);
}

const collectors: GcCollector[] = [
  {
    // First the jails themselves (their processes die with them), then what they mounted.
    kind: "jail",
    async collect(report) {
      if (process.platform !== "freebsd") return;
      for (const name of deadFreebsdJails()) {
        try {
          shimCleanup(name);
          report.removed.push({ kind: "jail", what: name });
        } catch (e) {
          report.errors.push({ kind: "jail", what: name, error: String((e as Error).message) });
        }
      }
    },
  },
  {
    kind: "cgroup",
    async collect(report) {
      for (const left of findLeftoverCgroups()) {
        try {
          await reclaimCgroup(left);
          report.removed.push({ kind: "cgroup", what: left.dir });
        } catch (e) {
          report.errors.push({ kind: "cgroup", what: left.dir, error: String((e as Error).message) });
        }
      }
    },
  },
  {
    kind: "mount",
    async collect(report) {
      for (const m of leftoverMounts()) {
        try {
          shimUnmount(m);
          report.removed.push({ kind: "mount", what: m });
        } catch (e) {
          report.errors.push({ kind: "mount", what: m, error: String((e as Error).message) });
        }
      }
    },
  },
  // Leases of dead owners, their veths and their nftables elements (src/jail/net.ts).
  { kind: "net", collect: collectNetLeftovers },
];

/** Other subsystems (networking: veths, addresses, filter rules) add their own collectors. */
export function registerGcCollector(c: GcCollector): void {
  collectors.push(c);
}

export async function gc(): Promise<GcReport> {
  const report: GcReport = { removed: [], errors: [] };
  for (const c of collectors) await c.collect(report);
  return report;
}
