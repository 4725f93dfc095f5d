/**
 * Overlay builds: the install script of a plugin runs in a jail over the world and the
 * plugin's parent overlays (read-only, in order), writing into a fresh upper layer. The build
 * happens in a temporary sibling and is renamed into place only on success, with metadata
 * recording the exact parents and input hashes, so identical inputs are a cache hit.
 */
import { createHash } from "node:crypto";
import { lstatSync, readdirSync, readFileSync, rmdirSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { LjError } from "../errors.ts";
import { getXattr } from "../jail/ffi.ts";
import { BUILD_CAPS, DEFAULT_PATH } from "../jail/spec.ts";
import type { RuntimeBuild } from "../plugins/define.ts";
import { type Discovery, discover, findPlugin, loadHooks, type PluginInfo } from "../plugins/registry.ts";
import { identityOf, OVERLAY_BUILDER } from "../store/identities.ts";
import {
  type OverlayMeta,
  overlayBase,
  readOverlayMeta,
  staleTemps,
  versionDir,
  worldDir,
} from "../store/overlays.ts";
import { paths } from "../store/paths.ts";
import { removeTree } from "../store/tree.ts";
import { defaultWorld, readWorldMeta, worldMounts, worldPath } from "../store/worlds.ts";
import { createBuildDisk } from "./disk.ts";
import { fetchVerified } from "./fetch.ts";
import { buildBind, runBuild, tailLines, whyBuildFailed } from "./isolation.ts";
import { scriptArgv } from "./run.ts";
import { chownTree, copySanitised, reportSanitised, shiftedFrom } from "./sanitise.ts";
import type { BuildLog, OverlayRef } from "./types.ts";

export interface BuiltOverlay extends OverlayRef {
  id: string;
  /** True when an identical build already existed (nothing ran). */
  cached: boolean;
  /** The version directory: meta.json, build.log and root/ (the layer, = path). */
  dir: string;
  meta: OverlayMeta;
  /** The parents it was built on, bottom to top (each already built). */
  parents: BuiltOverlay[];
}

export interface EnsureOverlayOptions {
  world?: string;
  /** Rebuild this overlay even when an identical or same-version build exists. */
  force?: boolean;
  log?: BuildLog;
  discovery?: Discovery;
  /** Where the recipe came from (defaults from the plugin's origin). */
  source?: OverlayMeta["source"];
  /**
   * A runtime version to build this plugin's overlay for (not its parents'): its own overlay,
   * version `<plugin version>+<runtime version>` (see hooks.runtime in the plugin SDK).
   */
  runtime?: RuntimeBuild;
}

/** The plugin's parents, recursively, bottom to top (each once); throws on a cycle. */
export function resolveChain(plugin: PluginInfo, d: Discovery): PluginInfo[] {
  const out: PluginInfo[] = [];
  const seen = new Set<string>();
  const visit = (p: PluginInfo, stack: string[]) => {
    const label = `${p.manifest.type}/${p.manifest.name}`;
    if (stack.includes(label)) {
      throw new LjError("config", "from-cycle", `cycle in "from": ${[...stack, label].join(" -> ")}`, {
        hint: `${p.manifest.file}: key "from" must not lead back to the plugin itself`,
      });
    }
    for (const ref of p.manifest.from) {
      let parent: PluginInfo;
      try {
        parent = findPlugin(d, ref);
      } catch (e) {
        if (e instanceof LjError) {
          throw new LjError(e.kind, e.code, `${p.manifest.file}: key "from": ${e.message}`, {
            hint: e.hint,
            cause: e,
          });
        }
        throw e;
      }
      visit(parent, [...stack, label]);
      const key = `${parent.manifest.type}/${parent.manifest.name}`;
      if (!seen.has(key)) {
        seen.add(key);
        out.push(parent);
      }
    }
  };
  visit(plugin, []);
  return out;
}

const SKIP = new Set([".git", "node_modules", "test", "tests", ".lj-source.json"]);

/** Hashes every recipe file of a plugin directory (not its tests or docs). */
function hashTree(dir: string): string {
  const h = createHash("sha256");
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      if (SKIP.has(n) || n.endsWith(".md")) continue;
      const p = join(d, n);
      const st = lstatSync(p);
      const rel = relative(dir, p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile())
        h.update(`F ${rel} ${st.mode & 0o111 ? "x" : "-"}\n`)
          .update(readFileSync(p))
          .update("\n");
      else if (st.isSymbolicLink()) h.update(`L ${rel}\n`);
    }
  };
  walk(dir);
  return h.digest("hex");
}

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

