/**
 * One `lj serve` per state root. Two servers on one root would each start every app, fight
 * over the same leases and overwrite each other's server.json. The lock is a file naming its
 * holder as "<pid>.<start time>": a holder that died (even one still a zombie) holds nothing,
 * so a crash never needs a manual unlock.
 */
import { linkSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { ownerId, ownerIdLive } from "../jail/owner.ts";
import { paths } from "../store/paths.ts";

export const serveLockFile = () => join(paths.paas(), "serve.lock");

/** The live holder's pid, or null when nobody (alive) holds the lock. */
export function serveLockHolder(file = serveLockFile()): number | null {
  let held: string;
  try {
    held = readFileSync(file, "utf8").trim();
  } catch {
    return null;
  }
  return ownerIdLive(held) ? Number(held.split(".")[0]) : null;
}

const busy = (pid: number) =>
  new LjError("conflict", "server-running", `lj serve (pid ${pid}) already runs on this root`, {
    hint: `stop it first (kill ${pid}), or give this one its own LIGHTJAIL_ROOT`,
  });

let seq = 0;

/**
 * Takes the root's server lock or throws (kind "conflict", exit 73) naming the live holder.
 * Returns the release function. A stale lock is renamed away first, which succeeds for one
 * contender only, so two servers starting together cannot both win.
 */
export function acquireServeLock(file = serveLockFile()): () => void {
  mkdirSync(paths.paas(), { recursive: true, mode: 0o700 });
  const me = ownerId();
  const tmp = `${file}.${process.pid}.${++seq}`;
  writeFileSync(tmp, `${me}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        linkSync(tmp, file);
        return () => release(file, me);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      }
      const holder = serveLockHolder(file);
      if (holder !== null) throw busy(holder);
      const tomb = `${file}.stale.${process.pid}.${++seq}`;
      try {
        renameSync(file, tomb);
      } catch {
        continue; // another contender moved it first
      }
      const taken = serveLockHolder(tomb);
      if (taken !== null) {
        // A live server took the lock between our read and the rename: give it back.
        try {
          linkSync(tomb, file);
        } catch {}
        unlinkSync(tomb);
        throw busy(taken);
      }
      unlinkSync(tomb);
    }
    const holder = serveLockHolder(file);
    throw holder !== null
      ? busy(holder)
      : new LjError("conflict", "server-lock", `cannot take the server lock ${file}`);
  } finally {
    unlinkSync(tmp);
  }
}

function release(file: string, me: string): void {
  try {
    if (readFileSync(file, "utf8").trim() === me) unlinkSync(file);
  } catch {}
}
