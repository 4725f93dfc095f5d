/**
 * Pseudo-terminals inside a jail. A jail mounts its own devpts instance at /dev/pts, so a
 * terminal its processes can name (`tty` prints /dev/pts/0) must come from that instance: the
 * owner opens the jail's ptmx through /proc/PID/root, keeps the master and hands the slave's
 * number to the payload, which opens it as its controlling terminal (payloadOnPty).
 *
 * Node and Bun have no ioctl; the few terminal ioctls come from libc through bun:ffi.
 */

import { dlopen, FFIType, ptr } from "bun:ffi";
import { closeSync, constants, existsSync, lchownSync, openSync, readFileSync, statSync } from "node:fs";
import { LjError } from "../errors.ts";
import type { Jail } from "./spawn.ts";
import type { JailSpec } from "./spec.ts";

// Linux's generic ioctl numbers (x86_64 and aarch64 alike).
const TIOCGPTN = 0x80045430;
const TIOCSPTLCK = 0x40045431;
const TIOCSWINSZ = 0x5414;

let libc: { ioctl: (fd: number, req: number, arg: unknown) => number } | undefined;

function ioctl(fd: number, req: number, arg: Uint8Array): void {
  libc ??= dlopen(process.platform === "linux" ? "libc.so.6" : "libc.so.7", {
    ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  }).symbols as unknown as typeof libc;
  if (libc!.ioctl(fd, req, ptr(arg)) < 0) throw new Error(`ioctl 0x${req.toString(16)} failed`);
}

export interface WindowSize {
  rows: number;
  cols: number;
}

/** Sets the terminal's size; the kernel sends SIGWINCH to its foreground process group. */
export function setWindowSize(master: number, size: WindowSize): void {
  const ws = new Uint16Array([clamp(size.rows), clamp(size.cols), 0, 0]);
  ioctl(master, TIOCSWINSZ, new Uint8Array(ws.buffer));
}

const clamp = (n: number) => Math.max(1, Math.min(Number.isFinite(n) ? Math.floor(n) : 24, 1000));

export interface JailPty {
  /** The owner's end: write input, read output (EIO once every slave descriptor is closed). */
  master: number;
  /** The slave's path inside the jail, e.g. /dev/pts/0. */
  path: string;
}

/**
 * Waits until the jail of keeper `pid` has its own devpts (a device other than the host's
 * /dev/pts under its root), or gives up when `gone` says the jail ended.
 */
export async function jailDevpts(pid: number, gone: () => boolean, timeoutMs = 30_000): Promise<string> {
  const host = statSync("/dev/pts").dev;
  const dir = `/proc/${pid}/root/dev/pts`;
  const deadline = performance.now() + timeoutMs;
  for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
    try {
      if (statSync(dir).dev !== host && statSync(`${dir}/ptmx`).isCharacterDevice()) return dir;
    } catch {}
    if (gone() || performance.now() > deadline)
      throw new LjError("isolation", "no-devpts", "the jail ended before its terminal could be made");
    await Bun.sleep(delay);
  }
}

/** A new terminal in the jail's devpts `dir`, its slave owned by the payload's uid and gid. */
export function openJailPty(dir: string, owner: { uid: number; gid: number }, size: WindowSize): JailPty {
  // Before the payload runs nothing in the jail could have planted a link; refuse one anyway.
  const master = openSync(`${dir}/ptmx`, constants.O_RDWR | constants.O_NOCTTY | constants.O_NOFOLLOW);
  try {
    ioctl(master, TIOCSPTLCK, new Uint8Array(4));
    const n = new Uint32Array(1);
    ioctl(master, TIOCGPTN, new Uint8Array(n.buffer));
    lchownSync(`${dir}/${n[0]}`, owner.uid, owner.gid);
    setWindowSize(master, size);
    return { master, path: `/dev/pts/${n[0]}` };
  } catch (e) {
    closeSync(master);
    throw new LjError("isolation", "pty", `cannot make a terminal in the jail: ${(e as Error).message}`);
  }
}

/**
 * The payload that runs `argv` on the terminal `path`: a session leader (the payload starts
 * in a new session) opening a terminal makes it its controlling terminal, so job control works.
 */
export function argvOnPty(path: string, argv: string[]): string[] {
  return ["/bin/sh", "-c", `exec "$@" <>${path} >&0 2>&0`, "sh", ...argv];
}

/** The host id that `id` inside the jail of keeper `pid` is (its user namespace's map). */
function hostId(pid: number, which: "uid" | "gid", id: number): number {
  let map: string;
  try {
    map = readFileSync(`/proc/${pid}/${which}_map`, "utf8");
  } catch {
    return id;
  }
  for (const line of map.trim().split("\n")) {
    const [inside, outside, count] = line.trim().split(/\s+/).map(Number);
    if (id >= inside! && id < inside! + count!) return outside! + (id - inside!);
  }
  return id;
}

/**
 * Starts a jail spawned with `hold` (and stdio "ignore") on a terminal of its own devpts:
 * the spec's argv, as its uid, with TERM. Returns the terminal's master, or null when the
 * jail has no /bin/sh to open it with (the caller runs it another way). Kills the jail on
 * failure.
 */
export async function startOnTerminal(
  jail: Jail,
  spec: JailSpec,
  size: WindowSize,
  term: string,
): Promise<JailPty | null> {
  let gone = false;
  void jail.exited.then(() => {
    gone = true;
  });
  try {
    const dir = await jailDevpts(jail.pid, () => gone);
    if (!existsSync(`/proc/${jail.pid}/root/bin/sh`)) return null;
    const uid = spec.uid ?? 0;
    const gid = spec.gid ?? uid;
    const owner = { uid: hostId(jail.pid, "uid", uid), gid: hostId(jail.pid, "gid", gid) };
    const pty = openJailPty(dir, owner, size);
    const { argv, env, cwd, caps, seccomp } = spec;
    jail.start({
      argv: argvOnPty(pty.path, argv),
      env: { ...env, TERM: term },
      cwd,
      uid,
      gid,
      caps,
      seccomp,
    });
    return pty;
  } catch (e) {
    jail.kill("SIGKILL");
    // A jail that could not be set up says why; that is the error, not the missing terminal.
    const r = gone ? await jail.exited : undefined;
    if (r?.reason === "setup")
      throw new LjError("isolation", "jail-setup", `jail setup failed: ${r.error ?? "unknown error"}`);
    throw e;
  }
}
