/**
 * The overlay store. Seed layout: `<type>s/<repo url>[/<subdir>]` under the root; built-ins
 * use `<type>s/_builtin/<name>`. Beneath that directory each build is
 * `@<world>/<version>/` holding `root/` (the layer), `meta.json` and `build.log`. Builds are made
 * in `@<world>/.tmp-<version>-*` and renamed into place only on success.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { join, relative } from "node:path";
import { LjError } from "../errors.ts";
import { paths } from "./paths.ts";
import { removeTree } from "./tree.ts";

export interface OverlayMeta {
  version: 1;
  id: string;
  name: string;
  type: string;
  overlayVersion: string;
  world: string;
  storeKey: string;
  /** Where the recipe came from: builtin, user, git (url, subdir, commit) or a local Jailfile. */
  source: {
    kind: "builtin" | "user" | "git" | "local";
    url?: string;
    subdir?: string;
    commit?: string;
    path?: string;
  };
  /** The exact parents used, bottom to top (pinned at build time). */
  parents: { type: string; name: string; version: string; id: string; path: string }[];
  inputsHash: string;
  inputs: Record<string, string>;
  sizeBytes: number;
  builtAt: string;
  durationMs: number;
  /** Default process types and environment, for apps running over this overlay. */
  env: Record<string, string>;
}

export interface StoredOverlay {
  meta: OverlayMeta;
  /** The version directory (meta.json, build.log, root/). */
  dir: string;
  /** The layer. */
  path: string;
}

export const overlayBase = (type: string, storeKey: string): string =>
  join(paths.overlayType(type), storeKey);
export const worldDir = (type: string, storeKey: string, world: string): string =>
  join(overlayBase(type, storeKey), `@${world}`);
export const versionDir = (type: string, storeKey: string, world: string, version: string): string =>
  join(worldDir(type, storeKey, world), version);

export function readOverlayMeta(dir: string): OverlayMeta | null {
  try {
    return JSON.parse(readFileSync(join(dir, "meta.json"), "utf8")) as OverlayMeta;
  } catch {
    return null;
  }
}

export function storedOverlay(dir: string): StoredOverlay | null {
  const meta = readOverlayMeta(dir);
  return meta ? { meta, dir, path: join(dir, "root") } : null;
}

const isDir = (p: string) => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
};

/** Reserved top-level names that are never overlay types. */
const NOT_TYPES = new Set(["worlds", "plugins", "slugs", "paas", "run", "tmp", "cache", "node_modules"]);

/** Every published overlay under the root (walks <type>s/ trees for @<world>/<version>/meta.json). */
export function listOverlays(): StoredOverlay[] {
  const out: StoredOverlay[] = [];
  let top: string[];
  try {
    top = readdirSync(paths.root());
  } catch {
    return out;
  }
  const walk = (dir: string, depth: number) => {
    if (depth > 24) return;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const n of names.sort()) {
      const p = join(dir, n);
      if (n.startsWith(".") || !isDir(p)) continue;
      if (n.startsWith("@")) {
        for (const v of readdirSync(p).sort()) {
          if (v.startsWith(".")) continue;
          const o = storedOverlay(join(p, v));
          if (o) out.push(o);
        }
      } else walk(p, depth + 1);
    }
  };
  for (const t of top.sort()) {
    if (!t.endsWith("s") || NOT_TYPES.has(t) || t.startsWith(".")) continue;
    walk(join(paths.root(), t), 0);
  }
  return out;
}

export const overlayLabel = (m: OverlayMeta) => `${m.type}/${m.name}@${m.overlayVersion} (${m.world})`;

/** Finds overlays by TYPE/NAME[@VERSION], NAME, store path (relative or absolute) or id. */
export function findOverlays(query: string): StoredOverlay[] {
  const all = listOverlays();
  const abs = query.startsWith("/") ? query.replace(/\/root\/?$/, "").replace(/\/+$/, "") : undefined;
  return all.filter((o) => {
    if (abs) return o.dir === abs;
    if (o.meta.id === query || (o.meta.id.startsWith(query) && query.length >= 8)) return true;
    const rel = relative(paths.root(), o.dir);
    if (rel === query || rel.startsWith(`${query}/`)) return true;
    const m = /^(?:([a-z][a-z0-9-]*)\/)?([a-z0-9][a-z0-9_-]*)(?:@(.+))?$/.exec(query);
    if (!m) return false;
    return (
      (!m[1] || m[1] === o.meta.type) && m[2] === o.meta.name && (!m[3] || m[3] === o.meta.overlayVersion)
    );
  });
}

