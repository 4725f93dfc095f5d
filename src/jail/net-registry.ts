/**
 * The machine-wide view of live state roots with private networking: which root uses which
 * jail subnet. Two roots whose subnets overlap would hand out the same addresses and fight
 * over the same routes, so the second one refuses to start.
 *
 * The registry is a directory on tmpfs, /run/lightjail/roots (gone at reboot, like every
 * process it describes): one file per (root, owner process), "<root hash>.<pid>.<start time>",
 * holding the root, its subnet and its veth prefix. A process is registered while it holds the
 * network of a root: while it has private jails there, or serves it (`lj serve`). Checking the others and
 * adding its own file happen under an exclusive flock(2) on /run/lightjail/roots.lock, so two
 * roots starting at once cannot both pass; the kernel drops the lock with its holder. A file
 * whose owner is dead is stale: it never blocks and whoever sees it removes it.
 */
import { dlopen, FFIType } from "bun:ffi";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { type NetConfig, parseSubnet, rootId, subnetsOverlap } from "./net-alloc.ts";
import { ownerId, ownerIdLive } from "./owner.ts";

const BASE = "/run/lightjail";
const DIR = join(BASE, "roots");
const LOCK = join(BASE, "roots.lock");
/** Which root each nftables table was made for: "<table name>" files holding the root's path. */
const TABLES = join(BASE, "tables");

export interface RootEntry {
  root: string;
  subnet: string;
  vethPrefix: string;
  owner: string;
}

type Flock = (fd: number, op: number) => number;
let flockFn: Flock | null = null;

