/**
 * Plugin discovery. Overlay types are folders: `plugins/<type>s/<name>/` in the project
 * (built-ins) and `$LIGHTJAIL_ROOT/plugins/<type>s/<name>/` (installed by users). Any folder
 * whose name ends in "s" is a type, so `tools/` is a new type with no code change. A plugin is
 * a plugin.toml (or a Jailfile) plus scripts, and optionally an index.ts with hooks.
 */
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import { LjError } from "../errors.ts";
import { paths } from "../store/paths.ts";
import type { PluginHooks } from "./define.ts";
import { loadJailfile } from "./jailfile.ts";
import { loadManifest, type Manifest } from "./manifest.ts";

export const projectDir = resolve(import.meta.dir, "..", "..");
export const builtinPluginsDir = (): string => process.env.LJ_BUILTIN_PLUGINS ?? join(projectDir, "plugins");

export type PluginOrigin = "builtin" | "user";

export interface PluginInfo {
  manifest: Manifest;
  origin: PluginOrigin;
  dir: string;
  /** Where its overlays are stored, under <type>s/ (seed layout; see docs/overlays.md). */
  storeKey: string;
  /** Git origin of a user plugin added with `lj plugins add` (from .lj-source.json). */
  source?: { url: string; subdir?: string; commit?: string };
}

export interface PluginProblem {
  dir: string;
  error: LjError;
}

export interface Discovery {
  plugins: PluginInfo[];
  problems: PluginProblem[];
  /** Types seen (folder names without the "s"), built-in and user. */
  types: string[];
}

export const SOURCE_FILE = ".lj-source.json";

function dirs(p: string): string[] {
  try {
    return readdirSync(p)
      .filter((n) => !n.startsWith(".") && n !== "node_modules")
      .filter((n) => {
        try {
          return statSync(join(p, n)).isDirectory();
        } catch {
          return false;
        }
      })
      .sort();
  } catch {
    return [];
  }
}

/** Loads one plugin directory: plugin.toml, else a Jailfile; checks scripts exist. */
export function loadPluginDir(dir: string, type?: string): Manifest {
  let m: Manifest;
  if (!existsSync(join(dir, "plugin.toml")) && existsSync(join(dir, "Jailfile"))) {
    m = loadJailfile(join(dir, "Jailfile"), { type });
  } else {
    m = loadManifest(dir);
  }
  if (type !== undefined && m.type !== type) {
    throw new LjError(
      "config",
      "manifest-type-mismatch",
      `${m.file}: key "type": expected "${type}" (the plugin lives in ${type}s/), got "${m.type}"`,
      {
        hint: `move the plugin to ${m.type}s/ or change its type`,
      },
    );
  }
  for (const [key, rel] of [
    ["install.script", m.install.script],
    ["build.script", m.build?.script],
  ] as const) {
    if (rel !== undefined && !existsSync(join(dir, rel))) {
      throw new LjError(
        "config",
        "manifest-script-missing",
        `${m.file}: key "${key}": expected an existing file, but ${join(dir, rel)} does not exist`,
      );
    }
  }
  for (const c of m.copy) {
    if (!existsSync(join(dir, c.src))) {
      throw new LjError(
        "config",
        "jailfile-copy-missing",
        `${m.file}: copy: expected ${join(dir, c.src)} to exist`,
      );
    }
  }
  if (existsSync(join(dir, "index.ts"))) m.hooks = join(dir, "index.ts");
  return m;
}

function readSource(dir: string): PluginInfo["source"] {
  try {
    return JSON.parse(readFileSync(join(dir, SOURCE_FILE), "utf8"));
  } catch {
    return undefined;
  }
}

export function discover(): Discovery {
  const plugins: PluginInfo[] = [];
  const problems: PluginProblem[] = [];
  const types = new Set<string>();
  const roots: [string, PluginOrigin][] = [
    [builtinPluginsDir(), "builtin"],
    [paths.plugins(), "user"],
  ];
  for (const [root, origin] of roots) {
    for (const folder of dirs(root)) {
      if (!folder.endsWith("s") || folder.length < 2) continue;
      const type = folder.slice(0, -1);
      types.add(type);
      for (const name of dirs(join(root, folder))) {
        const dir = join(root, folder, name);
        try {
          const manifest = loadPluginDir(dir, type);
          if (manifest.name !== name) {
            throw new LjError(
              "config",
              "manifest-name-mismatch",
              `${manifest.file}: key "name": expected "${name}" (the folder's name), got "${manifest.name}"`,
            );
          }
          const source = origin === "user" ? readSource(dir) : undefined;
          plugins.push({
            manifest,
            origin,
            dir,
            storeKey: storeKeyFor(origin, name, source),
            ...(source ? { source } : {}),
          });
        } catch (e) {
          if (!(e instanceof LjError)) throw e;
          problems.push({ dir, error: e });
        }
      }
    }
  }
  return { plugins, problems, types: [...types].sort() };
}

function storeKeyFor(origin: PluginOrigin, name: string, source: PluginInfo["source"]): string {
  if (origin === "builtin") return `_builtin/${name}`;
  if (source) return sourceKey(source.url, source.subdir);
  return `_user/${name}`;
}

/**
 * Storage key of a git source (seed layout): host and path of the URL without scheme, user,
 * or ".git", then the subdirectory. `https://github.com/myfreeweb/lightjail.git` + `overlays/ruby`
 * -> `github.com/myfreeweb/lightjail/overlays/ruby`. Local paths get `_local/<absolute path>`.
 * Names starting with "_" cannot be DNS hosts, so built-ins (`_builtin/`) never collide.
 */
