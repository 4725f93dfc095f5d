/**
 * Detection and planning: which plugin builds an app, over which overlay chain, with which
 * build script, processes, environment and limits. lj.toml in the app overrides detection
 * and adds settings; a Procfile defines process types.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { Glob } from "bun";
import { LjError } from "../errors.ts";
import type {
  AppContext,
  DetectResult,
  PlanDraft,
  PluginHooks,
  RuntimeBuild,
  RuntimeRequest,
} from "../plugins/define.ts";
import { ManifestReader, parseToml } from "../plugins/manifest.ts";
import {
  type Discovery,
  discover,
  findPlugin,
  loadHooks,
  type PluginInfo,
  parseTarget,
} from "../plugins/registry.ts";
import { defaultWorld } from "../store/worlds.ts";
import { resolveChain } from "./overlays.ts";
import type { AppPlan } from "./types.ts";

export interface AppSettings {
  plugin?: string;
  world?: string;
  env: Record<string, string>;
  processes: Record<string, string>;
  buildEnv: Record<string, string>;
  /** Extra command run after the plugin's build script. */
  buildCommand?: string;
  /** `[build] net = "none"`: the build needs nothing from the network. */
  buildNet?: "egress" | "none";
  limits: { memoryMb?: number; pids?: number; cpus?: number };
  pluginSettings: Record<string, Record<string, unknown>>;
}

/** A plan plus what buildApp needs that the PaaS does not (all optional in the contract). */
export interface FullPlan extends AppPlan {
  dir: string;
  plugin: { type: string; name: string; version: string; dir: string };
  lockfiles: string[];
  /** The build script inside the jail and the plugin directory mounted there. */
  buildScriptPath: string | null;
  /** The runtime version the app asked for (`engines.node`...) and the exact one chosen. */
  runtime?: RuntimeRequest & { version: string };
  /** What the builder's overlay installs for it (its own overlay, see ensureOverlay). */
  runtimeBuild?: RuntimeBuild;
  /** Only the limits the app's lj.toml sets (no defaults): what its slug asks for. */
  appLimits: { memoryMb?: number; pids?: number; cpus?: number };
}

const LJ_TOML_KEYS = ["plugin", "world", "env", "processes", "build", "limits", "plugin_settings"];

export function readAppSettings(dir: string): AppSettings {
  const file = join(dir, "lj.toml");
  const s: AppSettings = { env: {}, processes: {}, buildEnv: {}, limits: {}, pluginSettings: {} };
  if (!existsSync(file)) return s;
  const text = readFileSync(file, "utf8");
  const data = parseToml(file, text);
  const r = new ManifestReader(file, text);
  for (const k of Object.keys(data))
    if (!LJ_TOML_KEYS.includes(k))
      r.fail(k, `one of the known keys (${LJ_TOML_KEYS.join(", ")}); this key is unknown`);
  const plugin = r.str(data, "plugin", "plugin", { what: "a plugin name (NAME or TYPE/NAME)" });
  if (plugin !== undefined) s.plugin = plugin;
  const world = r.str(data, "world", "world");
  if (world !== undefined) s.world = world;
  s.env = r.strMap(data, "env", "env");
  s.processes = r.strMap(data, "processes", "processes");
  const b = (data.build ?? {}) as Record<string, unknown>;
  if (typeof b !== "object" || Array.isArray(b)) r.fail("build", "a table", b);
  for (const k of Object.keys(b))
    if (!["env", "command", "net"].includes(k))
      r.fail(`build.${k}`, "one of env, command, net; this key is unknown");
  if (b.net !== undefined) s.buildNet = r.net(b, "net", "build.net");
  s.buildEnv = r.strMap(b, "env", "build.env");
  const cmd = r.str(b, "command", "build.command");
  if (cmd !== undefined) s.buildCommand = cmd;
  const l = (data.limits ?? {}) as Record<string, unknown>;
  for (const k of Object.keys(l))
    if (!["memory_mb", "pids", "cpus"].includes(k))
      r.fail(`limits.${k}`, "one of memory_mb, pids, cpus; this key is unknown");
  if (l.memory_mb !== undefined) s.limits.memoryMb = r.num(l, "memory_mb", "limits.memory_mb", 0, 16);
  if (l.pids !== undefined) s.limits.pids = r.num(l, "pids", "limits.pids", 0, 1);
  if (l.cpus !== undefined) s.limits.cpus = r.num(l, "cpus", "limits.cpus", 0, 0.01);
  const ps = data.plugin_settings;
  if (ps !== undefined) {
    if (typeof ps !== "object" || ps === null || Array.isArray(ps))
      r.fail("plugin_settings", "a table of tables ([plugin_settings.NAME])", ps);
    s.pluginSettings = ps as Record<string, Record<string, unknown>>;
  }
  return s;
}

