/**
 * A tiny self-contained world for benchmarks: /bin/true and /bin/sh with exactly the shared
 * libraries they load, copied from the host, and a dynamic linker cache as every real world
 * has (without one, the loader probes some thirty missing paths per program). Every runner
 * (lightjail, bwrap, unshare+chroot) gets the same root, so the comparison measures the
 * sandboxes, not the filesystems.
 */
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import type { JailSpec } from "../src/jail/spec.ts";

function libsOf(bin: string): string[] {
  const out = Bun.spawnSync(["ldd", bin]).stdout.toString();
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    const m = /(\/\S+)/.exec(line.includes("=>") ? (line.split("=>")[1] ?? "") : line);
    if (m?.[1]) libs.push(m[1]);
  }
  return libs;
}

/** Recreates `path` under `root`, with every symlink on the way (usrmerge's /bin -> usr/bin). */
function place(root: string, path: string): void {
  const parts = path.split("/").filter(Boolean);
  let cur = "/";
  for (const [i, part] of parts.entries()) {
    const next = join(cur, part);
    const dest = join(root, next);
    if (lstatSync(next).isSymbolicLink()) {
      const link = readlinkSync(next);
      if (!lstatSync(dest, { throwIfNoEntry: false })) {
        mkdirSync(dirname(dest), { recursive: true });
        symlinkSync(link, dest);
      }
      place(root, join(link.startsWith("/") ? link : join(cur, link), ...parts.slice(i + 1)));
      return;
    }
    if (i === parts.length - 1) {
      mkdirSync(dirname(dest), { recursive: true });
      if (!existsSync(dest)) copyFileSync(next, dest);
    }
    cur = next;
  }
}

export function makeMiniWorld(root: string): string {
  mkdirSync(root, { recursive: true });
  for (const d of ["proc", "dev", "tmp", "etc"]) mkdirSync(join(root, d), { recursive: true });
  const libDirs = new Set<string>();
  for (const bin of ["/bin/true", "/bin/sh"]) {
    place(root, bin);
    for (const lib of libsOf(bin)) {
      place(root, lib);
      libDirs.add(dirname(lib));
    }
  }
  writeFileSync(join(root, "etc", "ld.so.conf"), `${[...libDirs].join("\n")}\n`);
  const ldconfig = Bun.spawnSync(["ldconfig", "-r", root], { stderr: "pipe" });
  if (ldconfig.exitCode !== 0) throw new Error(`ldconfig -r ${root}: ${ldconfig.stderr.toString().trim()}`);
  return root;
}

/** The benchmarks' jail: /bin/true in a full jail over `world`, with memory and pids limits. */
export function benchJailSpec(world: string): JailSpec {
  return {
    argv: ["/bin/true"],
    layers: [world],
    limits: { memoryBytes: 256 * 1024 * 1024, pids: 64 },
    net: "none",
    stdio: ["ignore", "ignore", "ignore"],
  };
}

/** The peer: `bwrap` with every namespace, the same world read-only, /proc, /dev and /tmp;
 * the command to run follows. */
export function bwrapPeer(world: string): string[] {
  const mounts = ["--ro-bind", world, "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"];
  return ["bwrap", "--unshare-all", "--die-with-parent", ...mounts];
}
