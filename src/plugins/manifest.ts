/**
 * plugin.toml: the manifest of an overlay plugin. Parsed with @iarna/toml and validated key by
 * key; every error names the file, the line (when the key can be found) and what was expected,
 * so a plugin author can fix a manifest without reading this file.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import TOML from "@iarna/toml";
import { LjError } from "../errors.ts";

export interface ParentRef {
  type: string;
  name: string;
  /** A semver range (`^3`, `>=1.2`, `*`), pinned to an exact version at build time. */
  constraint: string;
}

export interface InstallSection {
  /** Script (relative to the plugin directory) run in the build jail; none = an empty overlay. */
  script?: string;
  net: "egress" | "none";
  memoryMb: number;
  cpus: number;
  pids: number;
  timeoutS: number;
  env: Record<string, string>;
}

export interface DetectSection {
  /** Globs relative to the app directory; any match detects the plugin. */
  files: string[];
  /** File -> regular expression; each must match for the plugin to be detected. */
  contains: Record<string, string>;
  /** The highest priority among detected plugins builds the app. */
  priority: number;
}

export interface BuildSection {
  script: string;
  /** App-relative directories restored before and saved after a build (the dependency cache). */
  cache: string[];
  /** Files whose content keys the cache (the first that exist). */
  lockfiles: string[];
  env: Record<string, string>;
  net: "egress" | "none";
}

export interface HealthCheck {
  command: string;
  intervalS: number;
  timeoutS: number;
  retries: number;
}

export interface ServiceSection {
  /** Command (in the overlay) that starts the service in the foreground; gets PORT and DATA_DIR. */
  start: string;
  port: number;
  /** Persistent directory inside the jail; the PaaS binds a host directory here. */
  dataDir: string;
  /** User the start command drops to (it starts as root with build capabilities). */
  user?: string;
  health: HealthCheck;
  /** Environment a linked app receives; ${HOST} ${PORT} ${PASSWORD} ${NAME} are substituted. */
  env: Record<string, string>;
  /** How to run the world's own server where the plugin's overlay cannot be built. */
  world?: WorldRecipe;
}

/**
 * A service run from binaries the world already has (a host world shares the host's read-only
 * /usr, so the install script cannot install into it). Commands get ${BIN}, the first of
 * `binDirs` that holds `needs`, and run as the service's own user with its data at /data.
 */
export interface WorldRecipe {
  binDirs: string[];
  needs: string;
  /** Run once when the service is created (e.g. initdb). */
  init?: string;
  start: string;
  health: string;
}

export interface Manifest {
  name: string;
  type: string;
  version: string;
  description: string;
  from: ParentRef[];
  install: InstallSection;
  detect: DetectSection | null;
  build: BuildSection | null;
  processes: Record<string, string>;
  env: Record<string, string>;
  service: ServiceSection | null;
  /** Files copied from the plugin directory into the overlay before install (Jailfile `copy`). */
  copy: { src: string; dst: string }[];
  /** The manifest file and its directory. */
  file: string;
  dir: string;
  /** index.ts exporting hooks (definePlugin), when the plugin has one. */
  hooks?: string;
  /** Jailfile recipes: the default world and the inline install script (from its #! line). */
  world?: string;
  inlineScript?: string;
}

export const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const TYPE_RE = /^[a-z][a-z0-9-]{0,30}$/;
/** Semantic Versioning 2.0.0: MAJOR.MINOR.PATCH, an optional -prerelease and +build. */
const IDENT = "[0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*";
const NUM = "(?:0|[1-9]\\d*)";
export const VERSION_RE = new RegExp(`^${NUM}\\.${NUM}\\.${NUM}(?:-${IDENT})?(?:\\+${IDENT})?$`);
export const INSTALL_DEFAULTS = { memoryMb: 2048, cpus: 2, pids: 2048, timeoutS: 3600 };

const TOP_KEYS = [
  "name",
  "type",
  "version",
  "description",
  "from",
  "install",
  "detect",
  "build",
  "processes",
  "env",
  "service",
];
const SECTION_KEYS: Record<string, string[]> = {
  install: ["script", "net", "memory_mb", "cpus", "pids", "timeout_s", "env"],
  detect: ["files", "contains", "priority"],
  build: ["script", "cache", "lockfiles", "env", "net"],
  service: ["start", "port", "data_dir", "user", "health", "env", "world"],
  "service.health": ["command", "interval_s", "timeout_s", "retries"],
  "service.world": ["bin_dirs", "needs", "init", "start", "health"],
};

