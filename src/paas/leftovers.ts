/**
 * What builds and deploys leave in the slug store when things go wrong: the temporaries of a
 * build its builder did not live to finish (`slugs/<app>/.tmp-<builder>-<id>` with its .log
 * and .json, an overlayfs `.work` directory beside), and slugs no release uses (the deploy
 * failed after its build, or the server died before recording the release). Collected at
 * every server start (Paas.prepare) and by `lj gc`; a live builder's files are never touched.
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { GcReport } from "../jail/gc.ts";
import { ownerIdLive } from "../jail/owner.ts";
import { paths } from "../store/paths.ts";
import type { PaasDb } from "./db.ts";

const TEMP = /^\.tmp-(\d+\.\d+)-/;

const list = (dir: string): string[] => {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
};

const isDir = (p: string) => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
};

/** True when a temporary's builder still runs (a name without a builder has no live one). */
function tempLive(name: string): boolean {
  return ownerIdLive(TEMP.exec(name)?.[1]);
}

function remove(report: GcReport, kind: string, p: string): void {
  try {
    rmSync(p, { recursive: true, force: true });
    report.removed.push({ kind, what: p });
  } catch (e) {
    report.errors.push({ kind, what: p, error: (e as Error).message });
  }
}

/** `.tmp-*` entries and `.*.work` directories of dead builders, in every app's slug directory. */
export function collectBuildTemps(report: GcReport, root = paths.slugs()): void {
  for (const app of list(root)) {
    const dir = join(root, app);
    if (!isDir(dir)) continue;
    for (const n of list(dir)) {
      const work = n.startsWith(".") && n.endsWith(".work") ? n.slice(1, -".work".length) : null;
      if (work !== null) {
        if (!tempLive(work)) remove(report, "build-temp", join(dir, n));
      } else if (n.startsWith(".tmp-") && !tempLive(n)) {
        remove(report, "build-temp", join(dir, n));
      }
    }
  }
}

interface SlugRecord {
  builder?: string;
}

function slugBuilderLive(file: string): boolean {
  try {
    return ownerIdLive((JSON.parse(readFileSync(file, "utf8")) as SlugRecord).builder);
  } catch {
    return false;
  }
}

/**
 * Slugs of the PaaS's apps that no kept release uses and whose builder is gone: the builder
 * itself removes the slug of a deploy that fails, so what is left here was orphaned by a
 * crash (or an older lightjail that kept them). Only ids under slugs/<app>/ are touched.
 */
export function collectUnusedSlugs(report: GcReport, db: PaasDb, root = paths.slugs()): void {
  for (const app of db.apps()) {
    const dir = join(root, app.name);
    if (!existsSync(dir)) continue;
    const used = new Set(db.releases(app.name).map((r) => r.slug.id));
    const ids = new Set<string>();
    for (const n of list(dir)) {
      if (n.startsWith(".")) continue;
      ids.add(n.replace(/\.(json|log)$/, ""));
    }
    for (const id of ids) {
      if (used.has(id) || slugBuilderLive(join(dir, `${id}.json`))) continue;
      for (const p of [join(dir, id), join(dir, `${id}.json`), join(dir, `${id}.log`)]) {
        if (existsSync(p)) remove(report, "slug", p);
      }
    }
  }
}

/** Both collectors; `db` is null when this root has no PaaS database. */
export function collectSlugLeftovers(report: GcReport, db: PaasDb | null): void {
  collectBuildTemps(report);
  if (db) collectUnusedSlugs(report, db);
}
