/**
 * Where an app's processes run. The formation (formation.ts) decides what runs - which
 * release, how many processes of each type, with which limits - and a scheduler makes it so:
 * the local one (here) runs them as jails of this machine under the supervisor; the
 * Kubernetes one (src/cluster/kube-scheduler.ts) as Deployments whose pods run on lightjail
 * nodes. Both keep the health-check-then-switch promise: `start` resolves only once the new
 * release's processes are healthy, and leaves the serving ones as they were when it throws.
 */
import type { LogHub } from "./logs.ts";
import type { ProcessSpecs, ReleaseOf } from "./process-spec.ts";
import { type InstanceInfo, ProcessSet, type Spawner, WEB_PORT } from "./supervisor.ts";

export type Counts = Record<string, number>;
export type Log = (line: string) => void;

/** A release started by `start`, not serving until `activate`. */
export interface Staged {
  readonly release: number;
}

export interface Target {
  address: string;
  port: number;
}

export interface Scheduler {
  /** Starts `rel`'s processes beside the serving ones; resolves once they are healthy. */
  start(app: string, rel: ReleaseOf, counts: Counts, log: Log): Promise<Staged>;
  /** Makes a started release the serving one; the one before it stops. */
  activate(app: string, staged: Staged, log: Log): Promise<void>;
  /** New counts for the serving release (`remake`: its processes are made again, new limits). */
  scale(app: string, rel: ReleaseOf, counts: Counts, remake: boolean): Promise<void>;
  /** The serving release's web processes that pass their health check; null: none serving. */
  targets(app: string): Target[] | null;
  ps(app: string): InstanceInfo[];
  /** After a server start: the app's current release runs again as the formation says. */
  recover(app: string, rel: ReleaseOf, counts: Counts): Promise<void>;
  /** The app is being destroyed: its processes go for good. */
  remove(app: string): Promise<void>;
  /** The server stops. */
  close(): Promise<void>;
}

export interface SchedulerParts {
  specs: ProcessSpecs;
  logs: LogHub;
  /** An app's set of healthy web targets may have changed. */
  changed: () => void;
  /** Resolves once the edge serves the targets as they are now. */
  edgeSynced: () => Promise<void>;
  /** How long a new release's processes may take to become healthy. */
  healthTimeoutMs: number;
}

export type SchedulerFactory = (parts: SchedulerParts) => Scheduler;

/** Jails on this machine, one ProcessSet per app (the supervisor). */
export class LocalScheduler implements Scheduler {
  private readonly sets = new Map<string, ProcessSet>();

  constructor(
    private readonly p: SchedulerParts,
    private readonly spawner: Spawner,
  ) {}

  async start(app: string, rel: ReleaseOf, counts: Counts): Promise<Staged> {
    const set = this.newSet(app, rel);
    try {
      await set.scale(counts);
      await set.healthy();
    } catch (e) {
      await set.stop();
      throw e;
    }
    return set;
  }

  async activate(app: string, staged: Staged, log: Log): Promise<void> {
    const old = this.sets.get(app);
    this.sets.set(app, staged as ProcessSet);
    this.p.changed();
    // The edge serves the new set before the deploy says so and before the old set stops.
    await this.p.edgeSynced();
    if (old) {
      log(`-----> Stopping v${old.release} processes`);
      await old.stop();
    }
  }

  async scale(app: string, rel: ReleaseOf, counts: Counts, remake: boolean): Promise<void> {
    const set = this.sets.get(app);
    if (remake || !set) {
      const next = this.newSet(app, rel);
      await next.scale(counts);
      await next.healthy().catch((e: Error) => this.p.logs.write(app, "lj", `restart: ${e.message}`));
      await this.activate(app, next, () => {});
      return;
    }
    const started = await set.scale(counts);
    await set.healthy(started).catch(() => {}); // the supervisor keeps retrying; ps tells
    await this.p.edgeSynced();
  }

  targets(app: string): Target[] | null {
    const set = this.sets.get(app);
    if (!set) return null;
    return set.webTargets().map((i) => ({ address: i.jail!.address!, port: WEB_PORT }));
  }

  ps(app: string): InstanceInfo[] {
    return this.sets.get(app)?.info() ?? [];
  }

  async recover(app: string, rel: ReleaseOf, counts: Counts): Promise<void> {
    const set = this.newSet(app, rel);
    this.sets.set(app, set);
    await set.scale(counts);
    this.p.logs.write(app, "lj", `restored release v${rel.version} after a server start`);
  }

  async remove(app: string): Promise<void> {
    const set = this.sets.get(app);
    this.sets.delete(app);
    this.p.changed();
    await this.p.edgeSynced();
    await set?.stop();
  }

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
      this.spawner,
    );
  }
}
