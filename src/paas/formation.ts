/**
 * The formation: which processes of each app run, and how many of each type. It owns the
 * running process sets (one per app, of its current release) and the changes to them: scaling,
 * restarts, and the switch from one release's processes to the next (src/paas/releases.ts
 * decides when). Formation changes (`lj scale`, PATCH /formation) are checked here before
 * anything is stored.
 */
import type { Slug } from "../build/types.ts";
import { LjError } from "../errors.ts";
import type { Formation as FormationRow, PaasDb, ReleaseRow } from "./db.ts";
import type { AppLocks } from "./locks.ts";
import type { LogHub } from "./logs.ts";
import { type ProcessSpecs, RELEASE_PHASE, type ReleaseOf } from "./process-spec.ts";
import { type InstanceInfo, ProcessSet, type Spawner, WEB_PORT } from "./supervisor.ts";

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

export interface FormationParts {
  db: PaasDb;
  locks: AppLocks;
  specs: ProcessSpecs;
  logs: LogHub;
  spawner: Spawner;
  /** Called whenever an app's set of healthy web targets may have changed. */
  changed: () => void;
  /** Resolves once the edge serves the targets as they are now. */
  edgeSynced: () => Promise<void>;
  /** How long a new web process may take to accept connections. */
  healthTimeoutMs: number;
}

export class Formation {
  private readonly sets = new Map<string, ProcessSet>();

  constructor(private readonly p: FormationParts) {}

  /** How many processes of each type a release runs (web defaults to one, others to none). */
  counts(formation: FormationRow, slug: Slug): Record<string, number> {
    const out: Record<string, number> = {};
    for (const type of Object.keys(slug.processes)) {
      if (type === RELEASE_PHASE) continue;
      out[type] = formation[type]?.count ?? (type === "web" ? 1 : 0);
    }
    return out;
  }

  /**
   * Starts a release's processes beside the running ones and waits until they are healthy;
   * on failure they are stopped again and the error thrown. The set is not serving yet:
   * `activate` makes it so.
   */
  async start(app: string, rel: ReleaseOf, log: (l: string) => void): Promise<ProcessSet> {
    const counts = this.counts(this.p.db.app(app).formation, rel.slug);
    const set = this.newSet(app, rel);
    const summary = Object.entries(counts)
      .map(([t, n]) => `${t}=${n}`)
      .join(" ");
    log(`-----> Starting v${rel.version} processes: ${summary || "(none)"}`);
    try {
      await set.scale(counts);
      await set.healthy();
    } catch (e) {
      await set.stop();
      throw e;
    }
    if (counts.web) log(`-----> Health check passed (${counts.web} web instance(s) accept connections)`);
    return set;
  }

  /** Makes `set` the app's serving one and stops the one before it. */
  async activate(app: string, set: ProcessSet, log: (l: string) => void = () => {}): Promise<void> {
    const old = this.sets.get(app);
    this.sets.set(app, set);
    this.p.changed();
    // The edge serves the new set before the deploy says so and before the old set stops.
    await this.p.edgeSynced();
    if (old) {
      log(`-----> Stopping v${old.release} processes`);
      await old.stop();
    }
  }

  async scale(app: string, changes: Record<string, FormationChange>): Promise<InstanceInfo[]> {
    for (const [type, c] of Object.entries(changes)) {
      checkFormationChange(type, c);
      if (type === RELEASE_PHASE && c.count !== undefined) {
        throw new LjError(
          "usage",
          "bad-process-type",
          `${RELEASE_PHASE} is the release phase, not a process type`,
          {
            hint: "it runs once per release, before the release's processes start",
          },
        );
      }
    }
    return this.p.locks.run(app, async () => {
      const formation: FormationRow = { ...this.p.db.app(app).formation };
      let limitsChanged = false;
      for (const [type, c] of Object.entries(changes)) {
        const prev = formation[type] ?? { count: type === "web" ? 1 : 0 };
        if (LIMIT_FIELDS.some((f) => c[f as keyof FormationChange] !== undefined)) limitsChanged = true;
        formation[type] = {
          ...prev,
          ...Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)),
        };
      }
      const cur = this.p.db.currentRelease(app);
      if (cur) {
        for (const type of Object.keys(changes)) {
          if (!cur.slug.processes[type]) {
            throw new LjError(
              "not-found",
              "no-process-type",
              `release v${cur.version} has no ${type} process`,
              {
                hint: `its process types: ${Object.keys(cur.slug.processes).join(", ")}`,
              },
            );
          }
        }
      }
      this.p.db.setFormation(app, formation);
      if (!cur) return [];
      const set = this.sets.get(app);
      if (limitsChanged || !set) {
        await this.restartLocked(app, cur);
      } else {
        const started = await set.scale(this.counts(formation, cur.slug));
        await set.healthy(started).catch(() => {}); // the supervisor keeps retrying; ps tells
        await this.p.edgeSynced();
      }
      return this.ps(app);
    });
  }

  /** New processes of the current release (new env from links, new limits), then the old go. */
  async restart(app: string): Promise<InstanceInfo[]> {
    return this.p.locks.run(app, async () => {
      const cur = this.p.db.currentRelease(app);
      if (cur) await this.restartLocked(app, cur);
      return this.ps(app);
    });
  }

  private async restartLocked(app: string, cur: ReleaseRow): Promise<void> {
    const set = this.newSet(app, cur);
    await set.scale(this.counts(this.p.db.app(app).formation, cur.slug));
    await set.healthy().catch((e: Error) => this.p.logs.write(app, "lj", `restart: ${e.message}`));
    await this.activate(app, set);
  }

  /** Healthy web targets of the app's serving release; null for an unknown app. */
  targets(app: string): { address: string; port: number }[] | null {
    const set = this.sets.get(app);
    if (!set) return this.p.db.findApp(app) ? [] : null;
    return set.webTargets().map((i) => ({ address: i.jail!.address!, port: WEB_PORT }));
  }

  /** The app's processes (none before its first release); throws for an unknown app. */
  ps(app: string): InstanceInfo[] {
    this.p.db.app(app);
    return this.sets.get(app)?.info() ?? [];
  }

  /** Starts the current release of every app that has one (after a server start). */
  async recover(): Promise<void> {
    const apps = this.p.db.apps().filter((a) => a.currentRelease !== null);
    await Promise.all(
      apps.map((a) =>
        this.p.locks.run(a.name, async () => {
          const rel = this.p.db.release(a.name, a.currentRelease!);
          const set = this.newSet(a.name, rel);
          this.sets.set(a.name, set);
          await set.scale(this.counts(a.formation, rel.slug));
          this.p.logs.write(a.name, "lj", `restored release v${rel.version} after a server start`);
        }),
      ),
    );
  }

  /** Stops an app's processes for good (it is being destroyed; the caller holds its lock). */
  async remove(app: string): Promise<void> {
    const set = this.sets.get(app);
    this.sets.delete(app);
    this.p.changed();
    await this.p.edgeSynced();
    await set?.stop();
  }

  /** Stops every process (the desired state stays in the database for the next start). */
  async close(): Promise<void> {
    const sets = [...this.sets.values()];
    this.sets.clear();
    await Promise.all(sets.map((s) => s.stop()));
  }

  private newSet(app: string, rel: ReleaseOf): ProcessSet {
    return new ProcessSet(
      app,
      rel.version,
      (type, index) => this.p.specs.processSpec(app, rel, type, `${type}.${index}`),
      { log: (source, line) => this.p.logs.write(app, source, line), changed: () => this.p.changed() },
      this.p.healthTimeoutMs,
      this.p.spawner,
    );
  }
}
