/**
 * Building worlds: from the host's own system, debootstrap, a tarball or a FreeBSD release,
 * in worlds/.tmp-NAME-xxxx and renamed into place (src/store/worlds.ts has what a world is,
 * where it lives and how it is found or removed).
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { arch, machine } from "node:os";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { LjError, usageError } from "../errors.ts";
import { extractInto } from "../store/archive.ts";
import { paths } from "../store/paths.ts";
import { removeTree } from "../store/tree.ts";
import {
  assertNotMounted,
  type CreateWorldOptions,
  hostSystemMounts,
  listWorlds,
  META_FILE,
  mountsUnder,
  parseWorldSource,
  sourceLabel,
  validateWorldName,
  type WorldInfo,
  type WorldMeta,
  type WorldMount,
  type WorldSource,
} from "../store/worlds.ts";

/** Remove a build directory, first detaching anything a failed tool (debootstrap) left mounted. */
async function removeBuildDir(p: string): Promise<void> {
  const mounted = mountsUnder(p).sort((a, b) => b.length - a.length);
  for (const mp of mounted) await run("umount", ["--lazy", mp]).catch(() => {});
  assertNotMounted(p);
  await removeTree(p);
}

// ---------------------------------------------------------------------------------------------
// Creating

export async function createWorld(
  name: string,
  from: string,
  opts: CreateWorldOptions = {},
): Promise<WorldInfo> {
  validateWorldName(name);
  const source = parseWorldSource(from);
  const final = paths.world(name);
  const replacing = existsSync(final);
  if (replacing && !opts.force) {
    throw new LjError("conflict", "world-exists", `world ${JSON.stringify(name)} already exists`, {
      hint: "pass --force to replace it, or remove it with `lj world rm`",
    });
  }
  if (replacing) assertNotMounted(final);
  await preflight(source);
  await fsp.mkdir(paths.worlds(), { recursive: true });
  const tmp = await fsp.mkdtemp(join(paths.worlds(), `.tmp-${name}-`));
  try {
    const built = await build(source, tmp, opts);
    const meta: WorldMeta = {
      version: 1,
      name,
      source: sourceLabel(
        source.kind === "tar" ? { kind: "tar", file: await fsp.realpath(source.file) } : source,
      ),
      createdAt: new Date().toISOString(),
      os: process.platform,
      arch: arch(),
      mounts: built.mounts,
      ...(built.details ? { details: built.details } : {}),
    };
    await fsp.writeFile(join(tmp, META_FILE), `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o644 });
    await fsp.chmod(tmp, 0o755);
    await swapIntoPlace(tmp, final, replacing);
  } catch (e) {
    await removeBuildDir(tmp);
    throw e;
  }
  const info = (await listWorlds()).find((w) => w.name === name);
  if (!info) throw new LjError("internal", "world-vanished", `world ${name} vanished right after creation`);
  return info;
}

async function swapIntoPlace(tmp: string, final: string, replacing: boolean): Promise<void> {
  let old: string | undefined;
  if (replacing) {
    old = await fsp.mkdtemp(join(paths.worlds(), `.rm-${basename(final)}-`));
    await fsp.rename(final, join(old, "w"));
  }
  try {
    await fsp.rename(tmp, final);
  } catch (e) {
    if (old) await fsp.rename(join(old, "w"), final).catch(() => {});
    throw new LjError("conflict", "world-exists", `cannot move the new world into ${final}: ${String(e)}`, {
      cause: e,
    });
  }
  if (old) await removeTree(old);
}

async function preflight(source: WorldSource): Promise<void> {
  switch (source.kind) {
    case "freebsd":
      if (process.platform !== "freebsd") {
        throw new LjError(
          "unavailable",
          "freebsd-only",
          `freebsd:${source.release} worlds can only be created on FreeBSD (this is ${process.platform})`,
          { hint: "on Linux use --from host, debootstrap[:SUITE] or tar:FILE" },
        );
      }
      return;
    case "debootstrap":
      if (process.platform !== "linux") {
        throw new LjError("unavailable", "linux-only", "debootstrap worlds can only be created on Linux", {
          hint: "on FreeBSD use --from freebsd:RELEASE",
        });
      }
      if (!Bun.which("debootstrap")) {
        throw new LjError("unavailable", "debootstrap-missing", "the debootstrap command is not installed", {
          hint: "install it (apt-get install debootstrap)",
        });
      }
      if (process.getuid?.() !== 0) {
        throw new LjError("permission", "needs-root", "debootstrap must run as root");
      }
      return;
    case "tar": {
      let st: ReturnType<typeof statSync>;
      try {
        st = statSync(source.file);
      } catch (e) {
        throw new LjError(
          "not-found",
          "tar-not-found",
          `tarball ${source.file} cannot be read: ${String(e)}`,
        );
      }
      if (!st.isFile()) throw usageError(`tarball ${source.file} is not a regular file`);
      return;
    }
    case "host":
      return;
  }
}

interface Built {
  mounts: WorldMount[];
  details?: Record<string, unknown>;
}

async function build(source: WorldSource, dir: string, opts: CreateWorldOptions): Promise<Built> {
  switch (source.kind) {
    case "host":
      return buildHostWorld(dir, opts);
    case "tar": {
      const r = await extractInto(source.file, dir, {
        policy: "rootfs",
        signal: opts.signal,
        onProgress: (p) => opts.onProgress?.(`${p.entries} entries, ${mib(p.bytes)} MiB`),
      });
      return { mounts: [], details: { entries: r.entries, skipped: r.skippedCount } };
    }
    case "debootstrap":
      return buildDebootstrapWorld(source.suite, dir, opts);
    case "freebsd":
      return buildFreebsdWorld(source.release, dir, opts);
  }
}

const mib = (n: number) => (n / 1024 / 1024).toFixed(1);

// --- host ------------------------------------------------------------------------------------

/** Top-level directories that are usrmerge symlinks on modern hosts, or real directories on old ones. */
const MERGED_DIRS = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

const EMPTY_DIRS: [string, number][] = [
  ["usr", 0o755],
  ["proc", 0o555],
  ["sys", 0o555],
  ["dev", 0o755],
  ["tmp", 0o1777],
  ["run", 0o755],
  ["run/lock", 0o1777],
  ["var", 0o755],
  ["var/tmp", 0o1777],
  ["var/log", 0o755],
  ["var/cache", 0o755],
  ["var/lib", 0o755],
  ["var/spool", 0o755],
  ["root", 0o700],
  ["home", 0o755],
  ["mnt", 0o755],
  ["opt", 0o755],
  ["srv", 0o755],
  ["media", 0o755],
];

/**
 * An instant world that copies nothing big: /etc (minus secrets) is copied, /usr and any
 * non-merged /bin, /lib... are recorded as read-only bind mounts from the host, and the
 * usrmerge symlinks are reproduced with the host's own (relative) targets so they resolve
 * inside the jail root.
 */
async function buildHostWorld(dir: string, opts: CreateWorldOptions): Promise<Built> {
  const mounts: WorldMount[] = hostSystemMounts();
  for (const [rel, mode] of EMPTY_DIRS) {
    await fsp.mkdir(join(dir, rel), { mode });
    await fsp.chmod(join(dir, rel), mode);
  }
  for (const n of await fsp.readdir("/usr")) {
    const st = await fsp.lstat(`/usr/${n}`).catch(() => null);
    if (st?.isSymbolicLink()) await fsp.symlink(await fsp.readlink(`/usr/${n}`), join(dir, "usr", n));
  }
  await fsp.symlink("../run", join(dir, "var/run"));
  await fsp.symlink("../run/lock", join(dir, "var/lock"));
  for (const d of MERGED_DIRS) {
    const st = await fsp.lstat(`/${d}`).catch(() => null);
    if (st?.isSymbolicLink()) {
      await fsp.symlink(await fsp.readlink(`/${d}`), join(dir, d));
    } else if (st?.isDirectory()) {
      await fsp.mkdir(join(dir, d), { mode: 0o755 });
      mounts.push({ src: `/${d}`, dst: `/${d}`, readonly: true, layered: true });
    }
  }
  opts.onProgress?.("copying /etc without secrets");
  const skipped: string[] = [];
  await copyEtc("/etc", join(dir, "etc"), "", skipped);
  opts.onProgress?.(`copied /etc, left out ${skipped.length} secret or private entries`);
  return { mounts, details: { etcSkipped: skipped } };
}

/** Paths under /etc never copied into a world (secrets, host identity keys, credentials). */
const ETC_SECRETS: RegExp[] = [
  /^g?shadow-?$/,
  /^security\/opasswd$/,
  /^ssh\/[^/]*key[^/]*$/,
  /\.keytab$/,
  /^sudoers\.d\/./,
  /^ssl\/private\/./,
  /^ipsec\.secrets$/,
  /^ipsec\.d\/private\/./,
  /^ppp\/[^/]*secrets$/,
  /^wireguard\/./,
  /^NetworkManager\/system-connections\/./,
  /^letsencrypt\/./,
  /^credstore(\.encrypted)?\/./,
  /^docker\/key\.json$/,
  /^\.pwd\.lock$/,
];

const PRIVATE_KEY_RE = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;
const SCAN_MAX = 1024 * 1024;

export function isEtcSecret(rel: string): boolean {
  return ETC_SECRETS.some((re) => re.test(rel));
}

/**
 * Copy a tree without following symlinks, dropping secrets: the fixed list above, any file not
 * readable by "other" on the host (a permission that says "private"), and any file holding a
 * PEM private key. Directories are always created (empty when private) so packages find them.
 */
async function copyEtc(src: string, dst: string, rel: string, skipped: string[]): Promise<void> {
  const st = await fsp.lstat(src);
  const asRoot = process.getuid?.() === 0;
  await fsp.mkdir(dst, { mode: 0o700 });
  const privateDir = rel !== "" && (st.mode & 0o004) === 0;
  if (privateDir) skipped.push(`${rel}/*`);
  else {
    for (const name of (await fsp.readdir(src)).sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const s = join(src, name);
      const d = join(dst, name);
      const est = await fsp.lstat(s);
      if (isEtcSecret(r)) {
        if (est.isDirectory()) await fsp.mkdir(d, { mode: est.mode & 0o777 });
        skipped.push(r);
      } else if (est.isDirectory()) {
        await copyEtc(s, d, r, skipped);
      } else if (est.isSymbolicLink()) {
        await copySymlink(s, d, r);
        if (asRoot) await fsp.lchown(d, est.uid, est.gid).catch(() => {});
      } else if (est.isFile()) {
        if ((est.mode & 0o004) === 0 || (await holdsPrivateKey(s, est.size))) {
          skipped.push(r);
          continue;
        }
        await fsp.copyFile(s, d);
        if (asRoot) await fsp.chown(d, est.uid, est.gid);
        await fsp.chmod(d, est.mode & 0o1777);
      }
      // sockets, FIFOs and device nodes have no place in a world's /etc
    }
  }
  if (asRoot) await fsp.chown(dst, st.uid, st.gid);
  await fsp.chmod(dst, st.mode & 0o1777);
}

/** resolv.conf is often a link into the host's /run; a world needs the content itself. */
async function copySymlink(s: string, d: string, rel: string): Promise<void> {
  if (rel === "resolv.conf") {
    const text = await fsp.readFile(s).catch(() => null);
    if (text !== null) {
      await fsp.writeFile(d, text, { mode: 0o644 });
      return;
    }
  }
  await fsp.symlink(await fsp.readlink(s), d);
}

async function holdsPrivateKey(p: string, size: number): Promise<boolean> {
  if (size > SCAN_MAX) return false;
  const buf = await fsp.readFile(p).catch(() => null);
  return buf !== null && PRIVATE_KEY_RE.test(buf.toString("latin1"));
}

// --- debootstrap -----------------------------------------------------------------------------

/**
 * The Debian mirror the host's apt uses (the only one the machine may be able to reach), from
 * sources.list and sources.list.d (one-line and deb822 formats); security and updates
 * repositories are not archives debootstrap can install from.
 */
export function debianMirror(suite: string, aptDir = "/etc/apt"): string {
  const entries: { uri: string; suites: string[] }[] = [];
  const files: string[] = [];
  if (existsSync(join(aptDir, "sources.list"))) files.push(join(aptDir, "sources.list"));
  try {
    for (const f of readdirSync(join(aptDir, "sources.list.d")).sort()) {
      if (f.endsWith(".list") || f.endsWith(".sources")) files.push(join(aptDir, "sources.list.d", f));
    }
  } catch {
    // no sources.list.d
  }
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, "utf8");
    } catch {
      continue;
    }
    if (f.endsWith(".sources")) entries.push(...parseDeb822(text));
    else entries.push(...parseOneLine(text));
  }
  const usable = entries.filter((e) => /^https?:\/\//.test(e.uri) && !/security/.test(e.uri));
  const exact = usable.find((e) => e.suites.includes(suite));
  const debian = usable.find((e) => /\/debian\/?$/.test(e.uri) && e.suites.some((s) => !s.includes("-")));
  const pick = exact ?? debian;
  return (pick?.uri ?? "http://deb.debian.org/debian").replace(/\/+$/, "");
}

function parseOneLine(text: string): { uri: string; suites: string[] }[] {
  const out: { uri: string; suites: string[] }[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (m?.[1] && m[2]) out.push({ uri: m[1], suites: [m[2]] });
  }
  return out;
}

function parseDeb822(text: string): { uri: string; suites: string[] }[] {
  const out: { uri: string; suites: string[] }[] = [];
  for (const para of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of para.split("\n")) {
      if (line.startsWith("#")) continue;
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (m?.[1] && m[2] !== undefined) fields.set(m[1].toLowerCase(), m[2].trim());
    }
    if (fields.get("enabled")?.toLowerCase() === "no") continue;
    if (!(fields.get("types") ?? "").split(/\s+/).includes("deb")) continue;
    const suites = (fields.get("suites") ?? "").split(/\s+/).filter(Boolean);
    for (const uri of (fields.get("uris") ?? "").split(/\s+/).filter(Boolean)) out.push({ uri, suites });
  }
  return out;
}

