/** Formation changes (`lj scale`, PATCH /formation) are checked here before anything is stored. */
import { LjError } from "../errors.ts";

/**
 * What a formation change may hold, and the accepted range of each field. Everything is checked
 * before anything is stored: a limit the kernel would refuse (or that leaves no room to start
 * a process) would otherwise sit in the database and keep the app from starting.
 */
export const FORMATION_FIELDS: Readonly<
  Record<string, { min: number; max: number; unit: string; fraction?: boolean }>
> = {
  count: { min: 0, max: 100, unit: "processes" },
  memoryMb: { min: 16, max: 65536, unit: "MB of memory per process" },
  pids: { min: 16, max: 65536, unit: "tasks per process" },
  // Below a hundredth of a CPU the kernel refuses the quota.
  cpus: { min: 0.01, max: 256, unit: "CPUs per process (a quota)", fraction: true },
  nofile: { min: 64, max: 1048576, unit: "open files per process" },
};

/** One process type's change: any of the fields above. */
export interface FormationChange {
  count?: number;
  memoryMb?: number;
  pids?: number;
  cpus?: number;
  nofile?: number;
}

/** Fields that change how a process's jail is made: changing one restarts the processes. */
export const LIMIT_FIELDS = ["memoryMb", "pids", "cpus", "nofile"];

/** Throws a usage error (HTTP 400, exit 64) naming the first bad field of one type's change. */
export function checkFormationChange(type: string, change: unknown): void {
  if (!/^[a-z][a-z0-9_-]{0,62}$/.test(type))
    throw new LjError("usage", "bad-process-type", `invalid process type ${JSON.stringify(type)}`, {
      hint: "process types are lower case letters, digits, _ and -, starting with a letter",
    });
  if (typeof change !== "object" || change === null || Array.isArray(change))
    throw new LjError("usage", "bad-formation", `${type}: expected a count or {count, memoryMb, pids}`);
  for (const [field, v] of Object.entries(change)) {
    const spec = FORMATION_FIELDS[field];
    if (!spec)
      throw new LjError("usage", "bad-formation", `${type}.${field}: not a formation field`, {
        hint: `the fields are ${Object.keys(FORMATION_FIELDS).join(", ")}`,
      });
    if (v === undefined) continue;
    const kind = spec.fraction ? "a number" : "an integer";
    if (
      typeof v !== "number" ||
      !Number.isFinite(v) ||
      (!spec.fraction && !Number.isInteger(v)) ||
      v < spec.min ||
      v > spec.max
    )
      throw new LjError(
        "usage",
        "bad-formation",
        `${type}.${field} must be ${kind} from ${spec.min} to ${spec.max} (got ${JSON.stringify(v) ?? String(v)})`,
        { hint: `${field} is the number of ${spec.unit}; nothing was changed` },
      );
  }
}
