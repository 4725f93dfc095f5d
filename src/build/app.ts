/**
 * App builds: plan (detect -> chain), ensure the chain's overlays, run the builder plugin's
 * build script in a jail (world + overlays read-only, the app's source in a writable layer),
 * and publish the result as an immutable slug: slugs/<app>/<id>/app, with <id>.json (release
 * metadata) and <id>.log beside it.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { ownerId } from "../jail/owner.ts";
import { DEFAULT_PATH } from "../jail/spec.ts";
import { discover, findPlugin } from "../plugins/registry.ts";
import { identityOf } from "../store/identities.ts";
import { checkName } from "../store/names.ts";
import { paths } from "../store/paths.ts";
import { removeTree } from "../store/tree.ts";
import { worldMounts, worldPath } from "../store/worlds.ts";
import { cacheDir, computeKey, decide, restore, save } from "./cache.ts";
import { createBuildDisk } from "./disk.ts";
import { buildBind, runBuild, tailLines, whyBuildFailed } from "./isolation.ts";
import { ensureOverlay, flatten } from "./overlays.ts";
import { type FullPlan, planApp as plan } from "./plan.ts";
import { chownTree, copySanitised, ownedBy, reportSanitised } from "./sanitise.ts";
import type { AppPlan, BuildLog, Slug } from "./types.ts";

export type { FullPlan } from "./plan.ts";
export { parseProcfile, readAppSettings } from "./plan.ts";

/** An app build's limits; its disk holds the app tree it builds (the slug) and nothing else. */
export const BUILD_LIMITS = {
  memoryMb: 2048,
  cpus: 2,
  pids: 1024,
  timeoutS: 3600,
  /** The build disk's size: the most a build may write (`LJ_BUILD_DISK_MB`). */
  get diskMb(): number {
    return Number(process.env.LJ_BUILD_DISK_MB) || 4096;
  },
  /** The download cache's disk (`LJ_BUILD_CACHE_DISK_MB`). */
  get cacheDiskMb(): number {
    return Number(process.env.LJ_BUILD_CACHE_DISK_MB) || 2048;
  },
};

/** Detects the app's plugin and plans its build (no side effects). */
export async function planApp(dir: string, opts: { world?: string } = {}): Promise<AppPlan & FullPlan> {
  return plan(dir, opts);
}

export interface BuildAppOptions {
  app: string;
  log?: BuildLog;
  /** Ignore the dependency cache. */
  force?: boolean;
  world?: string;
}

export interface SlugMeta extends Slug {
  app: string;
  plan: AppPlan;
  cache: { hit: boolean; reason: string; lockfile: string | null };
  durationMs: number;
  /** "<pid>.<start>" of the process that built it: its slug is not garbage while it runs. */
  builder?: string;
}

/** `.tmp-<builder pid>.<builder start>-<slug id>`: the temporary name of a slug being built. */
export const slugTempName = (id: string) => `.tmp-${ownerId()}-${id}`;

/** A new slug's id: its time, and a few random bytes. */
const slugId = () =>
  `${new Date().toISOString().replace(/[-:]/g, "").replace(/\..*$/, "").replace("T", "-")}-${randomBytes(3).toString("hex")}`;

/**
 * Builds an app into an immutable slug. The source, the restored dependency cache and the
 * download cache are copied onto build disks owned by the app's identity; the build runs there
 * as root of a user namespace mapped onto that identity (src/build/isolation.ts); on success
 * the app tree is copied out, sanitised (src/build/sanitise.ts), into slugs/<app>/<id>/app.
 */
