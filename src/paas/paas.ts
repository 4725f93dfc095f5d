/**
 * The PaaS: its parts, each owning one concept, over one database (the desired state) and one
 * log hub. Apps (apps.ts), deploys (deploys.ts), releases (releases.ts), config (config.ts),
 * the formation and its running processes (formation.ts, over the supervisor), one-off runs
 * (runs.ts) and backing services (services.ts). Changes to one app are serialised by one lock
 * per app (locks.ts). `lj serve` (src/server/) reaches the parts through this object.
 */
import { chmodSync, mkdirSync } from "node:fs";
import { type GcReport, gc } from "../jail/gc.ts";
import type { ExtractLimits } from "../store/archive.ts";
import { paths } from "../store/paths.ts";
import { Apps } from "./apps.ts";
import { Config } from "./config.ts";
import { PaasDb } from "./db.ts";
import { type BuildFn, Deploys } from "./deploys.ts";
import { Formation } from "./formation.ts";
import { collectSlugLeftovers } from "./leftovers.ts";
import { AppLocks } from "./locks.ts";
import { LogHub } from "./logs.ts";
import { ProcessSpecs } from "./process-spec.ts";
import { Releases } from "./releases.ts";
import { Runs } from "./runs.ts";
import { LocalScheduler, type SchedulerFactory } from "./scheduler.ts";
import { ServiceManager } from "./services.ts";
import { jailSpawner, type Spawner } from "./supervisor.ts";

export interface PaasOptions {
  /** App builds; default: buildApp from src/build/app.ts. Tests inject a fake here. */
  build?: BuildFn;
  /** How jails start; default: real jails. Unit tests inject a fake here. */
  spawner?: Spawner;
  /** Where app processes run; default: jails on this machine (LocalScheduler). */
  scheduler?: SchedulerFactory;
  /** Tighter limits on uploaded archives than the app policy's defaults. */
  archiveLimits?: Partial<ExtractLimits>;
  /** How long a new web process may take to accept connections. */
  healthTimeoutMs?: number;
  /** Releases kept per app (older ones are pruned). */
  keepReleases?: number;
  /** Per-process limits where neither the formation nor the app's lj.toml sets one. */
  memoryMb?: number;
  pids?: number;
}

export class Paas {
  readonly db: PaasDb;
  readonly logs: LogHub;
  readonly specs: ProcessSpecs;
  readonly services: ServiceManager;
  readonly formation: Formation;
  readonly runs: Runs;
  readonly releases: Releases;
  readonly config: Config;
  readonly deploys: Deploys;
  readonly apps: Apps;
  private readonly listeners = new Set<() => void>();
  private closed = false;
  /**
   * Resolves once the edge serves the current targets (lj serve sets it): a deploy stops the
   * old release's instances only after the edge no longer sends them new requests.
   */
  edgeSynced: () => Promise<void> = async () => {};

  constructor(opts: PaasOptions = {}) {
    // Tenants' data is root's alone on the host; jails reach it through bind mounts.
    for (const d of [paths.paas(), paths.slugs(), paths.appCache(), paths.tmp()]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      chmodSync(d, 0o700);
    }
    const db = new PaasDb(paths.paasDb());
    const logs = new LogHub(paths.paasLogs());
    const locks = new AppLocks();
    const spawner = opts.spawner ?? jailSpawner;
    const changed = () => {
      for (const fn of this.listeners) fn();
    };
    // Linking a service restarts the app's processes, which get the service's address.
    const services: ServiceManager = new ServiceManager(db, logs, (app) => formation.restart(app));
    const specs = new ProcessSpecs(db, services, { memoryMb: opts.memoryMb, pids: opts.pids });
    const parts = {
      specs,
      logs,
      changed,
      edgeSynced: () => this.edgeSynced(),
      healthTimeoutMs: opts.healthTimeoutMs ?? 30_000,
    };
    const scheduler = opts.scheduler ? opts.scheduler(parts) : new LocalScheduler(parts, spawner);
    const formation: Formation = new Formation({ db, locks, scheduler });
    const runs = new Runs(db, specs, logs, spawner);
    const releases = new Releases({ db, locks, formation, runs, logs, keep: opts.keepReleases ?? 10 });
    this.db = db;
    this.logs = logs;
    this.specs = specs;
    this.services = services;
    this.formation = formation;
    this.runs = runs;
    this.releases = releases;
    this.config = new Config(db, locks, releases, logs);
    this.deploys = new Deploys({
      db,
      locks,
      releases,
      logs,
      build: opts.build,
      archiveLimits: opts.archiveLimits,
    });
    this.apps = new Apps(db, locks, formation, logs, changed);
  }

  /** Calls `fn` whenever an app's set of healthy web targets may have changed; returns an undo. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Clears what a dead server left (leftover jails, half-done deploys, unused slugs) before
   * anything starts.
   */
  async prepare(): Promise<void> {
    await gc().catch(() => {});
    // Deploys the dead server left running are failed first: their slugs are then unused.
    this.deploys.prepare();
    const report: GcReport = { removed: [], errors: [] };
    collectSlugLeftovers(report, this.db);
    for (const e of report.errors) console.error(`lj serve: could not remove ${e.what}: ${e.error}`);
  }

  /** Brings back the desired state: every service, then every app's current release. */
  async recover(): Promise<void> {
    await this.services.recover();
    await this.formation.recover();
  }

  /** Stops every process (the desired state stays in the database for the next start). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([this.formation.close(), this.runs.close()]);
    await this.services.close();
    this.logs.flush();
    this.db.close();
  }
}