function defaultSource(p: PluginInfo): OverlayMeta["source"] {
  if (p.origin === "builtin") return { kind: "builtin", path: p.dir };
  if (p.source)
    return {
      kind: "git",
      url: p.source.url,
      ...(p.source.subdir ? { subdir: p.source.subdir } : {}),
      ...(p.source.commit ? { commit: p.source.commit } : {}),
    };
  return { kind: "user", path: p.dir };
}

/** Ensures a plugin's overlay (and its parents') exist for a world, building what is missing. */
export async function ensureOverlay(
  plugin: PluginInfo,
  opts: EnsureOverlayOptions = {},
): Promise<BuiltOverlay> {
  const d = opts.discovery ?? discover();
  const world = opts.world ?? plugin.manifest.world ?? (await defaultWorld());
  worldPath(world);
  const chain = resolveChain(plugin, d);
  const built: BuiltOverlay[] = [];
  for (const parent of chain) {
    // Each parent is built over the world and its own parents (which precede it in the chain).
    const own = resolveChain(parent, d).map(
      (p) => built.find((b) => b.type === p.manifest.type && b.name === p.manifest.name)!,
    );
    built.push(
      await buildOne(parent, own, { ...opts, force: false, source: undefined, runtime: undefined }, world),
    );
  }
  return buildOne(plugin, built, opts, world);
}

