/**
 * Build disks: the only places a build can write to (its /tmp aside, a tmpfs charged to its
 * memory limit). Each is an ext4 filesystem in a sparse image file of fixed size, loop-mounted
 * on the host: a build that fills it gets ENOSPC and the host's disk never sees more than the
 * size. A quota enforced by the kernel's block allocator cannot be raced the way a size check
 * after the fact can, and needs neither project quotas nor a particular host filesystem.
 *
 * A build disk lives in run/builds/<id>/ (the image and its mount point, with its owner's id,
 * so `sweepBuildDisks` can take back what a dead builder left mounted). Its root belongs to
 * the build's host identity, so root inside the build's user namespace owns it.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { ownerId, ownerLive } from "../jail/owner.ts";
import { ensureSearchable } from "../jail/spawn.ts";
import { paths } from "../store/paths.ts";

export interface BuildDisk {
  /** Where the filesystem is mounted on the host. */
  path: string;
  sizeBytes: number;
  dispose(): void;
}

const buildsDir = () => join(paths.run(), "builds");

function sh(cmd: string, args: string[], what: string): void {
  const r = spawnSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr || r.stdout).trim().split("\n").slice(-3).join("; ");
    throw new LjError("unavailable", "build-disk", `${what}: ${why}`, {
      hint:
        cmd === "mkfs.ext4"
          ? "install e2fsprogs (mkfs.ext4)"
          : "build disks need root, loop devices (/dev/loop-control) and ext4",
    });
  }
}

/**
 * Makes and mounts a build disk of `sizeBytes`, its root owned by `owner` (uid, gid).
 * `name` says what it is for, in the directory's name. A build's root is an unprivileged uid
 * on the host: the directories on the way to its disk and its stage are made searchable.
 */
export function createBuildDisk(
  name: string,
  sizeBytes: number,
  owner: { uid: number; gid: number },
): BuildDisk {
  if (!Number.isInteger(sizeBytes) || sizeBytes < 64 << 20) {
    throw new LjError("usage", "bad-disk-size", `a build disk needs at least 64 MiB, got ${sizeBytes} bytes`);
  }
  sweepBuildDisks();
  ensureSearchable(paths.root());
  ensureSearchable(paths.run());
  ensureSearchable(buildsDir());
  const dir = join(
    buildsDir(),
    `${name}-${process.pid}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`,
  );
  mkdirSync(dir, { mode: 0o711 });
  // PID.START (ownerId): a reused pid is not this builder.
  writeFileSync(join(dir, "owner"), ownerId());
  const image = join(dir, "disk.img");
  const mnt = join(dir, "mnt");
  mkdirSync(mnt, { mode: 0o711 });
  try {
    writeFileSync(image, "");
    sh("truncate", ["-s", String(sizeBytes), image], `size the build disk ${image}`);
    // No reserved blocks (the build owns the whole size), inode tables initialised lazily (a
    // few milliseconds for any size), the root handed to the build's identity.
    sh(
      "mkfs.ext4",
      [
        "-q",
        "-F",
        "-m",
        "0",
        "-E",
        `lazy_itable_init=1,lazy_journal_init=1,root_owner=${owner.uid}:${owner.gid}`,
        image,
      ],
      `make the build disk's filesystem (${image})`,
    );
    sh("mount", ["-o", "loop,nosuid,nodev", image, mnt], `mount the build disk ${image}`);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  rmSync(join(mnt, "lost+found"), { recursive: true, force: true });
  let gone = false;
  return {
    path: mnt,
    sizeBytes,
    dispose() {
      if (gone) return;
      gone = true;
      removeDisk(dir);
    },
  };
}

/** Unmounts a disk and removes its directory; never descends into a still-mounted tree. */
function removeDisk(dir: string): void {
  const mnt = join(dir, "mnt");
  if (isMounted(mnt)) {
    const r = spawnSync("umount", [mnt], { stdio: "ignore" });
    // Busy (a straggler still holds it): detach it; the kernel frees it with the last user.
    if (r.status !== 0) spawnSync("umount", ["--lazy", mnt], { stdio: "ignore" });
  }
  if (isMounted(mnt)) return;
  rmSync(dir, { recursive: true, force: true });
}

function isMounted(p: string): boolean {
  let text: string;
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return false;
  }
  return text.split("\n").some((l) => l.split(" ")[4] === p);
}

/** Takes back the disks of builders that died mid-build (a crash, a kill -9). */
export function sweepBuildDisks(): void {
  const root = buildsDir();
  if (!existsSync(root)) return;
  for (const n of readdirSync(root)) {
    const dir = join(root, n);
    let owner = "";
    try {
      owner = readFileSync(join(dir, "owner"), "utf8");
    } catch {}
    const [pid, start] = owner.split(".");
    if (ownerLive(Number(pid), start)) continue;
    removeDisk(dir);
  }
}
