/**
 * The per-app dependency cache. Directories a plugin names in build.cache (node_modules,
 * .venv, vendor/bundle) are saved after a successful build and restored before the next one
 * when the key matches: the lockfile's content, the plugin's version and the overlays' ids.
 * Each decision is explained in the build log. A downloader cache (npm's, pip's) lives in
 * dl/ and is mounted into every build whatever the key.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { paths } from "../store/paths.ts";
import { removeTree } from "./archive.ts";

export interface CacheKey {
  key: string;
  lockfile: string | null;
  lockHash: string | null;
  builtAt?: string;
}

export interface CacheDecision {
  hit: boolean;
  reason: string;
  key: CacheKey;
  dir: string;
}

export const cacheDir = (app: string, plugin: string) => join(paths.appCache(), app, plugin);

export function computeKey(appDir: string, lockfiles: string[], salt: string): CacheKey {
  const lock = lockfiles.find((f) => existsSync(join(appDir, f))) ?? null;
  const lockHash = lock
    ? createHash("sha256")
        .update(readFileSync(join(appDir, lock)))
        .digest("hex")
    : null;
  const key = createHash("sha256").update(`${salt}\n${lock}\n${lockHash}`).digest("hex");
  return { key, lockfile: lock, lockHash };
}

const short = (h: string | null) => (h ? h.slice(0, 12) : "none");

export async function decide(
  dir: string,
  key: CacheKey,
  lockfiles: string[],
  force: boolean,
): Promise<CacheDecision> {
  const miss = (reason: string): CacheDecision => ({ hit: false, reason, key, dir });
  if (force) return miss("cache skipped: --force");
  if (lockfiles.length === 0) return miss("cache not used: the plugin names no lockfile");
  if (!key.lockfile) return miss(`cache miss: no lockfile to key it on (looked for ${lockfiles.join(", ")})`);
  let prev: CacheKey | null = null;
  try {
    prev = JSON.parse(await fsp.readFile(join(dir, "key.json"), "utf8")) as CacheKey;
  } catch {}
  if (!prev)
    return miss(`cache miss: no earlier build of this app to reuse (${key.lockfile} ${short(key.lockHash)})`);
  if (prev.key === key.key) {
    return {
      hit: true,
      reason: `cache hit: ${key.lockfile} unchanged since the build of ${prev.builtAt ?? "?"} (sha256 ${short(key.lockHash)})`,
      key,
      dir,
    };
  }
  if (prev.lockfile === key.lockfile && prev.lockHash !== key.lockHash) {
    return miss(
      `cache miss: ${key.lockfile} changed (sha256 ${short(prev.lockHash)} -> ${short(key.lockHash)})`,
    );
  }
  if (prev.lockfile !== key.lockfile)
    return miss(`cache miss: the lockfile is now ${key.lockfile} (was ${prev.lockfile})`);
  return miss("cache miss: the plugin or its overlays changed since the last build");
}

export async function copyTree(src: string, dst: string): Promise<void> {
  const p = Bun.spawn(["cp", "-a", "--reflink=auto", src, dst], { stdio: ["ignore", "ignore", "pipe"] });
  const err = await new Response(p.stderr).text();
  if ((await p.exited) !== 0) throw new LjError("internal", "copy-failed", `cp ${src} ${dst}: ${err.trim()}`);
}

/** Copies the cached directories into the app (those the source does not carry itself). */
export async function restore(d: CacheDecision, appDir: string, dirs: string[]): Promise<string[]> {
  const restored: string[] = [];
  if (!d.hit) return restored;
  for (const rel of dirs) {
    const src = join(d.dir, "dirs", rel);
    const dst = join(appDir, rel);
    if (!existsSync(src) || existsSync(dst)) continue;
    await fsp.mkdir(join(dst, ".."), { recursive: true });
    await copyTree(src, dst);
    restored.push(rel);
  }
  return restored;
}

/** Saves the cached directories after a successful build (swapped in whole). */
export async function save(d: CacheDecision, appDir: string, dirs: string[]): Promise<void> {
  if (d.hit || !d.key.lockfile) return;
  await fsp.mkdir(d.dir, { recursive: true });
  const next = await fsp.mkdtemp(join(d.dir, ".dirs-"));
  for (const rel of dirs) {
    const src = join(appDir, rel);
    if (!existsSync(src)) continue;
    await fsp.mkdir(join(next, rel, ".."), { recursive: true });
    await copyTree(src, join(next, rel));
  }
  const old = join(d.dir, `.old-${Date.now()}`);
  if (existsSync(join(d.dir, "dirs"))) await fsp.rename(join(d.dir, "dirs"), old);
  await fsp.rename(next, join(d.dir, "dirs"));
  await fsp.writeFile(
    join(d.dir, "key.json"),
    `${JSON.stringify({ ...d.key, builtAt: new Date().toISOString() }, null, 2)}\n`,
  );
  await removeTree(old).catch(() => {});
}