/** Finds the line of a dotted key in TOML text (best effort: table headers, then `key =`). */
export function lineOfKey(text: string, key: string): number | undefined {
  const lines = text.split("\n");
  const parts = key.split(".");
  const leaf = parts[parts.length - 1] ?? key;
  const table = parts.slice(0, -1).join(".");
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  let current = "";
  let headerLine: number | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? "").trim();
    const h = /^\[\[?\s*([^\]]+?)\s*\]\]?/.exec(line);
    if (h?.[1] !== undefined) {
      current = h[1].replace(/\s/g, "").replace(/"/g, "");
      if (current === key) return i + 1;
      if (current === table) headerLine = i + 1;
      continue;
    }
    if (current === table && new RegExp(`^"?${esc(leaf)}"?\\s*=`).test(line)) return i + 1;
    if (current === "" && new RegExp(`^${esc(key)}\\s*=`).test(line)) return i + 1;
  }
  return headerLine;
}

export class ManifestReader {
  constructor(
    readonly file: string,
    readonly text: string,
  ) {}

  fail(key: string, expected: string, got?: unknown): never {
    const line = key ? lineOfKey(this.text, key) : undefined;
    const where = line ? `${this.file}:${line}` : this.file;
    const gotText = got === undefined ? "" : `, got ${describe(got)}`;
    throw new LjError(
      "config",
      "invalid-manifest",
      `${where}: ${key ? `key "${key}": ` : ""}expected ${expected}${gotText}`,
      {
        hint: "docs/plugins.md lists every manifest key",
      },
    );
  }

  str(
    obj: Record<string, unknown>,
    key: string,
    path: string,
    opts: { required?: boolean; re?: RegExp; what?: string } = {},
  ): string | undefined {
    const v = obj[key];
    if (v === undefined) {
      if (opts.required) this.fail(path, `${opts.what ?? "a string"} (the key is required)`);
      return undefined;
    }
    if (typeof v !== "string") this.fail(path, opts.what ?? "a string", v);
    if (opts.re && !opts.re.test(v)) this.fail(path, opts.what ?? `a string matching ${opts.re}`, v);
    return v;
  }

  num(obj: Record<string, unknown>, key: string, path: string, def: number, min = 0): number {
    const v = obj[key];
    if (v === undefined) return def;
    if (typeof v !== "number" || !Number.isFinite(v) || v < min) this.fail(path, `a number >= ${min}`, v);
    return v;
  }

  strList(obj: Record<string, unknown>, key: string, path: string): string[] {
    const v = obj[key];
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) this.fail(path, "an array of strings", v);
    return v as string[];
  }

  strMap(obj: Record<string, unknown>, key: string, path: string): Record<string, string> {
    const v = obj[key];
    if (v === undefined) return {};
    if (!isTable(v)) this.fail(path, 'a table of strings (KEY = "value")', v);
    const out: Record<string, string> = {};
    for (const [k, x] of Object.entries(v)) {
      if (typeof x !== "string") this.fail(`${path}.${k}`, "a string", x);
      out[k] = x;
    }
    return out;
  }

  table(obj: Record<string, unknown>, key: string, path: string): Record<string, unknown> | undefined {
    const v = obj[key];
    if (v === undefined) return undefined;
    if (!isTable(v)) this.fail(path, "a table", v);
    this.known(v, path);
    return v;
  }

  known(obj: Record<string, unknown>, path: string): void {
    const allowed = path === "" ? TOP_KEYS : SECTION_KEYS[path];
    if (!allowed) return;
    for (const k of Object.keys(obj)) {
      if (!allowed.includes(k)) {
        const full = path ? `${path}.${k}` : k;
        this.fail(full, `one of the known keys (${allowed.join(", ")}); this key is unknown`);
      }
    }
  }

  /**
   * A build's network: "egress" (the outside only: registries, not the host, its API, jails or
   * services) or "none". "host" is read as "egress": no build gets the host's network.
   */
  net(obj: Record<string, unknown>, key: string, path: string): "egress" | "none" {
    const v = this.str(obj, key, path, { what: '"egress" or "none"' }) ?? "egress";
    if (v !== "egress" && v !== "host" && v !== "none") this.fail(path, '"egress" or "none"', v);
    return v === "none" ? "none" : "egress";
  }
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return `an array (${JSON.stringify(v).slice(0, 60)})`;
  if (isTable(v)) return "a table";
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** `type/name[@range]`, `name` (same type as the child) or a table {type, name, version}. */
export function parseParent(raw: string, defaultType: string): ParentRef | string {
  const m = /^(?:([a-z][a-z0-9-]*)\/)?([a-z0-9][a-z0-9_-]*)(?:@(.+)|\s+(.+))?$/.exec(raw.trim());
  if (!m?.[2]) return 'TYPE/NAME[@VERSION-RANGE], e.g. "language/ruby@^1"';
  const constraint = (m[3] ?? m[4] ?? "*").trim();
  if (!isValidRange(constraint)) return `a semver range after @ (e.g. ^1, >=2.0, *), not "${constraint}"`;
  return { type: m[1] ?? defaultType, name: m[2], constraint };
}