async function buildOne(
  plugin: PluginInfo,
  parents: BuiltOverlay[],
  opts: EnsureOverlayOptions,
  world: string,
): Promise<BuiltOverlay> {
  const m = plugin.manifest;
  const rt = opts.runtime;
  // A runtime version is an overlay of its own: semver build metadata keeps it apart.
  const version = rt ? `${m.version}+${rt.version}` : m.version;
  const label = `${m.type}/${m.name}@${version}`;
  const log = opts.log ?? (() => {});
  const wmeta = await readWorldMeta(world);
  const hooks = await loadHooks(m);
  const hookEnv = {
    ...((await hooks.installEnv?.({ world, version: m.version })) ?? {}),
    ...(rt ? { ...rt.env, LJ_RUNTIME_VERSION: rt.version } : {}),
  };
  const inputs: Record<string, string> = {
    recipe: hashTree(m.dir),
    world: sha(`${world}\n${wmeta?.createdAt ?? ""}\n${wmeta?.source ?? ""}`),
    parents: sha(parents.map((p) => `${p.type}/${p.name}@${p.version}#${p.id}`).join("\n")),
    settings: sha(
      JSON.stringify({
        store: plugin.storeKey,
        install: m.install,
        copy: m.copy,
        hookEnv,
        inline: m.inlineScript ?? null,
        downloads: rt?.downloads ?? [],
      }),
    ),
  };
  const inputsHash = sha(JSON.stringify(inputs));
  const final = versionDir(m.type, plugin.storeKey, world, version);
  const existing = readOverlayMeta(final);
  if (existing && !opts.force) {
    if (existing.inputsHash === inputsHash) {
      log(`${label}: up to date (cache hit, built ${existing.builtAt}, inputs ${inputsHash.slice(0, 12)})`);
      return result(plugin, version, existing, final, parents, true);
    }
    const changed = Object.keys(inputs).filter((k) => existing.inputs[k] !== inputs[k]);
    throw new LjError(
      "conflict",
      "version-exists",
      `${label} over world ${world} is already built from other inputs (changed: ${changed.join(", ")}); versions are immutable`,
      {
        hint: `bump "version" in ${m.file}, or pass --force to rebuild it`,
      },
    );
  }

  const wdir = worldDir(m.type, plugin.storeKey, world);
  await fsp.mkdir(wdir, { recursive: true });
  await staleTemps(wdir);
  const tmp = await fsp.mkdtemp(join(wdir, `.tmp-${version}-`));
  await fsp.chmod(tmp, 0o755);
  await fsp.writeFile(join(tmp, "owner.pid"), String(process.pid));
  const logFile = join(tmp, "build.log");
  const started = performance.now();
  const who = identityOf("builder", OVERLAY_BUILDER);
  const disk = createBuildDisk(`overlay-${m.name}`, OVERLAY_DISK_MB * 1048576, who);
  const upper = join(disk.path, "upper");
  try {
    log(
      `${label}: building over world ${world}${parents.length ? ` + ${parents.map((p) => `${p.type}/${p.name}@${p.version}`).join(" + ")}` : ""}`,
    );
    await fsp.mkdir(upper, { mode: 0o755 });
    for (const c of m.copy) {
      const dst = join(upper, c.dst);
      await fsp.mkdir(dirname(dst), { recursive: true });
      await fsp.cp(join(m.dir, c.src), dst, { recursive: true, verbatimSymlinks: true });
    }
    chownTree(upper, who.uid, who.gid);
    const files = join(tmp, "files");
    await fsp.mkdir(files, { mode: 0o755 });
    for (const f of rt?.downloads ?? []) {
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(f.name)) {
        throw new LjError(
          "config",
          "bad-download-name",
          `${label}: download name ${JSON.stringify(f.name)} is not a plain file name`,
        );
      }
      await fetchVerified(f.url, f.integrity, join(files, f.name), (l) => log(`${label}: ${l}`));
    }
    const argv = await installArgv(m, tmp);
    const wm = await worldMounts(world);
    if (argv) {
      const limits = { ...m.install, diskMb: OVERLAY_DISK_MB };
      const run = await runBuild({
        identity: who,
        net: m.install.net,
        limits,
        argv,
        env: {
          PATH: DEFAULT_PATH,
          HOME: "/root",
          LANG: "C.UTF-8",
          DEBIAN_FRONTEND: "noninteractive",
          LJ_OVERLAY_TYPE: m.type,
          LJ_OVERLAY_NAME: m.name,
          LJ_OVERLAY_VERSION: version,
          LJ_WORLD: world,
          LJ_PLUGIN_DIR: "/tmp/lj/plugin",
          ...m.install.env,
          ...hookEnv,
        },
        cwd: "/",
        layers: [worldPath(world), ...parents.map((p) => p.path)],
        upper,
        mounts: [
          ...wm,
          buildBind(m.dir, "/tmp/lj/plugin"),
          buildBind(files, "/tmp/lj/files"),
          ...(m.inlineScript !== undefined ? [buildBind(join(tmp, "install"), "/tmp/lj/install")] : []),
        ],
        // Root of its own user namespace: these mean nothing outside it.
        caps: [...BUILD_CAPS],
        label: m.name,
        log,
        logFile,
      });
      if (run.result.status !== 0) {
        const kept = await keepFailedLog(logFile, m.type, m.name, version);
        throw new LjError(
          "internal",
          "install-failed",
          `${label}: the install script ${whyBuildFailed(run, limits)}; nothing was published\n${tailLines(run)}`,
          { hint: `full log: ${kept}; fix the script and run the build again` },
        );
      }
    } else {
      await fsp.writeFile(logFile, `${label}: no install script; the overlay holds only copied files\n`);
    }
    // What the build wrote, sanitised, owned as it was inside (src/build/sanitise.ts); mount
    // points and scratch the jail itself made never belong to the overlay.
    const published = copySanitised(upper, join(tmp, "root"), {
      owner: shiftedFrom(who.uid, who.count),
      skip: (rel) => SCRATCH.has(rel),
      overlayMarks: true,
    });
    reportSanitised(published, log);
    pruneMountPoints(
      join(tmp, "root"),
      wm.map((m) => m.dst),
    );
    const meta: OverlayMeta = {
      version: 1,
      id: inputsHash.slice(0, 16),
      name: m.name,
      type: m.type,
      overlayVersion: version,
      world,
      storeKey: plugin.storeKey,
      source: opts.source ?? defaultSource(plugin),
      parents: parents.map((p) => ({
        type: p.type,
        name: p.name,
        version: p.version,
        id: p.id,
        path: p.path,
      })),
      inputsHash,
      inputs,
      sizeBytes: published.bytes,
      builtAt: new Date().toISOString(),
      durationMs: Math.round(performance.now() - started),
      env: m.env,
    };
    await fsp.writeFile(join(tmp, "meta.json"), `${JSON.stringify(meta, null, 2)}\n`);
    await fsp.rm(join(tmp, "install"), { force: true });
    await fsp.rm(files, { recursive: true, force: true });
    await fsp.rm(join(tmp, "owner.pid"), { force: true });
    await publish(tmp, final, opts.force === true);
    log(
      `${label}: published ${final} (${(meta.sizeBytes / 1048576).toFixed(1)} MiB in ${(meta.durationMs / 1000).toFixed(1)}s)`,
    );
    return result(plugin, version, meta, final, parents, false);
  } catch (e) {
    await removeTree(tmp).catch(() => {});
    throw e;
  } finally {
    disk.dispose();
  }
}