/** Removes one published overlay: renamed away first, so it vanishes atomically. */
export async function removeOverlay(o: StoredOverlay, opts: { force?: boolean } = {}): Promise<void> {
  const users = overlayUsers(o);
  if (users.length > 0 && !opts.force) {
    throw new LjError(
      "conflict",
      "overlay-in-use",
      `${overlayLabel(o.meta)} is used by ${users.slice(0, 3).join(", ")}`,
      {
        hint: "remove those first, or pass --force",
      },
    );
  }
  const doomed = join(o.dir, "..", `.rm-${o.meta.overlayVersion}-${process.pid}-${Date.now()}`);
  await fsp.rename(o.dir, doomed);
  await removeTree(doomed);
}

interface SlugRef {
  app: string;
  id: string;
  overlays: { path: string }[];
}

/** Slug metadata (slugs/<app>/<id>.json): which overlays each built app runs on. */
export function listSlugRefs(): SlugRef[] {
  const out: SlugRef[] = [];
  for (const app of safeReaddir(paths.slugs())) {
    for (const f of safeReaddir(join(paths.slugs(), app))) {
      if (!f.endsWith(".json")) continue;
      try {
        const s = JSON.parse(readFileSync(join(paths.slugs(), app, f), "utf8")) as SlugRef;
        out.push({ app, id: f.slice(0, -5), overlays: s.overlays ?? [] });
      } catch {}
    }
  }
  return out;
}

function safeReaddir(p: string): string[] {
  try {
    return readdirSync(p).sort();
  } catch {
    return [];
  }
}

/** Who uses an overlay: slugs (releases are slugs) and overlays built on top of it. */
export function overlayUsers(o: StoredOverlay, all = listOverlays(), slugs = listSlugRefs()): string[] {
  const users: string[] = [];
  for (const s of slugs) if (s.overlays.some((x) => x.path === o.path)) users.push(`slug ${s.app}/${s.id}`);
  for (const other of all)
    if (other.meta.parents.some((p) => p.id === o.meta.id && p.path === o.path))
      users.push(`overlay ${overlayLabel(other.meta)}`);
  return users;
}

/**
 * Removes overlays no slug (release) uses, directly or through a child overlay, plus
 * leftovers of interrupted builds whose builder is gone. Returns what was (or would be) removed.
 */
export async function gcOverlays(
  opts: { dryRun?: boolean } = {},
): Promise<{ removed: string[]; leftovers: string[] }> {
  const all = listOverlays();
  const byPath = new Map(all.map((o) => [o.path, o]));
  const keep = new Set<string>();
  const mark = (path: string) => {
    if (keep.has(path)) return;
    keep.add(path);
    for (const p of byPath.get(path)?.meta.parents ?? []) mark(p.path);
  };
  for (const s of listSlugRefs()) for (const o of s.overlays) mark(o.path);
  const removed: string[] = [];
  for (const o of all) {
    if (keep.has(o.path)) continue;
    removed.push(overlayLabel(o.meta));
    if (!opts.dryRun) await removeOverlay(o, { force: true });
  }
  const leftovers: string[] = [];
  for (const o of new Set(all.map((x) => join(x.dir, ".."))))
    leftovers.push(...(await staleTemps(o, opts.dryRun)));
  return { removed, leftovers };
}

/** `.tmp-*` / `.rm-*` directories whose owner process is gone (interrupted builds). */
export async function staleTemps(parent: string, dryRun = false): Promise<string[]> {
  const out: string[] = [];
  for (const n of safeReaddir(parent)) {
    if (!n.startsWith(".tmp-") && !n.startsWith(".rm-")) continue;
    const p = join(parent, n);
    if (n.startsWith(".tmp-") && ownerAlive(p)) continue;
    out.push(p);
    if (!dryRun) await removeTree(p).catch(() => {});
  }
  return out;
}

export function ownerAlive(tmp: string): boolean {
  try {
    const pid = Number(readFileSync(join(tmp, "owner.pid"), "utf8"));
    if (!(pid > 0)) return false;
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function overlayExists(dir: string): boolean {
  return existsSync(join(dir, "meta.json"));
}