/** A version as written in a range: 1, 1.2, 1.2.3, with x or * for any part, and a prerelease. */
const PARTIAL = `(?:${NUM}|[xX*])(?:\\.(?:${NUM}|[xX*])){0,2}(?:-${IDENT})?(?:\\+${IDENT})?`;
const COMPARATOR = new RegExp(`^(?:[~^]|[<>]=?|=)?v?${PARTIAL}$`);
const HYPHEN = new RegExp(`^v?${PARTIAL}\\s+-\\s+v?${PARTIAL}$`);

/**
 * An npm-style range: comparator sets joined by `||`, each a hyphen range or comparators
 * separated by spaces (`^1`, `>=1.2 <2`, `1.x`, `1.0 - 2.0`, `*`). Bun.semver.satisfies
 * quietly answers false for nonsense like `lolwut`, so the grammar is checked here.
 */
export function isValidRange(range: string): boolean {
  if (range.length > 200) return false;
  return range.split("||").every((set) => {
    const s = set.trim().replace(/([<>]=?|=|[~^])\s+/g, "$1");
    if (s === "") return false;
    if (HYPHEN.test(s)) return true;
    return s.split(/\s+/).every((c) => COMPARATOR.test(c));
  });
}

export function parseToml(file: string, text: string): Record<string, unknown> {
  try {
    return TOML.parse(text) as Record<string, unknown>;
  } catch (e) {
    const err = e as { line?: number; col?: number; message?: string };
    const first = (err.message ?? String(e)).split("\n")[0]?.replace(/ at row \d+, col \d+, pos \d+:?$/, "");
    const where = err.line !== undefined ? `${file}:${err.line + 1}:${(err.col ?? 0) + 1}` : file;
    throw new LjError("config", "invalid-toml", `${where}: invalid TOML: ${first}`, {
      hint: "check quoting, brackets and `key = value` syntax",
    });
  }
}

