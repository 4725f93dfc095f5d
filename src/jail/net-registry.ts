/**
 * This process's side of the machine-wide registry of live state roots (the registry's rules,
 * files and refusals are the shim's: zig/src/netlease.zig). A process is registered while it
 * holds the network of a root: while it has private jails there, or serves it (`lj serve`);
 * holdSubnet counts this process's holds so that only the first registers and the last
 * unregisters. Also here: which root each nftables table was made for, so that gc can find
 * tables of roots deleted since.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { LeaseOp, shimLease } from "./ffi.ts";
import type { NetConfig } from "./net-alloc.ts";
import { ownerId } from "./owner.ts";

const BASE = "/run/lightjail";
const DIR = join(BASE, "roots");
/** Which root each nftables table was made for: "<table name>" files holding the root's path. */
const TABLES = join(BASE, "tables");

export interface RootEntry {
  root: string;
  subnet: string;
  vethPrefix: string;
  owner: string;
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
    unregister(h.file);
  }
  const fd = shimLease(LeaseOp.lockIfIdle, [root]) as number;
  if (fd < 0) return false;
  try {
    fn();
  } finally {
    closeSync(fd); // releases the lock
  }
  return true;
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
  return [...new Set((shimLease(LeaseOp.roots, []) as RootEntry[]).map((e) => e.root))];
}

/** Live roots with their subnets (diagnostics and tests). */
export function liveRoots(): RootEntry[] {
  return shimLease(LeaseOp.liveRoots, []) as RootEntry[];
}

/** This process's registrations: one file per root and subnet, kept while something holds it. */
const held = new Map<string, { file: string; count: number; linger?: ReturnType<typeof setTimeout> }>();
let exitHook = false;

/** Registers this process with cfg's root and subnet; refuses (conflict) an overlapping live root. */
function register(cfg: NetConfig): string {
  return shimLease(LeaseOp.register, [cfg.root, cfg.subnet.cidr, ownerId()]) as string;
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
        unregister(x.file);
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
      unregister(entry.file);
    }, LINGER_MS);
    entry.linger.unref();
  };
}

const unregister = (file: string) => shimLease(LeaseOp.unregister, [file]);

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