export async function buildApp(dir: string, opts: BuildAppOptions): Promise<Slug> {
  checkName(opts.app, "app");
  const log = opts.log ?? (() => {});
  const started = performance.now();
  const d = discover();
  const p = await plan(dir, { ...(opts.world ? { world: opts.world } : {}), discovery: d });
  log(`detected ${p.detected.map((x) => `${x.type}/${x.plugin} (${x.reasons.join("; ")})`).join(", ")}`);
  log(
    `overlay chain over world ${p.world}: ${p.overlays.map((o) => `${o.type}/${o.name}@${o.version}`).join(" -> ")}`,
  );
  const builder = findPlugin(d, { type: p.plugin.type, name: p.plugin.name, constraint: p.plugin.version });
  const top = await ensureOverlay(builder, {
    world: p.world,
    log,
    discovery: d,
    ...(p.runtimeBuild ? { runtime: p.runtimeBuild } : {}),
  });
  const chain = flatten(top);
  const who = identityOf("app", opts.app);

  await fsp.mkdir(paths.slugs(), { recursive: true, mode: 0o700 });
  const slugs = join(paths.slugs(), opts.app);
  await fsp.mkdir(slugs, { recursive: true, mode: 0o700 });
  const id = slugId();
  // The builder's "<pid>.<start>" in every temporary name: a crash leaves them to a collector
  // that can tell a dead builder's from a live one's (src/paas/leftovers.ts).
  const tmp = join(slugs, slugTempName(id));
  const logFile = `${tmp}.log`;
  const jsonFile = `${tmp}.json`;
  const disk = createBuildDisk(`app-${opts.app}`, BUILD_LIMITS.diskMb * 1048576, who);
  const dlDisk = createBuildDisk(`dl-${opts.app}`, BUILD_LIMITS.cacheDiskMb * 1048576, who);
  try {
    const upper = join(disk.path, "upper");
    const appDir = join(upper, "app");
    await fsp.mkdir(upper, { mode: 0o755 });
    copySanitised(dir, appDir, {
      owner: ownedBy(who.uid, who.gid),
      skip: (rel) => rel === ".git",
      what: "the app's source",
    });
    const salt = `${p.plugin.type}/${p.plugin.name}@${p.plugin.version}\n${chain.map((o) => o.id).join(",")}\n${p.build.cacheDirs.join(",")}`;
    const cdir = cacheDir(opts.app, `${p.plugin.type}-${p.plugin.name}`);
    await fsp.mkdir(cdir, { recursive: true, mode: 0o700 });
    const decision = await decide(cdir, computeKey(dir, p.lockfiles, salt), p.lockfiles, opts.force === true);
    log(decision.reason);
    const restored = await restore(decision, appDir, p.build.cacheDirs, log);
    if (restored.length > 0) log(`restored ${restored.join(", ")} from the cache`);
    restoreDownloads(join(cdir, "dl"), join(dlDisk.path, "dl"), who);
    chownTree(upper, who.uid, who.gid);
    await fsp.writeFile(logFile, `${decision.reason}\n`, { mode: 0o600 });

    // The getters read the environment now: a spread copies their values.
    const buildLimits = { ...BUILD_LIMITS };
    const run = await runBuild({
      identity: who,
      net: p.build.net,
      limits: buildLimits,
      argv: ["/bin/sh", "-c", `mkdir -p "$HOME" && ${p.build.script}`],
      env: {
        PATH: `/app/bin:${DEFAULT_PATH}`,
        HOME: "/tmp/lj/home",
        LANG: "C.UTF-8",
        LJ_APP: opts.app,
        LJ_APP_DIR: "/app",
        LJ_CACHE_DIR: "/tmp/lj/cache",
        LJ_CACHE_HIT: decision.hit ? "1" : "0",
        LJ_PLUGIN_DIR: "/tmp/lj/plugin",
        ...p.env,
        ...p.build.env,
      },
      cwd: "/app",
      layers: [worldPath(p.world), ...chain.map((o) => o.path)],
      upper,
      mounts: [
        ...(await worldMounts(p.world)),
        buildBind(p.plugin.dir, "/tmp/lj/plugin"),
        { src: join(dlDisk.path, "dl"), dst: "/tmp/lj/cache", readonly: false },
      ],
      label: `build ${opts.app}`,
      log,
      logFile,
    });
    if (run.result.status !== 0) {
      throw new LjError(
        "internal",
        "app-build-failed",
        `building ${opts.app} with ${p.plugin.name}: the build script ${whyBuildFailed(run, buildLimits)}; no slug was published\n${tailLines(run)}`,
        { hint: "fix the app (or its lockfile) and build again; the log above has the details" },
      );
    }
    // The slug is the app directory only: whatever else the build wrote (HOME, /tmp) goes.
    await fsp.mkdir(tmp, { mode: 0o755 });
    const published = copySanitised(appDir, join(tmp, "app"), { owner: ownedBy(who.uid, who.gid) });
    reportSanitised(published, log);
    await save(decision, appDir, p.build.cacheDirs, log);
    saveDownloads(join(dlDisk.path, "dl"), join(cdir, "dl"));
    const final = join(slugs, id);
    const { detected, world, overlays, build, processes, env: penv, limits } = p;
    const slug: SlugMeta = {
      id,
      app: opts.app,
      path: final,
      world: p.world,
      worldPath: worldPath(p.world),
      worldMounts: await worldMounts(p.world),
      overlays: chain.map((o) => ({ type: o.type, name: o.name, version: o.version, path: o.path })),
      processes: p.processes,
      env: p.env,
      cwd: "/app",
      createdAt: new Date().toISOString(),
      sizeBytes: published.bytes,
      limits: p.appLimits,
      plan: { detected, world, overlays, build, processes, env: penv, limits },
      cache: { hit: decision.hit, reason: decision.reason, lockfile: decision.key.lockfile },
      durationMs: Math.round(performance.now() - started),
      builder: ownerId(),
    };
    await fsp.writeFile(jsonFile, `${JSON.stringify(slug, null, 2)}\n`, {
      mode: 0o600,
    });
    await fsp.rename(tmp, final);
    await fsp.rename(logFile, join(slugs, `${id}.log`));
    await fsp.rename(jsonFile, join(slugs, `${id}.json`));
    log(
      `slug ${opts.app}/${id} ready (${(slug.sizeBytes / 1048576).toFixed(1)} MiB, ${(slug.durationMs / 1000).toFixed(1)}s)`,
    );
    return slug;
  } catch (e) {
    await removeTree(tmp).catch(() => {});
    await fsp.rm(logFile, { force: true });
    await fsp.rm(jsonFile, { force: true });
    throw e;
  } finally {
    disk.dispose();
    dlDisk.dispose();
  }
}

