/**
 * The per-app dependency cache. Directories a plugin names in build.cache (node_modules,
 * .venv, vendor/bundle) are saved after a successful build and restored before the next one
 * when the key matches: the lockfile's content, the plugin's version and the overlays' ids.
 * Each decision is explained in the build log. A downloader cache (npm's, pip's) lives in
 * dl/ and is mounted into every build whatever the key.
 *
 * The app tree is tenant-controlled: its build may leave any symlink in it. Nothing here follows
 * one: the lockfile is read with O_NOFOLLOW, a cache directory (or a directory on its way) that
 * is a symlink is skipped with a log line, the copy keeps symlinks inside as symlinks, and a
 * restore only writes below real directories of the app tree, into a path that does not exist.
 */
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  constants as fsc,
  fstatSync,
  openSync,
  readFileSync,
  type Stats,
} from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { paths } from "../store/paths.ts";
import { removeTree } from "../store/tree.ts";

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
  let lock: string | null = null;
  let lockHash: string | null = null;
  for (const f of lockfiles) {
    const body = readRegular(join(appDir, f));
    if (body === null) continue;
    lock = f;
    lockHash = createHash("sha256").update(body).digest("hex");
    break;
  }
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

/**
 * A lockfile's bytes, or null unless it is a regular file reached without a symlink: a lockfile
 * linked to a host file would otherwise be read, and its hash shown in the build log.
 */
function readRegular(p: string): Buffer | null {
  let fd: number;
  try {
    // NONBLOCK: a FIFO in its place must not hang the server.
    fd = openSync(p, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    return fstatSync(fd).isFile() ? readFileSync(fd) : null;
  } finally {
    closeSync(fd);
  }
}

/** Copies a tree; symlinks (the top one included) are copied as symlinks, never followed. */
export async function copyTree(src: string, dst: string): Promise<void> {
  const p = Bun.spawn(["cp", "-a", "--no-dereference", "--reflink=auto", "--", src, dst], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const err = await new Response(p.stderr).text();
  if ((await p.exited) !== 0) throw new LjError("internal", "copy-failed", `cp ${src} ${dst}: ${err.trim()}`);
}

/** Where a cache directory's line goes when the caller gives no log (the server's stderr). */
const stderrLog = (line: string) => process.stderr.write(`lj: ${line}\n`);

/** A plugin's cache directory as path components: relative, no `..`, nothing empty. */
function components(rel: string): string[] | null {
  const comps = rel.split("/").filter((c) => c !== "" && c !== ".");
  if (rel.startsWith("/") || comps.length === 0 || comps.includes("..")) return null;
  return comps;
}

type Walk =
  /** Every directory on the way is real; `last` is the final component's lstat (null: absent). */
  { ok: true; last: Stats | null; missingFrom: number } | { ok: false; why: string };

/**
 * lstat each component of `comps` under `base`. The walk stops at a symlink or a non-directory
 * on the way; a missing directory ends it with `missingFrom` (its index), the rest absent too.
 */
async function walk(base: string, comps: string[]): Promise<Walk> {
  for (let i = 0; i < comps.length; i++) {
    const p = join(base, ...comps.slice(0, i + 1));
    const st = await fsp.lstat(p).catch(() => null);
    const shown = comps.slice(0, i + 1).join("/");
    if (st === null) return { ok: true, last: null, missingFrom: i };
    if (st.isSymbolicLink()) return { ok: false, why: `${shown} is a symlink` };
    if (i === comps.length - 1) return { ok: true, last: st, missingFrom: comps.length };
    if (!st.isDirectory()) return { ok: false, why: `${shown} is not a directory` };
  }
  return { ok: false, why: "empty path" };
}

/** Creates the missing directories from `from` on, each one only where nothing is. */
async function makeParents(base: string, comps: string[], from: number): Promise<void> {
  for (let i = from; i < comps.length - 1; i++) await fsp.mkdir(join(base, ...comps.slice(0, i + 1)));
}

/**
 * Copies the cached directories into the app (those the source does not carry itself). Only
 * into a path that does not exist, below real directories of the app tree, from a cached copy
 * with no symlink on its way; anything else is skipped with a line in `log`.
 */
export async function restore(
  d: CacheDecision,
  appDir: string,
  dirs: string[],
  log: (line: string) => void = stderrLog,
): Promise<string[]> {
  const restored: string[] = [];
  if (!d.hit) return restored;
  const from = join(d.dir, "dirs");
  for (const rel of dirs) {
    const comps = components(rel);
    if (!comps) {
      log(`cache: ${rel} is not a relative path inside the app; not restored`);
      continue;
    }
    const src = await walk(from, comps);
    if (!src.ok) {
      log(`cache: not restoring ${rel}: in the cache, ${src.why}`);
      continue;
    }
    if (src.last === null) continue;
    const dst = await walk(appDir, comps);
    if (!dst.ok) {
      log(`cache: not restoring ${rel}: in the app, ${dst.why} (the cache never writes through a link)`);
      continue;
    }
    if (dst.last !== null) continue; // the source carries its own
    await makeParents(appDir, comps, dst.missingFrom);
    await copyTree(join(from, ...comps), join(appDir, ...comps));
    restored.push(rel);
  }
  return restored;
}

/**
 * Saves the cached directories after a successful build (swapped in whole). A directory that
 * is a symlink, or lies below one, is not saved (logged): it may point anywhere on the host.
 */
export async function save(
  d: CacheDecision,
  appDir: string,
  dirs: string[],
  log: (line: string) => void = stderrLog,
): Promise<void> {
  if (d.hit || !d.key.lockfile) return;
  await fsp.mkdir(d.dir, { recursive: true });
  const next = await fsp.mkdtemp(join(d.dir, ".dirs-"));
  for (const rel of dirs) {
    const comps = components(rel);
    if (!comps) {
      log(`cache: ${rel} is not a relative path inside the app; not saved`);
      continue;
    }
    const src = await walk(appDir, comps);
    if (!src.ok) {
      log(`cache: not saving ${rel}: ${src.why} (the cache never follows a link out of the app)`);
      continue;
    }
    if (src.last === null) continue;
    await fsp.mkdir(join(next, ...comps.slice(0, -1)), { recursive: true });
    await copyTree(join(appDir, ...comps), join(next, ...comps));
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