/** flock(2) from the C library (Node's fs has no advisory locks). */
function flock(): Flock {
  if (flockFn) return flockFn;
  for (const name of ["libc.so.6", "libc.so"]) {
    try {
      const lib = dlopen(name, { flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
      flockFn = lib.symbols.flock as Flock;
      return flockFn;
    } catch {}
  }
  throw new LjError("unavailable", "no-flock", "cannot load flock(2) from the C library");
}

const LOCK_EX = 2;
const LOCK_NB = 4;

/** Runs fn holding the registry lock (waits up to 10 s for another process's short hold). */
function locked<T>(fn: () => T): T {
  mkdirSync(DIR, { recursive: true, mode: 0o700 });
  const fd = openSync(LOCK, "a", 0o600);
  try {
    const lock = flock();
    const deadline = Date.now() + 10_000;
    while (lock(fd, LOCK_EX | LOCK_NB) !== 0) {
      if (Date.now() > deadline)
        throw new LjError("unavailable", "registry-busy", `${LOCK} stayed locked for 10 s`, {
          hint: "another lightjail process holds it; check for a stopped (SIGSTOP) lj process",
        });
      Bun.sleepSync(2);
    }
    return fn(); // closing the descriptor releases the lock
  } finally {
    closeSync(fd);
  }
}

function readEntry(name: string): RootEntry | null {
  try {
    const e = JSON.parse(readFileSync(join(DIR, name), "utf8")) as RootEntry;
    return typeof e.root === "string" && typeof e.subnet === "string" && typeof e.owner === "string"
      ? e
      : null;
  } catch {
    return null;
  }
}

/** Live entries of the registry; stale files (dead owners, unreadable) are removed. Under the lock. */
function liveEntries(): RootEntry[] {
  const out: RootEntry[] = [];
  for (const name of readdirSync(DIR)) {
    const e = readEntry(name);
    if (e && ownerIdLive(e.owner)) {
      out.push(e);
      continue;
    }
    try {
      unlinkSync(join(DIR, name));
    } catch {}
  }
  return out;
}

/**
 * Runs fn (synchronously, under the registry lock) only if no live process holds `root`, so
 * that no jail of that root can be set up meanwhile; returns whether it ran.
 */
export function ifRootIdle(root: string, fn: () => void): boolean {
  // This process's own registration that only lingers (no hold left) does not count.
  for (const [key, h] of held) {
    if (h.count > 0 || !key.startsWith(`${root}\n`)) continue;
    if (h.linger) clearTimeout(h.linger);
    held.delete(key);
    try {
      unlinkSync(h.file);
    } catch {}
  }
  return locked(() => {
    if (liveEntries().some((e) => e.root === root)) return false;
    fn();
    return true;
  });
}

/**
 * The state roots this machine's registry names (live or not yet swept), read without the
 * lock: every jail masks them all, not only its own (two roots under /usr/local would
 * otherwise see each other through a host world's bind of /usr).
 */
export function knownRoots(): string[] {
  return knownRootsCache().roots;
}

let known: { stamp: number; roots: string[] } | undefined;
/** Re-read when the registry directory changes (an entry made or removed): one stat a call. */
function knownRootsCache(): { stamp: number; roots: string[] } {
  let stamp = -1;
  try {
    stamp = statSync(DIR).mtimeMs;
  } catch {}
  if (known?.stamp === stamp) return known;
  known = { stamp, roots: readKnownRoots() };
  return known;
}

function readKnownRoots(): string[] {
  let names: string[];
  try {
    names = readdirSync(DIR);
  } catch {
    return [];
  }
  return [...new Set(names.map(readEntry).flatMap((e) => (e ? [e.root] : [])))];
}

/** Live roots with their subnets (diagnostics and tests). */
export function liveRoots(): RootEntry[] {
  return locked(liveEntries);
}

const configHint = (cfg: NetConfig) =>
  `give one of them another subnet: LJ_SUBNET=... or [net] subnet = "..." in ${join(cfg.root, "config.toml")}`;

/** The reason `mine` may not start next to the live entry `e`, or null. */
function conflict(cfg: NetConfig, e: RootEntry): LjError | null {
  const who = `${e.root} (process ${e.owner.split(".")[0]})`;
  if (e.root === cfg.root) {
    if (e.subnet === cfg.subnet.cidr) return null;
    return new LjError(
      "conflict",
      "subnet-mismatch",
      `jail subnet ${cfg.subnet.cidr} for ${cfg.root} differs from ${e.subnet}, which this root is live with in process ${e.owner.split(".")[0]}`,
      { hint: "every process of a root must use the same subnet (LJ_SUBNET, [net] subnet)" },
    );
  }
  let theirs: ReturnType<typeof parseSubnet>;
  try {
    theirs = parseSubnet(e.subnet);
  } catch {
    return null;
  }
  if (subnetsOverlap(theirs, cfg.subnet)) {
    return new LjError(
      "conflict",
      "subnet-overlap",
      `jail subnet ${cfg.subnet.cidr} of ${cfg.root} overlaps ${e.subnet} of ${who}`,
      { hint: configHint(cfg) },
    );
  }
  if (e.vethPrefix === cfg.vethPrefix) {
    return new LjError(
      "conflict",
      "root-tag-clash",
      `state roots ${cfg.root} and ${who} hash to the same veth prefix ${cfg.vethPrefix}`,
      { hint: "move one of the roots to another path (LIGHTJAIL_ROOT)" },
    );
  }
  return null;
}

/** This process's registrations: one file per root and subnet, kept while something holds it. */
const held = new Map<string, { file: string; count: number; linger?: ReturnType<typeof setTimeout> }>();
let exitHook = false;

function register(cfg: NetConfig): string {
  return locked(() => {
    for (const e of liveEntries()) {
      const err = conflict(cfg, e);
      if (err) throw err;
    }
    const file = join(DIR, `${rootId(cfg.root).hash.slice(0, 16)}.${ownerId()}`);
    const entry: RootEntry = {
      root: cfg.root,
      subnet: cfg.subnet.cidr,
      vethPrefix: cfg.vethPrefix,
      owner: ownerId(),
    };
    writeFileSync(file, JSON.stringify(entry), { mode: 0o600 });
    return file;
  });
}

/**
 * Marks cfg's root and subnet as live in this process until the returned function is called
 * (a private jail from reservation to teardown, `lj serve` while it runs), or throws
 * (conflict) when a live root's subnet overlaps it. The first hold registers, the last
 * release unregisters; holds in between cost a map lookup.
 */
export function holdSubnet(cfg: NetConfig): () => void {
  const key = `${cfg.root}\n${cfg.subnet.cidr}`;
  let h = held.get(key);
  if (!h) {
    h = { file: register(cfg), count: 0 };
    held.set(key, h);
  }
  h.count++;
  if (!exitHook) {
    exitHook = true;
    // Tidy, not needed: a dead owner's file never blocks anyone.
    process.on("exit", () => {
      for (const x of held.values()) {
        try {
          unlinkSync(x.file);
        } catch {}
      }
    });
  }
  const entry = h;
  if (entry.linger) clearTimeout(entry.linger);
  entry.linger = undefined;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--entry.count > 0 || held.get(key) !== entry) return;
    // Jails one after another would register and unregister each time: the registration
    // outlives the last hold by a moment (a live entry only ever blocks an overlapping root).
    entry.linger = setTimeout(() => {
      if (entry.count > 0 || held.get(key) !== entry) return;
      held.delete(key);
      try {
        unlinkSync(entry.file);
      } catch {}
    }, LINGER_MS);
    entry.linger.unref();
  };
}

/** How long a registration outlives its last hold. */
const LINGER_MS = 1000;

/** Notes which root a table belongs to, so that gc can find tables of roots deleted since. */
export function recordTable(table: string, root: string): void {
  mkdirSync(TABLES, { recursive: true, mode: 0o700 });
  writeFileSync(join(TABLES, table.replace(/^inet /, "")), root, { mode: 0o600 });
}

export function forgetTable(table: string): void {
  try {
    unlinkSync(join(TABLES, table.replace(/^inet /, "")));
  } catch {}
}

/** Tables whose root directory no longer exists: nothing of that root can use them again. */
export function orphanTables(): { table: string; root: string }[] {
  let names: string[] = [];
  try {
    names = readdirSync(TABLES);
  } catch {
    return [];
  }
  const out: { table: string; root: string }[] = [];
  for (const name of names) {
    let root = "";
    try {
      root = readFileSync(join(TABLES, name), "utf8");
    } catch {
      continue;
    }
    if (/^lightjail_[0-9a-f]{12}$/.test(name) && root && !existsSync(root))
      out.push({ table: `inet ${name}`, root });
  }
  return out;
}