async function buildDebootstrapWorld(suite: string, dir: string, opts: CreateWorldOptions): Promise<Built> {
  const mirror = opts.mirror ?? process.env.LJ_DEBIAN_MIRROR ?? debianMirror(suite);
  opts.onProgress?.(`debootstrap --variant=minbase ${suite} from ${mirror}`);
  await run("debootstrap", ["--variant=minbase", suite, dir, mirror], opts.onProgress, opts.signal);
  return { mounts: [], details: { suite, mirror, variant: "minbase" } };
}

// --- FreeBSD ---------------------------------------------------------------------------------

function freebsdArchPath(): string {
  const m = machine();
  if (m === "amd64" || m === "x86_64") return "amd64";
  if (m === "arm64" || m === "aarch64") return "arm64/aarch64";
  if (m === "i386") return "i386";
  throw new LjError("unavailable", "freebsd-arch", `no FreeBSD release downloads known for machine ${m}`);
}

async function buildFreebsdWorld(rel: string, dir: string, opts: CreateWorldOptions): Promise<Built> {
  const url = `https://download.freebsd.org/releases/${freebsdArchPath()}/${rel}/base.txz`;
  opts.onProgress?.(`fetching ${url}`);
  const res = await fetch(url, { signal: opts.signal });
  if (!res.ok || !res.body) {
    throw new LjError("unavailable", "download-failed", `GET ${url}: HTTP ${res.status}`, {
      hint: "check the release name (e.g. 14.1-RELEASE) and the network",
    });
  }
  const r = await extractInto(res.body, dir, {
    policy: "rootfs",
    signal: opts.signal,
    onProgress: (p) => opts.onProgress?.(`${p.entries} entries, ${mib(p.bytes)} MiB`),
  });
  // The jail needs DNS to bootstrap pkg; pkg itself is installed from inside a jail.
  const resolv = await fsp.readFile("/etc/resolv.conf").catch(() => null);
  if (resolv) await fsp.writeFile(join(dir, "etc/resolv.conf"), resolv, { mode: 0o644 });
  return { mounts: [], details: { url, entries: r.entries, pkgBootstrapped: false } };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Run a command, streaming its output lines to onLine; reject with its last lines on failure. */
function run(
  cmd: string,
  args: string[],
  onLine?: (line: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], signal });
    const tail: string[] = [];
    const take = (line: string) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      onLine?.(line);
    };
    createInterface({ input: child.stdout }).on("line", take);
    createInterface({ input: child.stderr }).on("line", take);
    child.on("error", (e) =>
      reject(new LjError("unavailable", "command-failed", `${cmd}: ${e.message}`, { cause: e })),
    );
    child.on("close", (code, sig) => {
      if (code === 0) return resolve();
      reject(
        new LjError(
          "unavailable",
          "command-failed",
          `${cmd} failed (${sig ?? `exit ${code}`}):\n${tail.join("\n")}`,
          {
            hint:
              cmd === "debootstrap"
                ? "check the suite name and that the Debian mirror is reachable"
                : undefined,
          },
        ),
      );
    });
  });
}