function result(
  plugin: PluginInfo,
  version: string,
  meta: OverlayMeta,
  dir: string,
  parents: BuiltOverlay[],
  cached: boolean,
): BuiltOverlay {
  return {
    type: plugin.manifest.type,
    name: plugin.manifest.name,
    version,
    path: join(dir, "root"),
    id: meta.id,
    cached,
    dir,
    meta,
    parents,
  };
}

/** The install command, or null for a plugin without one (the script is mounted, never copied in). */
async function installArgv(m: PluginInfo["manifest"], tmp: string): Promise<string[] | null> {
  if (m.inlineScript !== undefined) {
    await fsp.writeFile(join(tmp, "install"), m.inlineScript, { mode: 0o755 });
    return scriptArgv(m.inlineScript, "/tmp/lj/install");
  }
  if (!m.install.script) return null;
  const text = readFileSync(join(m.dir, m.install.script), "utf8");
  return scriptArgv(text, `/tmp/lj/plugin/${m.install.script}`);
}

/** Where an overlay build writes; `LJ_OVERLAY_DISK_MB` sets its size. */
const OVERLAY_DISK_MB = Number(process.env.LJ_OVERLAY_DISK_MB) || 8192;

/**
 * The directories a build's mounts needed (a host world's /usr/bin, /var/lib/dpkg) stay in its
 * output when it wrote nothing there: remove them, and their parents, while they are empty
 * (and not opaque: an empty opaque directory hides what lies below).
 */
function pruneMountPoints(root: string, targets: string[]): void {
  for (const t of targets) {
    let rel = t.replace(/^\/+|\/+$/g, "");
    while (rel !== "" && rel !== ".") {
      const p = join(root, rel);
      try {
        if (readdirSync(p).length > 0 || getXattr(p, "trusted.overlay.opaque")?.toString() === "y") break;
        rmdirSync(p);
      } catch {
        break;
      }
      rel = dirname(rel);
    }
  }
}

/** Top-level directories of a build's output that are the jail's mount points and scratch. */
const SCRATCH = new Set(["tmp", "proc", "dev", "sys", "run"]);

async function publish(tmp: string, final: string, replace: boolean): Promise<void> {
  let old: string | undefined;
  if (replace && readOverlayMeta(final)) {
    old = join(dirname(final), `.rm-${Date.now()}-${process.pid}`);
    await fsp.rename(final, old);
  }
  try {
    await fsp.rename(tmp, final);
  } catch (e) {
    if (old) await fsp.rename(old, final).catch(() => {});
    throw new LjError("conflict", "overlay-exists", `cannot publish ${final}: ${(e as Error).message}`, {
      hint: "another build published it first; run the build again",
    });
  }
  if (old) await removeTree(old);
}

async function keepFailedLog(logFile: string, type: string, name: string, version: string): Promise<string> {
  const dir = join(paths.buildTmp(), "failed");
  await fsp.mkdir(dir, { recursive: true });
  const dst = join(dir, `${type}-${name}-${version}-${Date.now()}.log`);
  await fsp.copyFile(logFile, dst).catch(() => {});
  return dst;
}

export { overlayBase };

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