/** Parses and validates manifest text; `dir` is the plugin directory it belongs to. */
export function parseManifest(text: string, file: string, dir: string): Manifest {
  const data = parseToml(file, text);
  const r = new ManifestReader(file, text);
  r.known(data, "");
  const name = r.str(data, "name", "name", {
    required: true,
    re: NAME_RE,
    what: "a lowercase name ([a-z0-9_-], at most 63)",
  })!;
  const type = r.str(data, "type", "type", {
    required: true,
    re: TYPE_RE,
    what: "a lowercase type, singular (language, service, tool)",
  })!;
  const version = r.str(data, "version", "version", {
    required: true,
    re: VERSION_RE,
    what: "a semantic version like 1.0.0 (MAJOR.MINOR.PATCH)",
  })!;
  const description = r.str(data, "description", "description") ?? "";

  const fromRaw = data.from;
  const from: ParentRef[] = [];
  if (fromRaw !== undefined) {
    const list: unknown = typeof fromRaw === "string" ? [fromRaw] : fromRaw;
    if (!Array.isArray(list)) return r.fail("from", 'an array of parents like ["language/ruby@^1"]', fromRaw);
    for (const item of list as unknown[]) {
      if (typeof item !== "string") return r.fail("from", 'strings like "language/ruby@^1"', item);
      const p = parseParent(item, type);
      if (typeof p === "string") return r.fail("from", p, item);
      if (p.type === type && p.name === name) r.fail("from", "parents other than the plugin itself", item);
      from.push(p);
    }
  }

  const inst = r.table(data, "install", "install") ?? {};
  const script = r.str(inst, "script", "install.script", {
    what: "a script path relative to the plugin directory",
  });
  if (script !== undefined) checkRelative(r, "install.script", script);
  const install: InstallSection = {
    ...(script !== undefined ? { script } : {}),
    net: r.net(inst, "net", "install.net"),
    memoryMb: r.num(inst, "memory_mb", "install.memory_mb", INSTALL_DEFAULTS.memoryMb, 16),
    cpus: r.num(inst, "cpus", "install.cpus", INSTALL_DEFAULTS.cpus, 0.1),
    pids: r.num(inst, "pids", "install.pids", INSTALL_DEFAULTS.pids, 16),
    timeoutS: r.num(inst, "timeout_s", "install.timeout_s", INSTALL_DEFAULTS.timeoutS, 1),
    env: r.strMap(inst, "env", "install.env"),
  };

  const det = r.table(data, "detect", "detect");
  let detect: DetectSection | null = null;
  if (det) {
    const contains = r.strMap(det, "contains", "detect.contains");
    for (const [f, re] of Object.entries(contains)) {
      try {
        new RegExp(re, "m");
      } catch {
        r.fail(`detect.contains.${f}`, "a valid regular expression", re);
      }
    }
    detect = {
      files: r.strList(det, "files", "detect.files"),
      contains,
      priority: r.num(det, "priority", "detect.priority", 0),
    };
    if (detect.files.length === 0 && Object.keys(contains).length === 0) {
      r.fail("detect", "at least one of detect.files or detect.contains");
    }
  }

  const bld = r.table(data, "build", "build");
  let build: BuildSection | null = null;
  if (bld) {
    const bs = r.str(bld, "script", "build.script", {
      required: true,
      what: "a script path relative to the plugin directory",
    })!;
    checkRelative(r, "build.script", bs);
    const cache = r.strList(bld, "cache", "build.cache");
    for (const c of cache)
      if (c.startsWith("/") || c.split("/").includes(".."))
        r.fail("build.cache", "app-relative directories without ..", c);
    build = {
      script: bs,
      cache,
      lockfiles: r.strList(bld, "lockfiles", "build.lockfiles"),
      env: r.strMap(bld, "env", "build.env"),
      net: r.net(bld, "net", "build.net"),
    };
  }

  const processes = r.strMap(data, "processes", "processes");
  const env = r.strMap(data, "env", "env");

  const svc = r.table(data, "service", "service");
  let service: ServiceSection | null = null;
  if (svc) {
    const h = r.table(svc, "health", "service.health") ?? {};
    const port = r.num(svc, "port", "service.port", 0, 1);
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      r.fail("service.port", "a port number 1-65535", svc.port);
    const dataDir = r.str(svc, "data_dir", "service.data_dir", {
      required: true,
      what: "an absolute directory path",
    })!;
    if (!dataDir.startsWith("/")) r.fail("service.data_dir", "an absolute directory path", dataDir);
    const user = r.str(svc, "user", "service.user");
    service = {
      start: r.str(svc, "start", "service.start", {
        required: true,
        what: "the command that starts the service",
      })!,
      port,
      dataDir,
      ...(user !== undefined ? { user } : {}),
      health: {
        command: r.str(h, "command", "service.health.command", {
          required: true,
          what: "a health check command",
        })!,
        intervalS: r.num(h, "interval_s", "service.health.interval_s", 1, 0.05),
        timeoutS: r.num(h, "timeout_s", "service.health.timeout_s", 60, 0.1),
        retries: r.num(h, "retries", "service.health.retries", 60, 1),
      },
      env: r.strMap(svc, "env", "service.env"),
    };
    const w = r.table(svc, "world", "service.world");
    if (w) {
      const need = (key: string, what: string) =>
        r.str(w, key, `service.world.${key}`, { required: true, what })!;
      const init = r.str(w, "init", "service.world.init");
      const binDirs = r.strList(w, "bin_dirs", "service.world.bin_dirs");
      if (binDirs.length === 0 || binDirs.some((d) => !d.startsWith("/")))
        r.fail("service.world.bin_dirs", "absolute directories to look for the server in", w.bin_dirs);
      service.world = {
        binDirs,
        needs: need("needs", "the server's file name in one of bin_dirs"),
        ...(init !== undefined ? { init } : {}),
        start: need("start", "the command that starts the world's server"),
        health: need("health", "a health check command"),
      };
    }
  } else if (type === "service") {
    r.fail("service", "a [service] table (start, port, data_dir, health, env) for a plugin of type service");
  }

  return {
    name,
    type,
    version,
    description,
    from,
    install,
    detect,
    build,
    processes,
    env,
    service,
    copy: [],
    file,
    dir,
  };
}

function checkRelative(r: ManifestReader, key: string, p: string): void {
  if (p.startsWith("/") || p.split("/").includes("..") || p.length === 0) {
    r.fail(key, "a path inside the plugin directory (relative, without ..)", p);
  }
}

/** Reads DIR/plugin.toml; a missing manifest is not-found, a malformed one a config error. */
export function loadManifest(dir: string): Manifest {
  const file = join(dir, "plugin.toml");
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    throw new LjError("not-found", "manifest-missing", `no plugin manifest: ${file} does not exist`, {
      hint: "a plugin is a directory with a plugin.toml (see docs/plugins.md), or a Jailfile",
    });
  }
  return parseManifest(text, file, dir);
}
