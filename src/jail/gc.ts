/**
 * Garbage collection of what jails leave behind when their owner dies before cleaning up
 * (a SIGKILLed `lj serve`, a crashed test run). The jails themselves die with their owner
 * (PDEATHSIG on the keeper); what can outlive it are host-side objects: cgroup directories,
 * and on FreeBSD (no mount namespaces) mounts under the run directory. Each collector finds
 * leftovers of dead owners only: live jails are never touched.
 */
import { readFileSync } from "node:fs";
import { paths } from "../store/paths.ts";
import { findLeftoverCgroups, reclaimCgroup } from "./cgroup.ts";
import { shimUnmount } from "./ffi.ts";
import { collectNetLeftovers } from "./net.ts";

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

/** Mounts under the run directory in the host's mount table, deepest first. */
export function leftoverMounts(root = paths.run()): string[] {
  let text = "";
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  const prefix = root.endsWith("/") ? root : `${root}/`;
  return text
    .split("\n")
    .map((l) => unescapeMount(l.split(" ")[4] ?? ""))
    .filter((p) => p.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

const collectors: GcCollector[] = [
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
