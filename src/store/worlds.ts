import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { release } from "node:os";
import { join } from "node:path";
import { LjError, usageError } from "../errors.ts";
import { paths } from "./paths.ts";
import { removeTree } from "./tree.ts";
import { assertWorldUnused } from "./world-users.ts";

/**
 * Worlds are base systems under $LIGHTJAIL_ROOT/worlds/NAME, used as the lowest (read-only)
 * layer of every jail. Each is built in worlds/.tmp-NAME-xxxx and renamed into place, so a
 * world either exists complete or not at all. worlds/NAME/.lj-world.json records where it came
 * from and which host directories the spawner must bind read-only into the jail.
 *
 * Removing the explicit default world (`lj world default NAME`) is refused unless forced, since
 * every spawn without `--world` would then fail; a forced removal also clears the default.
 */

export interface WorldMount {
  src: string;
  dst: string;
  readonly: boolean;
  /** The jail's layers' copies of dst merge over it (see BindMount.layered in src/jail/spec.ts). */
  layered?: boolean;
}

export interface WorldMeta {
  version: 1;
  name: string;
  /** The --from value, normalised (`host`, `debootstrap:bookworm`, `tar:/abs/file`, `freebsd:14.1-RELEASE`). */
  source: string;
  createdAt: string;
  os: string;
  arch: string;
  /** Extra read-only bind mounts the spawner adds (host worlds share the host's /usr). */
  mounts: WorldMount[];
  details?: Record<string, unknown>;
}

export interface WorldInfo {
  name: string;
  path: string;
  isDefault: boolean;
  /** null for worlds installed by hand (e.g. `make installworld DESTDIR=...` as in the seed). */
  meta: WorldMeta | null;
}

export type WorldSource =
  | { kind: "host" }
  | { kind: "debootstrap"; suite: string }
  | { kind: "tar"; file: string }
  | { kind: "freebsd"; release: string };

export interface CreateWorldOptions {
  /** Replace a world of the same name. */
  force?: boolean;
  /** Human-readable progress lines (debootstrap output, extraction counters). */
  onProgress?: (line: string) => void;
  /** Debian mirror for debootstrap; default: LJ_DEBIAN_MIRROR, else the host's apt sources. */
  mirror?: string;
  signal?: AbortSignal;
}

export const META_FILE = ".lj-world.json";
const NAME_MAX = 64;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const SOURCES_HINT = "use --from host, debootstrap[:SUITE], tar:FILE or freebsd:RELEASE";

// ---------------------------------------------------------------------------------------------
// Names, sources, paths

/** Returns the name if valid; throws a usage error saying which rule it breaks. */
export function validateWorldName(name: string): string {
  const bad = (why: string) =>
    new LjError("usage", "invalid-world-name", `invalid world name ${JSON.stringify(name)}: ${why}`, {
      hint: "use letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. bookworm, 14.1-RELEASE)",
    });
  if (name.length === 0) throw bad("it is empty");
  if (name.length > NAME_MAX) throw bad(`it is longer than ${NAME_MAX} characters`);
  if (name.includes("/")) throw bad("it contains a slash");
  if (name.startsWith(".")) throw bad("it starts with a dot");
  if (!NAME_RE.test(name)) throw bad("only [A-Za-z0-9._-] are allowed, starting with a letter or digit");
  return name;
}

export function parseWorldSource(from: string): WorldSource {
  if (from === "host") return { kind: "host" };
  const [kind, ...rest] = from.split(":");
  const arg = rest.join(":");
  switch (kind) {
    case "debootstrap": {
      const suite = rest.length === 0 ? "bookworm" : arg;
      if (!/^[a-z][a-z0-9-]{0,31}$/.test(suite)) {
        throw usageError(`invalid Debian suite ${JSON.stringify(suite)}`, "e.g. --from debootstrap:bookworm");
      }
      return { kind: "debootstrap", suite };
    }
    case "tar":
      if (arg.length === 0) throw usageError("tar: needs a file, e.g. --from tar:rootfs.tar.gz");
      return { kind: "tar", file: arg };
    case "freebsd": {
      const rel = freebsdDownloadRelease(arg);
      if (rel === null) {
        throw usageError(
          `invalid FreeBSD release ${JSON.stringify(arg)}`,
          "e.g. --from freebsd:14.1-RELEASE (or `uname -r`, such as 14.1-RELEASE-p6)",
        );
      }
      return { kind: "freebsd", release: rel };
    }
  }
  throw new LjError("usage", "unknown-world-source", `unknown world source ${JSON.stringify(from)}`, {
    hint: SOURCES_HINT,
  });
}

