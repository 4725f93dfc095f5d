/**
 * Publishing what a tenant's build wrote. A build's output is hostile input: the copy into a
 * slug or an overlay keeps only directories, regular files and symlinks, never follows a
 * symlink, strips setuid, setgid and sticky bits, gives every entry an owner decided here (not
 * one the build chose), and refuses a symlink whose relative target climbs out of the tree.
 * (Absolute targets are paths inside the jail the tree is mounted in, resolved in its root.)
 * Device nodes, FIFOs and sockets are left out and named in the report.
 *
 * The build has ended when this runs, so nothing changes the source underneath the copy.
 */
import {
  chmodSync,
  copyFileSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  type Stats,
  symlinkSync,
} from "node:fs";
import { join, posix } from "node:path";
import { LjError } from "../errors.ts";
import { getXattr, makeWhiteout, setXattr } from "../jail/ffi.ts";
import type { BuildLog } from "./types.ts";

export interface SanitiseReport {
  entries: number;
  bytes: number;
  /** Paths whose setuid/setgid/sticky bits were removed. */
  stripped: string[];
  /** Paths left out: device nodes, FIFOs, sockets. */
  dropped: string[];
}

export interface SanitiseOptions {
  /** The host owner of a copied entry, from the owner it had in the build's output. */
  owner: (uid: number, gid: number) => [number, number];
  /** Entries never copied (relative paths, e.g. "tmp"). */
  skip?: (rel: string) => boolean;
  /** Whose tree it is, for errors: "the build's output" (default), "the app's source". */
  what?: string;
  /**
   * An overlay layer: keep overlayfs's own marks (whiteouts, the character devices 0:0 that
   * record a deleted lower file, and opaque directories), under both the names a layer is read
   * by (trusted.* by jails as root, user.* by jails in a user namespace).
   */
  overlayMarks?: boolean;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const OPAQUE = ["trusted.overlay.opaque", "user.overlay.opaque"];
const SPECIAL_BITS = 0o7000;

/** The owner map of a slug: everything belongs to the app's identity. */
export const ownedBy = (uid: number, gid: number) => (): [number, number] => [uid, gid];

/**
 * The owner map of an overlay built in a user namespace on [base, base+count): ids inside the
 * range shift back to what they were inside (so the overlay looks the same in any jail), and
 * anything else becomes root.
 */
export const shiftedFrom =
  (base: number, count: number) =>
  (uid: number, gid: number): [number, number] => [
    uid >= base && uid < base + count ? uid - base : 0,
    gid >= base && gid < base + count ? gid - base : 0,
  ];

/** True when a relative symlink target, read from `rel`'s directory, leaves the tree. */
export function escapesTree(rel: string, target: string): boolean {
  if (target.startsWith("/")) return false;
  const resolved = posix.normalize(posix.join(posix.dirname(rel), target));
  return resolved === ".." || resolved.startsWith("../");
}

/** Copies `src` (a directory) to `dst` (which must not exist) under the rules above. */
export function copySanitised(src: string, dst: string, opts: SanitiseOptions): SanitiseReport {
  const report: SanitiseReport = { entries: 0, bytes: 0, stripped: [], dropped: [] };
  const top = lstatSync(src);
  if ((top.mode & S_IFMT) !== S_IFDIR) {
    throw new LjError("internal", "publish-not-a-dir", `${src} is not a directory; nothing to publish`);
  }
  copyDir(src, dst, "", top, opts, report);
  return report;
}

function copyDir(
  src: string,
  dst: string,
  rel: string,
  st: Stats,
  opts: SanitiseOptions,
  r: SanitiseReport,
): void {
  mkdirSync(dst, { mode: 0o700 });
  if (opts.overlayMarks && OPAQUE.some((x) => getXattr(src, x)?.toString() === "y")) {
    for (const x of OPAQUE) setXattr(dst, x, "y");
  }
  for (const name of readdirSync(src)) {
    const childRel = rel === "" ? name : `${rel}/${name}`;
    if (opts.skip?.(childRel)) continue;
    copyEntry(join(src, name), join(dst, name), childRel, opts, r);
  }
  withMode(dst, rel, st, opts, r);
}

function copyEntry(src: string, dst: string, rel: string, opts: SanitiseOptions, r: SanitiseReport): void {
  const st = lstatSync(src);
  switch (st.mode & S_IFMT) {
    case S_IFDIR:
      copyDir(src, dst, rel, st, opts, r);
      return;
    case S_IFREG:
      copyFileSync(src, dst);
      r.bytes += st.size;
      withMode(dst, rel, st, opts, r);
      return;
    case S_IFLNK: {
      const target = readlinkSync(src);
      if (escapesTree(rel, target)) {
        throw new LjError(
          "invalid",
          "symlink-escapes",
          `${opts.what ?? "the build's output"} has a symlink that leaves its tree: ${JSON.stringify(rel)} -> ${JSON.stringify(target)}; nothing was published`,
          { hint: "make the link absolute (a path inside the jail) or keep its target inside the app" },
        );
      }
      symlinkSync(target, dst);
      owned(dst, st, opts, r);
      return;
    }
    default:
      if (opts.overlayMarks && (st.mode & S_IFMT) === S_IFCHR && st.rdev === 0) {
        makeWhiteout(dst);
        owned(dst, st, opts, r);
        return;
      }
      r.dropped.push(rel);
  }
}

/** Gives a copied entry the owner the rules say, and counts it. */
function owned(dst: string, st: Stats, opts: SanitiseOptions, r: SanitiseReport): void {
  const [u, g] = opts.owner(st.uid, st.gid);
  lchownSync(dst, u, g);
  r.entries++;
}

/** owned(), then the permission bits without setuid, setgid and sticky. */
function withMode(dst: string, rel: string, st: Stats, opts: SanitiseOptions, r: SanitiseReport): void {
  if (st.mode & SPECIAL_BITS) r.stripped.push(rel === "" ? "." : rel);
  owned(dst, st, opts, r);
  // After the chown, which would clear setuid bits anyway: the mode is set last, without them.
  chmodSync(dst, st.mode & 0o777);
}

/** Says in the build log what publication changed or left out. */
export function reportSanitised(r: SanitiseReport, log: BuildLog): void {
  const few = (xs: string[]) =>
    `${xs.slice(0, 5).join(", ")}${xs.length > 5 ? ` and ${xs.length - 5} more` : ""}`;
  if (r.stripped.length) log(`removed setuid/setgid/sticky bits from ${few(r.stripped)}`);
  if (r.dropped.length) log(`left out device nodes, FIFOs and sockets: ${few(r.dropped)}`);
}

/** Hands a tree to an owner without following a symlink. */
export function chownTree(dir: string, uid: number, gid: number): void {
  lchownSync(dir, uid, gid);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) chownTree(p, uid, gid);
    else lchownSync(p, uid, gid);
  }
}
