/**
 * App builds: plan (detect -> chain), ensure the chain's overlays, run the builder plugin's
 * build script in a jail (world + overlays read-only, the app's source in a writable layer),
 * and publish the result as an immutable slug: slugs/<app>/<id>/app, with <id>.json (release
 * metadata) and <id>.log beside it.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { discover, findPlugin } from "../plugins/registry.ts";
import { paths } from "../store/paths.ts";
import { worldMounts, worldPath } from "../store/worlds.ts";
import { removeTree } from "./archive.ts";
import { cacheDir, computeKey, decide, restore, save } from "./cache.ts";
import { type BuiltOverlay, ensureOverlay, treeSize } from "./overlays.ts";
import { type FullPlan, planApp as plan } from "./plan.ts";
import { BASE_PATH, runStreamed } from "./run.ts";
import type { AppPlan, BuildLog, Slug } from "./types.ts";

export type { FullPlan } from "./plan.ts";
export { parseProcfile, readAppSettings } from "./plan.ts";

export const APP_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const BUILD_LIMITS = { memoryMb: 2048, cpus: 2, pids: 1024, timeoutS: 3600 };

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
}

export async function buildApp(dir: string, opts: BuildAppOptions): Promise<Slug> {
  if (!APP_RE.test(opts.app)) {
    throw new LjError("usage", "bad-app-name", `invalid app name ${JSON.stringify(opts.app)}`, {
      hint: "lowercase letters, digits and '-', at most 63",
    });
  }
  const log = opts.log ?? (() => {});
  const started = performance.now();
  const d = discover();
  const p = await plan(dir, { ...(opts.world ? { world: opts.world } : {}), discovery: d });
  log(`detected ${p.detected.map((x) => `${x.type}/${x.plugin} (${x.reasons.join("; ")})`).join(", ")}`);
  log(
    `overlay chain over world ${p.world}: ${p.overlays.map((o) => `${o.type}/${o.name}@${o.version}`).join(" -> ")}`,
  );
  const builder = findPlugin(d, { type: p.plugin.type, name: p.plugin.name, constraint: p.plugin.version });
  const top = await ensureOverlay(builder, { world: p.world, log, discovery: d });
  const chain = flatten(top);

  const slugs = join(paths.slugs(), opts.app);
  await fsp.mkdir(slugs, { recursive: true });
  const id = `${new Date().toISOString().replace(/[-:]/g, "").replace(/\..*$/, "").replace("T", "-")}-${randomBytes(3).toString("hex")}`;
  const tmp = join(slugs, `.tmp-${id}`);
  const logFile = join(slugs, `.tmp-${id}.log`);
  await fsp.mkdir(tmp, { mode: 0o755 });
  try {
    const appDir = join(tmp, "app");
    await fsp.cp(dir, appDir, {
      recursive: true,
      verbatimSymlinks: true,
      filter: (src) => !/\/\.git(\/|$)/.test(src.slice(dir.length)),
    });
    const salt = `${p.plugin.type}/${p.plugin.name}@${p.plugin.version}\n${chain.map((o) => o.id).join(",")}\n${p.build.cacheDirs.join(",")}`;
    const cdir = cacheDir(opts.app, `${p.plugin.type}-${p.plugin.name}`);
    const decision = await decide(cdir, computeKey(dir, p.lockfiles, salt), p.lockfiles, opts.force === true);
    log(decision.reason);
    const restored = await restore(decision, appDir, p.build.cacheDirs);
    if (restored.length > 0) log(`restored ${restored.join(", ")} from the cache`);
    await fsp.mkdir(join(cdir, "dl"), { recursive: true });
    await fsp.writeFile(logFile, `${decision.reason}\n`);

    const env: Record<string, string> = {
      PATH: `/app/bin:${BASE_PATH}`,
      HOME: "/tmp/lj/home",
      LANG: "C.UTF-8",
      LJ_APP: opts.app,
      LJ_APP_DIR: "/app",
      LJ_CACHE_DIR: "/tmp/lj/cache",
      LJ_CACHE_HIT: decision.hit ? "1" : "0",
      LJ_PLUGIN_DIR: "/tmp/lj/plugin",
      ...p.env,
      ...p.build.env,
    };
    const { result: r, tail } = await runStreamed(
      {
        argv: ["/bin/sh", "-c", `mkdir -p "$HOME" && ${p.build.script}`],
        env,
        cwd: "/app",
        layers: [worldPath(p.world), ...chain.map((o) => o.path)],
        upper: tmp,
        mounts: [
          ...(await worldMounts(p.world)),
          { src: p.plugin.dir, dst: "/tmp/lj/plugin", readonly: true },
          { src: join(cdir, "dl"), dst: "/tmp/lj/cache", readonly: false },
        ],
        net: p.build.net,
        uid: 0,
        gid: 0,
        hostname: "ljbuild",
        limits: {
          memoryBytes: BUILD_LIMITS.memoryMb * 1048576,
          cpus: BUILD_LIMITS.cpus,
          pids: BUILD_LIMITS.pids,
        },
        timeoutMs: BUILD_LIMITS.timeoutS * 1000,
      },
      { log, logFile, label: `build ${opts.app}` },
    );
    if (r.status !== 0) {
      const why =
        r.reason === "oom"
          ? `ran out of memory (${BUILD_LIMITS.memoryMb} MB)`
          : r.reason === "setup"
            ? `could not start: ${r.error}`
            : r.reason === "timeout"
              ? "timed out"
              : `exited with status ${r.status}`;
      throw new LjError(
        "internal",
        "app-build-failed",
        `building ${opts.app} with ${p.plugin.name}: the build script ${why}; no slug was published\n${tail
          .slice(-15)
          .map((l) => `  | ${l}`)
          .join("\n")}`,
        {
          hint: "fix the app (or its lockfile) and build again; the log above has the details",
        },
      );
    }
    // The slug is the app directory only: whatever else the build wrote (HOME, /tmp) goes.
    for (const n of readdirSync(tmp)) if (n !== "app") await removeTree(join(tmp, n));
    await save(decision, appDir, p.build.cacheDirs);
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
      sizeBytes: await treeSize(tmp),
      plan: { detected, world, overlays, build, processes, env: penv, limits },
      cache: { hit: decision.hit, reason: decision.reason, lockfile: decision.key.lockfile },
      durationMs: Math.round(performance.now() - started),
    };
    await fsp.writeFile(join(slugs, `.tmp-${id}.json`), `${JSON.stringify(slug, null, 2)}\n`);
    await fsp.rename(tmp, final);
    await fsp.rename(logFile, join(slugs, `${id}.log`));
    await fsp.rename(join(slugs, `.tmp-${id}.json`), join(slugs, `${id}.json`));
    log(
      `slug ${opts.app}/${id} ready (${(slug.sizeBytes / 1048576).toFixed(1)} MiB, ${(slug.durationMs / 1000).toFixed(1)}s)`,
    );
    return slug;
  } catch (e) {
    await removeTree(tmp).catch(() => {});
    await fsp.rm(logFile, { force: true });
    await fsp.rm(join(slugs, `.tmp-${id}.json`), { force: true });
    throw e;
  }
}

/** The overlays a built overlay runs on plus itself, bottom to top, each once. */
export function flatten(top: BuiltOverlay): BuiltOverlay[] {
  const out: BuiltOverlay[] = [];
  const add = (o: BuiltOverlay) => {
    for (const p of o.parents) add(p);
    if (!out.some((x) => x.id === o.id && x.path === o.path)) out.push(o);
  };
  add(top);
  return out;
}

/** Reads a published slug's metadata. */
export function readSlug(app: string, id: string): SlugMeta {
  const f = join(paths.slugs(), app, `${id}.json`);
  if (!existsSync(f)) throw new LjError("not-found", "slug-not-found", `no slug ${app}/${id}`);
  return JSON.parse(readFileSync(f, "utf8")) as SlugMeta;
}
