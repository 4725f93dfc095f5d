/**
 * Deploys: a source archive in, a release out. `start` extracts the upload (the `app` policy of
 * src/store/archive.ts: a rejected archive throws before any deploy exists, and nothing stays
 * behind), then builds it into a slug and rolls it out as a new release, after any deploy of
 * the same app before it. The run's log is stored line by line and streams to live readers.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { buildApp } from "../build/app.ts";
import type { BuildLog, Slug } from "../build/types.ts";
import { LjError } from "../errors.ts";
import { type ExtractLimits, extractTar } from "../store/archive.ts";
import { paths } from "../store/paths.ts";
import { removeTree } from "../store/tree.ts";
import type { DeployRow, PaasDb, ReleaseRow } from "./db.ts";
import { DeployRun } from "./deploy-run.ts";
import type { AppLocks } from "./locks.ts";
import type { LogHub } from "./logs.ts";
import { type Releases, removeSlug } from "./releases.ts";

export type BuildFn = (dir: string, opts: { app: string; log?: BuildLog; force?: boolean }) => Promise<Slug>;

export interface DeployParts {
  db: PaasDb;
  locks: AppLocks;
  releases: Releases;
  logs: LogHub;
  /** App builds: buildApp (src/build/app.ts) unless a test brings its own. */
  build?: BuildFn;
  /** Tighter archive limits than the app policy's defaults. */
  archiveLimits?: Partial<ExtractLimits>;
}

export class Deploys {
  private readonly running = new Map<number, DeployRun>();
  private readonly build: BuildFn;

  constructor(private readonly p: DeployParts) {
    this.build = p.build ?? buildApp;
  }

  /** Uploads that a dead server left half-extracted go; so do the deploys it left running. */
  prepare(): void {
    this.p.db.failInterruptedDeploys();
    rmSync(paths.paasIncoming(), { recursive: true, force: true });
    mkdirSync(paths.paasIncoming(), { recursive: true, mode: 0o700 });
  }

  /**
   * Extracts `source` (a tar, tar.gz or tar.zst stream) and starts its deploy; `label` says
   * where it came from ("tarball", "git:1a2b3c4d"). Resolves once the deploy runs: its log
   * streams live and `done` settles with the finished row.
   */
  async start(app: string, source: ReadableStream<Uint8Array>, label: string): Promise<DeployRun> {
    this.p.db.app(app);
    mkdirSync(paths.paasIncoming(), { recursive: true, mode: 0o700 });
    const dir = join(paths.paasIncoming(), `${Date.now()}-${Math.random().toString(36).slice(2, 10)}`);
    const got = await extractTar(source, dir, { policy: "app", limits: this.p.archiveLimits });
    let row: DeployRow;
    try {
      row = this.p.db.createDeploy(app, label);
    } catch (e) {
      await removeTree(dir);
      throw e;
    }
    const run = new DeployRun(row.id, app, (seq, line) => this.p.db.appendDeployLog(row.id, seq, line));
    this.running.set(row.id, run);
    run.log(`-----> Received ${got.entries} entries (${got.fileBytes} bytes, ${got.compression})`);
    if (this.p.locks.busy(app)) run.log(`-----> Waiting for the deploy before this one to finish`);
    void this.p.locks
      .run(app, () => this.run(run, dir, label))
      .then(
        (r) => this.finish(run, "succeeded", r.version, null),
        (e: Error) => {
          run.log(`-----> Deploy failed: ${e.message}`);
          if (e instanceof LjError && e.hint) run.log(`       ${e.hint}`);
          const current = this.p.db.findApp(app)?.currentRelease;
          if (current) run.log(`-----> Release v${current} is still serving`);
          this.finish(run, "failed", null, e.message);
        },
      );
    return run;
  }

  /** A deploy still running (its log can be followed), or undefined. */
  live(id: number): DeployRun | undefined {
    return this.running.get(id);
  }

  info(id: number): DeployRow & { log: string[] } {
    return { ...this.p.db.deploy(id), log: this.p.db.deployLog(id) };
  }

  /** The app's latest deploys, newest first. */
  list(app: string): DeployRow[] {
    return this.p.db.deploys(app);
  }

  private async run(run: DeployRun, dir: string, label: string): Promise<ReleaseRow> {
    const { db } = this.p;
    try {
      run.log(`-----> Building ${run.app} from ${label} (deploy ${run.id})`);
      const t0 = performance.now();
      const slug = await this.build(dir, { app: run.app, log: run.log });
      run.log(`-----> Built slug ${slug.id} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      db.setDeploySlug(run.id, slug.id);
      const types = Object.keys(slug.processes);
      run.log(`-----> Process types: ${types.length ? types.join(", ") : "(none)"}`);
      const config = db.app(run.app).config;
      try {
        return await this.p.releases.roll(run.app, slug, config, `deploy ${run.id} (${label})`, run.log, {
          releasePhase: true,
        });
      } catch (e) {
        // No release uses a failed deploy's slug: it goes now, not at the next start.
        if (!db.releases(run.app).some((r) => r.slug.path === slug.path)) removeSlug(run.app, slug);
        throw e;
      }
    } finally {
      await removeTree(dir);
    }
  }

  private finish(
    run: DeployRun,
    status: "succeeded" | "failed",
    release: number | null,
    error: string | null,
  ) {
    if (status === "succeeded") run.log(`=====> deploy ${run.id} succeeded: release v${release} is serving`);
    else run.log(`=====> deploy ${run.id} failed`);
    this.p.db.finishDeploy(run.id, status, release, error);
    this.running.delete(run.id);
    this.p.logs.write(run.app, "lj", `deploy ${run.id} ${status}${release ? `: v${release}` : ""}`);
    run.finish(this.p.db.deploy(run.id));
  }
}