export function sourceKey(url: string, subdir?: string): string {
  let rest: string;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i.exec(url);
  if (scheme?.[2] !== undefined) {
    rest = scheme[1]!.toLowerCase() === "file" ? `_local/${scheme[2]}` : scheme[2].replace(/^[^/@]*@/, "");
  } else if (/^[^/:]+@[^/:]+:/.test(url)) {
    rest = url.replace(/^[^@]+@/, "").replace(":", "/");
  } else if (url.startsWith("/")) {
    rest = `_local${url}`;
  } else {
    rest = url;
  }
  rest = rest.replace(/\/+$/, "").replace(/\.git$/, "");
  const parts = [...rest.split("/"), ...(subdir ? subdir.split("/") : [])].filter((p) => p !== "");
  for (const p of parts) {
    if (
      p === "." ||
      p === ".." ||
      p.startsWith("@") ||
      p.startsWith(".") ||
      !/^[A-Za-z0-9._~:+@-]+$/.test(p)
    ) {
      throw new LjError(
        "usage",
        "bad-source",
        `cannot store an overlay from ${url}${subdir ? `//${subdir}` : ""}: path component "${p}" is not allowed`,
        {
          hint: "components must use [A-Za-z0-9._~:+@-] and must not start with '.' or '@' (reserved for versions)",
        },
      );
    }
  }
  return parts.join("/");
}

/** Splits `URL//SUBDIR` (the `//` after the scheme's `://`). */
export function splitUrl(spec: string): { url: string; subdir?: string } {
  const start = spec.indexOf("://");
  const from = start >= 0 ? start + 3 : 0;
  const i = spec.indexOf("//", from);
  if (i < 0) return { url: spec };
  const subdir = spec.slice(i + 2).replace(/^\/+|\/+$/g, "");
  return { url: spec.slice(0, i), ...(subdir ? { subdir } : {}) };
}

export function parseTarget(spec: string): { type?: string; name: string } {
  const m = /^(?:([a-z][a-z0-9-]*)\/)?([a-z0-9][a-z0-9_-]*)$/.exec(spec);
  if (!m?.[2])
    throw new LjError("usage", "bad-plugin-name", `"${spec}" is not a plugin name`, {
      hint: "NAME or TYPE/NAME, e.g. ruby or language/ruby",
    });
  return { ...(m[1] ? { type: m[1] } : {}), name: m[2] };
}

/**
 * The plugin TYPE/NAME whose version satisfies `range`: the highest such version; a user
 * plugin wins a tie with a built-in of the same version.
 */
export function findPlugin(
  d: Discovery,
  ref: { type?: string; name: string; constraint?: string },
): PluginInfo {
  if (ref.type !== undefined && !d.types.includes(ref.type)) {
    throw new LjError("not-found", "unknown-type", `unknown overlay type "${ref.type}"`, {
      hint: `known types: ${d.types.join(", ")} (a type is a folder <type>s/ under plugins/)`,
    });
  }
  const label = `${ref.type ? `${ref.type}/` : ""}${ref.name}`;
  const broken = d.problems.find(
    (p) => p.dir.endsWith(`/${ref.name}`) && (!ref.type || p.dir.includes(`/${ref.type}s/`)),
  );
  const named = d.plugins.filter(
    (p) => p.manifest.name === ref.name && (!ref.type || p.manifest.type === ref.type),
  );
  if (named.length === 0) {
    if (broken) throw broken.error;
    throw new LjError("not-found", "plugin-not-found", `no plugin ${label}`, {
      hint: "`lj plugins list` shows the plugins there are",
    });
  }
  const types = new Set(named.map((p) => p.manifest.type));
  if (types.size > 1) {
    throw new LjError(
      "usage",
      "ambiguous-plugin",
      `"${ref.name}" names plugins of several types (${[...types].join(", ")})`,
      {
        hint: `say which: ${[...types].map((t) => `${t}/${ref.name}`).join(" or ")}`,
      },
    );
  }
  const range = ref.constraint ?? "*";
  const ok = named
    .filter((p) => range === "*" || Bun.semver.satisfies(p.manifest.version, range))
    .sort(
      (a, b) => Bun.semver.order(b.manifest.version, a.manifest.version) || (a.origin === "user" ? -1 : 1),
    );
  const best = ok[0];
  if (!best) {
    throw new LjError(
      "not-found",
      "no-matching-version",
      `no version of ${label} satisfies ${range} (have ${named.map((p) => p.manifest.version).join(", ")})`,
    );
  }
  return best;
}

/** Loads a plugin's index.ts hooks; user plugins import the SDK as "lightjail/plugin". */
export async function loadHooks(m: Manifest): Promise<PluginHooks> {
  if (!m.hooks) return {};
  linkSdk();
  let mod: { default?: PluginHooks; plugin?: PluginHooks };
  try {
    mod = await import(m.hooks);
  } catch (e) {
    throw new LjError(
      "config",
      "hooks-failed",
      `${m.hooks}: cannot load the plugin's hooks: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const hooks = mod.default ?? mod.plugin;
  if (!hooks || typeof hooks !== "object") {
    throw new LjError(
      "config",
      "hooks-missing",
      `${m.hooks}: expected a default export made with definePlugin({...})`,
    );
  }
  return hooks;
}

/** Makes `import "lightjail/plugin"` resolve for plugins anywhere under the root. */
function linkSdk(): void {
  const nm = join(paths.root(), "node_modules");
  const link = join(nm, "lightjail");
  try {
    lstatSync(link);
    return;
  } catch {}
  try {
    mkdirSync(nm, { recursive: true });
    symlinkSync(projectDir, link);
  } catch {
    // read-only root: plugins there import by relative path instead
  }
}
