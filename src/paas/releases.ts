/**
 * Releases: a slug with a config, numbered per app. Every change that alters what runs (a
 * deploy, a config change, a rollback) makes a new release through `roll`: run its release
 * command, start its processes beside the old ones, health-check them, record the release,
 * switch the router to them, stop the old ones. On any failure the new processes go and the
 * release serving now keeps serving. Old releases beyond the kept number are pruned with
 * their slugs.
 */
import { rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Slug } from "../build/types.ts";
import { paths } from "../store/paths.ts";
import type { PaasDb, ReleaseRow } from "./db.ts";
import type { Formation } from "./formation.ts";
import type { AppLocks } from "./locks.ts";
import type { LogHub } from "./logs.ts";
import { RELEASE_PHASE } from "./process-spec.ts";
import type { Runs } from "./runs.ts";

/**
 * Removes a slug no kept release uses: slugs/<app>/<id>/ with its <id>.json and <id>.log (the
 * overlay store counts slug records as overlay users, so their overlays become collectable).
 * Only slugs in this root's slug store are touched.
 */
export function removeSlug(app: string, slug: Slug): void {
  const dir = join(paths.slugs(), app);
  if (dirname(slug.path) !== dir || basename(slug.path) !== slug.id) return;
  rmSync(slug.path, { recursive: true, force: true });
  rmSync(`${slug.path}.json`, { force: true });
  rmSync(`${slug.path}.log`, { force: true });
}

export interface ReleaseParts {
  db: PaasDb;
  locks: AppLocks;
  formation: Formation;
  runs: Runs;
  logs: LogHub;
  /** Releases kept per app (older ones are pruned). */
  keep: number;
}

export class Releases {
  constructor(private readonly p: ReleaseParts) {}

  /** The app's kept releases, newest first. */
  list(app: string): ReleaseRow[] {
    this.p.db.app(app);
    return this.p.db.releases(app);
  }

  /**
   * Makes (slug, config) the app's new release (see the top of this file). `releasePhase`:
   * run the slug's release command first (deploys and config changes; not rollbacks). Call
   * with the app's lock held.
   */
  async roll(
    app: string,
    slug: Slug,
    config: Record<string, string>,
    description: string,
    log: (l: string) => void,
    opts: { releasePhase?: boolean } = {},
  ): Promise<ReleaseRow> {
    const { db, formation } = this.p;
    db.app(app);
    const version = (db.releases(app)[0]?.version ?? 0) + 1;
    if (opts.releasePhase && slug.processes[RELEASE_PHASE]) {
      await this.p.runs.releaseCommand(app, { version, slug, config }, log);
    }
    const set = await formation.start(app, { version, slug, config }, log);
    const rel = db.addRelease(app, slug, config, description);
    log(`-----> Released v${rel.version}: ${description}`);
    await formation.activate(app, set, log);
    this.prune(app, log);
    return rel;
  }

  async rollback(app: string, version: number, log: (l: string) => void = () => {}): Promise<ReleaseRow> {
    const target = this.p.db.release(app, version);
    return this.p.locks.run(app, () =>
      this.roll(app, target.slug, target.config, `rollback to v${version}`, (l) => {
        log(l);
        this.p.logs.write(app, "lj", l);
      }),
    );
  }

  private prune(app: string, log: (l: string) => void): void {
    const dropped = this.p.db.pruneReleases(app, this.p.keep);
    if (!dropped.length) return;
    log(`-----> Pruned releases ${dropped.map((r) => `v${r.version}`).join(", ")}`);
    const kept = new Set(this.p.db.releases(app).map((r) => r.slug.path));
    for (const r of dropped) if (!kept.has(r.slug.path)) removeSlug(app, r.slug);
  }
}