/** Procfile: `name: command` lines. */
export function parseProcfile(text: string, file = "Procfile"): Record<string, string> {
  const out: Record<string, string> = {};
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const m = /^([A-Za-z0-9_-]+)\s*:\s*(.+)$/.exec(line);
    if (!m?.[1] || !m[2]) {
      throw new LjError(
        "config",
        "invalid-procfile",
        `${file}:${i + 1}: expected "name: command", got ${JSON.stringify(line)}`,
      );
    }
    out[m[1]] = m[2].trim();
  });
  return out;
}

export function appContext(dir: string, settings: Record<string, unknown> = {}): AppContext {
  const read = (rel: string) => {
    try {
      return readFileSync(join(dir, rel), "utf8");
    } catch {
      return null;
    }
  };
  return {
    dir,
    exists: (rel) => existsSync(join(dir, rel)),
    read,
    readJson<T>(rel: string): T | null {
      const t = read(rel);
      if (t === null) return null;
      try {
        return JSON.parse(t) as T;
      } catch {
        return null;
      }
    },
    glob(pattern) {
      const out: string[] = [];
      for (const f of new Glob(pattern).scanSync({ cwd: dir, dot: false })) {
        if (f.startsWith("node_modules/") || f.startsWith(".git/")) continue;
        out.push(f);
        if (out.length >= 1000) break;
      }
      return out.sort();
    },
    settings,
  };
}

/** The manifest's [detect] rules: any file glob matches, and every content pattern matches. */
export function manifestDetect(p: PluginInfo, app: AppContext): DetectResult | null {
  const det = p.manifest.detect;
  if (!det) return null;
  const reasons: string[] = [];
  if (det.files.length > 0) {
    const hit = det.files.map((g) => [g, app.glob(g)[0]] as const).find(([, f]) => f !== undefined);
    if (!hit) return null;
    reasons.push(hit[0] === hit[1] ? `${hit[1]} present` : `${hit[1]} matches ${hit[0]}`);
  }
  for (const [file, re] of Object.entries(det.contains)) {
    const text = app.read(file);
    if (text === null || !new RegExp(re, "m").test(text)) return null;
    reasons.push(`${file} matches /${re}/`);
  }
  return { reasons, priority: det.priority };
}

interface Detected {
  plugin: PluginInfo;
  result: DetectResult;
}

export async function detectPlugins(dir: string, d: Discovery, settings: AppSettings): Promise<Detected[]> {
  const out: Detected[] = [];
  for (const p of d.plugins) {
    if (!p.manifest.build) continue;
    const app = appContext(dir, settings.pluginSettings[p.manifest.name] ?? {});
    const fromManifest = manifestDetect(p, app);
    const hooks = await loadHooks(p.manifest);
    const r = hooks.detect ? await hooks.detect(app, fromManifest) : fromManifest;
    if (r && r.reasons.length > 0)
      out.push({
        plugin: p,
        result: { reasons: r.reasons, priority: r.priority ?? p.manifest.detect?.priority ?? 0 },
      });
  }
  // Highest priority first; user plugins before built-ins on a tie, then by name.
  return out.sort(
    (a, b) =>
      (b.result.priority ?? 0) - (a.result.priority ?? 0) ||
      (a.plugin.origin === b.plugin.origin ? 0 : a.plugin.origin === "user" ? -1 : 1) ||
      a.plugin.manifest.name.localeCompare(b.plugin.manifest.name),
  );
}

export const DEFAULT_LIMITS = { memoryMb: 512, pids: 256 };

/**
 * The runtime version an app asks for, resolved by its builder plugin (hooks.runtime): null
 * when it asks for none (the world's own runtime) or the plugin offers no versions. A version
 * the plugin cannot give fails the plan, saying which it can.
 */
async function resolveRuntime(
  plugin: string,
  hooks: PluginHooks,
  app: AppContext,
  world: string,
): Promise<{ request: RuntimeRequest & { version: string }; build: RuntimeBuild } | null> {
  const req = hooks.runtime?.request(app);
  if (!req || !hooks.runtime) return null;
  try {
    const build = await hooks.runtime.resolve(req, { world, env: process.env });
    return { request: { ...req, version: build.version }, build };
  } catch (e) {
    throw new LjError(
      "unavailable",
      "runtime-unavailable",
      `${req.from} asks for ${plugin} ${JSON.stringify(req.constraint)}: ${(e as Error).message}`,
      { hint: `ask for a version the ${plugin} plugin offers, or remove the request to use the world's own` },
    );
  }
}