/** The download cache (npm's, pip's) onto the build's cache disk, owned by the app. */
function restoreDownloads(saved: string, onDisk: string, who: { uid: number; gid: number }): void {
  if (!existsSync(saved)) {
    mkdirSync(onDisk, { mode: 0o755 });
    chownTree(onDisk, who.uid, who.gid);
    return;
  }
  copySanitised(saved, onDisk, { owner: ownedBy(who.uid, who.gid) });
}

/** The download cache back to the state root (root's, 0700), replacing the one before. */
function saveDownloads(onDisk: string, saved: string): void {
  const next = `${saved}.new-${process.pid}`;
  rmSync(next, { recursive: true, force: true });
  try {
    copySanitised(onDisk, next, { owner: () => [0, 0] });
  } catch {
    // A cache that cannot be kept as it is (a link out of its tree) is not kept.
    rmSync(next, { recursive: true, force: true });
    return;
  }
  chmodSync(next, 0o700);
  rmSync(saved, { recursive: true, force: true });
  renameSync(next, saved);
}

/** Reads a published slug's metadata. */
export function readSlug(app: string, id: string): SlugMeta {
  const f = join(paths.slugs(), app, `${id}.json`);
  if (!existsSync(f)) throw new LjError("not-found", "slug-not-found", `no slug ${app}/${id}`);
  return JSON.parse(readFileSync(f, "utf8")) as SlugMeta;
}