/**
 * The release whose base.txz makes a world for `uname -r` (or a release name): `uname -r` adds
 * the patch level (14.1-RELEASE-p6), which has no download of its own; the patches come with
 * freebsd-update. Null when it is not a release name.
 */
export function freebsdDownloadRelease(name: string): string | null {
  const m = /^([0-9]+\.[0-9]+-[A-Z0-9]+)(-p[0-9]+)?$/.exec(name);
  return m ? m[1]! : null;
}

export const sourceLabel = (s: WorldSource): string =>
  s.kind === "host"
    ? "host"
    : s.kind === "debootstrap"
      ? `debootstrap:${s.suite}`
      : s.kind === "tar"
        ? `tar:${s.file}`
        : `freebsd:${s.release}`;

/** Path of an existing world; throws not-found with a hint to create it. */
export function worldPath(name: string): string {
  validateWorldName(name);
  const p = paths.world(name);
  if (!isDir(p)) {
    throw new LjError("not-found", "world-not-found", `world ${JSON.stringify(name)} does not exist (${p})`, {
      hint: `create it with \`lj world create ${name} --from host\` (or debootstrap, tar:FILE), see \`lj world list\``,
    });
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Reading

export async function readWorldMeta(name: string): Promise<WorldMeta | null> {
  const file = join(worldPath(name), META_FILE);
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch {
    return null;
  }
  try {
    return JSON.parse(text) as WorldMeta;
  } catch (e) {
    throw new LjError("config", "world-meta-corrupt", `world metadata ${file} is not valid JSON`, {
      cause: e,
    });
  }
}

/** Extra read-only bind mounts the spawner must add for this world (empty for self-contained worlds). */
export async function worldMounts(name: string): Promise<WorldMount[]> {
  const meta = await readWorldMeta(name);
  if (meta?.source !== "host") return meta?.mounts ?? [];
  // A host world's binds are the host's system, layered (see hostSystemMounts); worlds made
  // before that recorded a plain bind of /usr.
  const other = meta.mounts.filter(
    (m) => m.dst !== "/usr" && !m.dst.startsWith("/usr/") && m.dst !== DPKG_DIR,
  );
  return [...hostSystemMounts(), ...other.map((m) => ({ ...m, layered: true }))];
}

/**
 * The host's system as a host world sees it: each directory of /usr (but /usr/local) and the
 * host's package database, layered: an overlay built over the host world installs packages into
 * its own copies (its /usr/bin, its dpkg database), and jails over it see the host's with the
 * overlay's files merged over them. /usr/local is a plain read-only bind: it usually holds
 * lightjail's own state (/usr/local/lj), and overlayfs refuses a layer below another layer,
 * which a layered /usr would be. Symlinks in /usr are in the world itself.
 */
export function hostSystemMounts(): WorldMount[] {
  const out: WorldMount[] = [];
  for (const n of readdirSync("/usr").sort()) {
    const p = `/usr/${n}`;
    let dir = false;
    try {
      dir = lstatSync(p).isDirectory();
    } catch {}
    if (dir) out.push({ src: p, dst: p, readonly: true, ...(n === "local" ? {} : { layered: true }) });
  }
  if (existsSync(DPKG_DIR)) out.push({ src: DPKG_DIR, dst: DPKG_DIR, readonly: true, layered: true });
  return out;
}

const DPKG_DIR = "/var/lib/dpkg";

export async function listWorlds(): Promise<WorldInfo[]> {
  const dir = paths.worlds();
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  const explicit = readDefaultFile();
  const out: WorldInfo[] = [];
  for (const name of names.sort()) {
    if (name.startsWith(".") || !NAME_RE.test(name) || name.length > NAME_MAX) continue;
    const p = join(dir, name);
    if (!isDir(p)) continue;
    out.push({ name, path: p, isDefault: false, meta: await readWorldMeta(name).catch(() => null) });
  }
  const def = explicit ?? (out.length === 1 ? out[0]?.name : undefined);
  for (const w of out) w.isDefault = w.name === def;
  return out;
}

// ---------------------------------------------------------------------------------------------
// The default world

function readDefaultFile(): string | undefined {
  try {
    const v = readFileSync(paths.defaultWorldFile(), "utf8").trim();
    return v.length > 0 ? v : undefined;
  } catch {
    return undefined;
  }
}

export async function setDefaultWorld(name: string): Promise<void> {
  worldPath(name);
  const file = paths.defaultWorldFile();
  const tmp = `${file}.tmp-${process.pid}`;
  await fsp.writeFile(tmp, `${name}\n`);
  await fsp.rename(tmp, file);
}

export async function clearDefaultWorld(): Promise<void> {
  await fsp.rm(paths.defaultWorldFile(), { force: true });
}

/**
 * The world used when none is named: the one set with setDefaultWorld; else on FreeBSD the
 * one named after `uname -r` (seed rule); else, on Linux, the only world there is.
 * `opts.release` stands in for `uname -r` (tests).
 */
export async function defaultWorld(
  opts: { platform?: NodeJS.Platform; release?: string } = {},
): Promise<string> {
  const explicit = readDefaultFile();
  if (explicit !== undefined) {
    if (!isDir(paths.world(explicit))) {
      throw new LjError(
        "not-found",
        "world-not-found",
        `the default world ${JSON.stringify(explicit)} does not exist`,
        {
          hint: "set another with `lj world default NAME`",
        },
      );
    }
    return explicit;
  }
  if ((opts.platform ?? process.platform) === "freebsd") {
    const r = opts.release ?? release();
    if (!isDir(paths.world(r))) {
      throw new LjError("not-found", "world-not-found", `no world for this FreeBSD release (${r})`, {
        hint: `create it with \`lj world create ${r} --from freebsd:${r}\``,
      });
    }
    return r;
  }
  const worlds = await listWorlds();
  if (worlds.length === 1 && worlds[0]) return worlds[0].name;
  if (worlds.length === 0) {
    throw new LjError("not-found", "no-worlds", "there are no worlds yet", {
      hint: "create one with `lj world create NAME --from host` (instant) or `--from debootstrap`",
    });
  }
  throw new LjError("usage", "no-default-world", `there are ${worlds.length} worlds and no default`, {
    hint: `pick one with \`lj world default NAME\` (${worlds.map((w) => w.name).join(", ")})`,
  });
}

// ---------------------------------------------------------------------------------------------
// Removing

export async function removeWorld(name: string, opts: { force?: boolean } = {}): Promise<void> {
  const p = worldPath(name);
  const isExplicitDefault = readDefaultFile() === name;
  if (isExplicitDefault && !opts.force) {
    throw new LjError("conflict", "world-is-default", `world ${JSON.stringify(name)} is the default world`, {
      hint: "set another default with `lj world default NAME`, or pass --force to remove it anyway",
    });
  }
  assertWorldUnused(name);
  assertNotMounted(p);
  const doomed = await fsp.mkdtemp(join(paths.worlds(), `.rm-${name}-`));
  await fsp.rename(p, join(doomed, "w"));
  if (isExplicitDefault) await clearDefaultWorld();
  await removeTree(doomed);
}

/**
 * A mount under a tree turns `rm -r` into deleting someone else's files (a bind-mounted /dev,
 * a running jail's lower layer). Linux only: there /proc/self/mountinfo is authoritative.
 */
export function mountsUnder(dir: string): string[] {
  let text: string;
  let p: string;
  try {
    p = realpathSync(dir);
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    const mp = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (mp === p || mp.startsWith(`${p}/`)) out.push(mp);
  }
  return out;
}

export function assertNotMounted(p: string): void {
  const m = mountsUnder(p);
  if (m.length > 0) {
    throw new LjError("conflict", "world-in-use", `${p} has mounts under it (${m.slice(0, 3).join(", ")})`, {
      hint: "stop the jails using it, or unmount these first",
    });
  }
}

export function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}