export async function planApp(
  dir: string,
  opts: { world?: string; discovery?: Discovery } = {},
): Promise<FullPlan> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new LjError("not-found", "app-not-found", `app directory ${dir} does not exist`);
  }
  const d = opts.discovery ?? discover();
  const settings = readAppSettings(dir);
  let detected: Detected[];
  let builder: PluginInfo;
  if (settings.plugin) {
    const t = parseTarget(settings.plugin);
    builder = findPlugin(d, t);
    if (!builder.manifest.build) {
      throw new LjError(
        "config",
        "plugin-cannot-build",
        `${join(dir, "lj.toml")}: key "plugin": ${builder.manifest.type}/${builder.manifest.name} has no [build] section, so it cannot build apps`,
      );
    }
    detected = [{ plugin: builder, result: { reasons: [`lj.toml sets plugin = "${settings.plugin}"`] } }];
  } else {
    detected = await detectPlugins(dir, d, settings);
    const first = detected[0];
    if (!first) {
      const known = d.plugins.filter((p) => p.manifest.build).map((p) => p.manifest.name);
      throw new LjError("invalid", "nothing-detected", `no plugin detects the app in ${dir}`, {
        hint: `add the files a plugin looks for (${known.join(", ")}: see \`lj plugins info NAME\`), or set plugin = "NAME" in lj.toml`,
      });
    }
    builder = first.plugin;
  }
  const m = builder.manifest;
  const chain = [...resolveChain(builder, d), builder];
  const world = opts.world ?? settings.world ?? (await defaultWorld());
  const app = appContext(dir, settings.pluginSettings[m.name] ?? {});
  let draft: PlanDraft = {
    build: {
      script: m.build ? `/bin/sh -e /tmp/lj/plugin/${m.build.script}` : "true",
      cacheDirs: [...(m.build?.cache ?? [])],
      env: { ...(m.build?.env ?? {}) },
      net: settings.buildNet ?? m.build?.net ?? "egress",
    },
    processes: Object.fromEntries(Object.entries(m.processes).map(([k, v]) => [k, { command: v }])),
    env: Object.fromEntries(chain.flatMap((p) => Object.entries(p.manifest.env))),
    lockfiles: [...(m.build?.lockfiles ?? [])],
  };
  const hooks = await loadHooks(m);
  const runtimeBuild = await resolveRuntime(m.name, hooks, app, world);
  if (runtimeBuild) draft.runtime = runtimeBuild.request;
  if (hooks.plan) draft = (await hooks.plan(app, draft)) ?? draft;
  const procfile = app.read("Procfile");
  if (procfile !== null)
    for (const [k, v] of Object.entries(parseProcfile(procfile, join(dir, "Procfile"))))
      draft.processes[k] = { command: v };
  for (const [k, v] of Object.entries(settings.processes)) draft.processes[k] = { command: v };
  if (settings.buildCommand) draft.build.script = `${draft.build.script} && ${settings.buildCommand}`;
  Object.assign(draft.build.env, settings.buildEnv);
  Object.assign(draft.env, settings.env);
  return {
    detected: detected.map((x) => ({
      plugin: x.plugin.manifest.name,
      type: x.plugin.manifest.type,
      reasons: x.result.reasons,
    })),
    world,
    overlays: chain.map((p) => ({
      type: p.manifest.type,
      name: p.manifest.name,
      version: p.manifest.version,
    })),
    build: draft.build,
    processes: draft.processes,
    env: draft.env,
    limits: {
      memoryMb: settings.limits.memoryMb ?? DEFAULT_LIMITS.memoryMb,
      pids: settings.limits.pids ?? DEFAULT_LIMITS.pids,
      ...(settings.limits.cpus !== undefined ? { cpus: settings.limits.cpus } : {}),
    },
    dir,
    plugin: { type: m.type, name: m.name, version: m.version, dir: builder.dir },
    lockfiles: draft.lockfiles,
    buildScriptPath: m.build ? `/tmp/lj/plugin/${m.build.script}` : null,
    appLimits: { ...settings.limits },
    ...(draft.runtime ? { runtime: draft.runtime } : {}),
    ...(runtimeBuild ? { runtimeBuild: runtimeBuild.build } : {}),
  };
}
