/**
 * Removal of a jail's scratch directories (FreeBSD: its stage; Linux: an upper's overlayfs work
 * directory) that never descends into a mount. A recursive removal does not stop at mount
 * points: with a writable nullfs or bind mount still under the directory (a `-d` root, a data
 * mount), it would delete host data. So the removal first looks for anything mounted at or
 * below the directory, in the mount table (a bind mount of the same filesystem keeps its
 * st_dev) and by device number, and refuses to remove anything if it finds one.
 */
import { lstatSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";

const unescapeMount = (s: string) =>
  s.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));

/** Mount points of the host's mount table (Linux: mountinfo; FreeBSD: `mount -p`). */
export function mountTable(platform: string = process.platform): string[] {
  if (platform === "freebsd") {
    const out = Bun.spawnSync(["mount", "-p"]);
    if (!out.success) throw new Error(`mount -p failed: ${out.stderr.toString().trim()}`);
    return out.stdout
      .toString()
      .split("\n")
      .map((l) => unescapeMount(l.split(/\s+/)[1] ?? ""))
      .filter(Boolean);
  }
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => unescapeMount(l.split(" ")[4] ?? ""))
    .filter(Boolean);
}

/** A mount point at or below `dir`, or undefined when there is none. */
export function mountedUnder(dir: string, platform: string = process.platform): string | undefined {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    return undefined; // gone already
  }
  const prefix = real.endsWith("/") ? real : `${real}/`;
  const inTable = mountTable(platform).find((m) => m === real || m.startsWith(prefix));
  if (inTable) return inTable;
  return otherDevice(real, lstatSync(real).dev);
}

/** The first directory below `dir` on another device than `dev` (a mount the table missed). */
function otherDevice(dir: string, dev: number): string | undefined {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return undefined;
  }
  for (const name of names) {
    const p = join(dir, name);
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(p);
    } catch {
      continue;
    }
    if (!st.isDirectory()) continue;
    if (st.dev !== dev) return p;
    const deeper = otherDevice(p, dev);
    if (deeper) return deeper;
  }
  return undefined;
}

export type ScratchRemoval = { removed: true } | { removed: false; mounted: string };

/** Removes `dir` and everything in it, unless something is mounted there: then nothing. */
export async function removeScratch(
  dir: string,
  platform: string = process.platform,
): Promise<ScratchRemoval> {
  let mounted: string | undefined;
  try {
    mounted = mountedUnder(dir, platform);
  } catch (e) {
    // No mount table: do not guess.
    return { removed: false, mounted: `(unknown: ${(e as Error).message})` };
  }
  if (mounted) return { removed: false, mounted };
  await rm(dir, { recursive: true, force: true });
  return { removed: true };
}
