/**
 * The only file that imports bun:ffi. It loads the Zig shim and exposes its handful of C-ABI
 * functions with TypeScript types; everything else calls these wrappers.
 */
import { dlopen, FFIType, ptr } from "bun:ffi";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { LjError, type LjErrorKind } from "../errors.ts";
import { platformNumbers } from "./platform.ts";

export const ABI_VERSION = 1;
const ERR_LEN = 1024;

const symbols = {
  lj_abi_version: { args: [], returns: FFIType.u32 },
  lj_spawn: {
    args: [FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.ptr, FFIType.u64],
    returns: FFIType.i32,
  },
  lj_reap: {
    args: [FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr, FFIType.u64],
    returns: FFIType.i32,
  },
  lj_unmount: { args: [FFIType.ptr, FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  lj_cleanup: { args: [FFIType.ptr, FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  lj_proc_start: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  lj_net: { args: [FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  lj_cgroup_layout: {
    args: [FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.u64],
    returns: FFIType.i32,
  },
  lj_lease: {
    args: [FFIType.u32, FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64],
    returns: FFIType.i32,
  },
} as const;

type Shim = ReturnType<typeof dlopen<typeof symbols>>["symbols"];
let shim: Shim | undefined;

export function supportedPlatform(platform: string = process.platform): "linux" | "freebsd" {
  if (platform === "linux" || platform === "freebsd") return platform;
  throw new LjError(
    "unavailable",
    "unsupported-platform",
    `lightjail runs on Linux and FreeBSD, not on ${platform}`,
    { hint: "jails need Linux namespaces or FreeBSD jail(2)" },
  );
}

export function libraryPath(): string {
  supportedPlatform();
  const fromEnv = process.env.LJ_SHIM;
  if (fromEnv) return fromEnv;
  return join(import.meta.dir, "..", "..", "zig", "zig-out", "lib", "liblightjail.so");
}

function load(): Shim {
  if (shim) return shim;
  const path = libraryPath();
  if (!existsSync(path)) {
    throw new LjError("unavailable", "shim-missing", `the jail shim is not built (${path} is missing)`, {
      hint: "run ./scripts/bootstrap.sh (or `cd zig && zig build -Doptimize=ReleaseSafe`)",
    });
  }
  const lib = dlopen(path, symbols);
  const v = lib.symbols.lj_abi_version();
  if (v !== ABI_VERSION) {
    throw new LjError("unavailable", "shim-abi", `jail shim ABI ${v} does not match ${ABI_VERSION}`, {
      hint: "rebuild the shim: ./scripts/bootstrap.sh",
    });
  }
  shim = lib.symbols;
  return shim;
}

/** Errors of the shim: `errno` is the positive error number, the message names the step. */
export class ShimError extends LjError {
  readonly errno: number;
  constructor(errno: number, text: string) {
    super("isolation", "jail-setup", text || `jail shim failed with errno ${errno}`);
    this.errno = errno;
  }
}

const decoder = new TextDecoder();
function cString(buf: Uint8Array): string {
  const end = buf.indexOf(0);
  return decoder.decode(buf.subarray(0, end < 0 ? buf.length : end));
}

export interface SpawnFds {
  pid: number;
  statusFd: number;
  syncFd: number;
  stdinFd: number;
  stdoutFd: number;
  stderrFd: number;
}

/** Creates a jail from an encoded spec (see spec.ts). Returns the owner's descriptors. */
export function shimSpawn(spec: Uint8Array): SpawnFds {
  const s = load();
  const out = new Int32Array(8);
  const err = new Uint8Array(ERR_LEN);
  const rc = s.lj_spawn(ptr(spec), spec.byteLength, ptr(out), ptr(err), ERR_LEN);
  if (rc !== 0) throw new ShimError(rc, cString(err));
  return {
    pid: out[0]!,
    statusFd: out[1]!,
    syncFd: out[2]!,
    stdinFd: out[3]!,
    stdoutFd: out[4]!,
    stderrFd: out[5]!,
  };
}

/** lj_reap's "still running" (EAGAIN, whose number differs between the kernels). */
export function reapPending(rc: number, platform: string = process.platform): boolean {
  return rc === platformNumbers(platform).EAGAIN;
}

/** Reaps the jail's first process: its raw wait status, or null while it still runs. */
export function shimReap(pid: number, nohang: boolean): number | null {
  const s = load();
  const status = new Int32Array(1);
  const err = new Uint8Array(ERR_LEN);
  const rc = s.lj_reap(pid, nohang ? 1 : 0, ptr(status), ptr(err), ERR_LEN);
  if (reapPending(rc)) return null;
  if (rc !== 0) throw new ShimError(rc, cString(err));
  return status[0]!;
}

/** Detaches a mount left behind by a jail whose owner died. */
export function shimUnmount(path: string): void {
  const s = load();
  const p = Buffer.from(`${path}\0`);
  const err = new Uint8Array(ERR_LEN);
  const rc = s.lj_unmount(ptr(p), ptr(err), ERR_LEN);
  if (rc !== 0) throw new ShimError(rc, cString(err));
}

/** Removes the kernel-side leftovers of a dead owner's jail by name (FreeBSD: the jail and its
 * RCTL rules; a no-op on Linux, where nothing outlives a jail's namespaces). */
export function shimCleanup(name: string): void {
  const s = load();
  const p = Buffer.from(`${name}\0`);
  const err = new Uint8Array(ERR_LEN);
  const rc = s.lj_cleanup(ptr(p), ptr(err), ERR_LEN);
  if (rc !== 0) throw new ShimError(rc, cString(err));
}

/**
 * Applies a network request (encoded by src/jail/net.ts: a jail's filter elements, links and
 * guards in one nftables transaction). Linux only.
 */
export function shimNet(req: Uint8Array): void {
  const s = load();
  const err = new Uint8Array(ERR_LEN);
  const rc = s.lj_net(ptr(req), req.byteLength, ptr(err), ERR_LEN);
  if (rc !== 0) throw new ShimError(rc, cString(err));
}

/**
 * Where jails' cgroups live (zig/src/cgroup_layout.zig): "VERSION\nHIERARCHY DIR\n..." read
 * from `mountinfo` (this process's when empty), the bases made ready when `prepare` is set.
 */
export function shimCgroupLayout(mountinfo: string, prepare: boolean): string {
  const s = load();
  const info = Buffer.from(mountinfo);
  const out = new Uint8Array(4096);
  const err = new Uint8Array(ERR_LEN);
  const rc = s.lj_cgroup_layout(
    info.byteLength ? ptr(info) : null,
    info.byteLength,
    prepare ? 1 : 0,
    ptr(out),
    out.byteLength,
    ptr(err),
    ERR_LEN,
  );
  if (rc !== 0) throw new ShimError(rc, cString(err));
  return cString(out);
}

/** The operations of lj_lease (zig/src/netlease.zig, `Op`). */
export const LeaseOp = {
  config: 1,
  subnet: 2,
  register: 3,
  unregister: 4,
  lockIfIdle: 5,
  roots: 6,
  liveRoots: 7,
  acquire: 8,
  drop: 9,
  reclaim: 10,
  list: 11,
  takeOff: 12,
  poolClaim: 13,
  poolUnclaim: 14,
  poolDrain: 15,
  adopt: 16,
} as const;

const EPERM = 1;
const ERANGE = 34;
let leaseOut = new Uint8Array(64 * 1024);
const encoder = new TextEncoder();
const NUL = new Uint8Array(1);

/**
 * One operation of the lease rules (Linux): its string arguments in, its JSON answer out. A
 * refusal becomes the LjError the shim worded (kind, code, message, hint); an OS failure a
 * ShimError naming the step.
 */
export function shimLease(op: number, args: string[]): unknown {
  const s = load();
  const req = encoder.encode(args.join("\0"));
  const err = new Uint8Array(ERR_LEN);
  const len = new BigUint64Array(1);
  for (;;) {
    len[0] = BigInt(leaseOut.length);
    const rc = s.lj_lease(
      op,
      ptr(req.length ? req : NUL),
      req.length,
      ptr(leaseOut),
      ptr(len),
      ptr(err),
      ERR_LEN,
    );
    if (rc === 0) return JSON.parse(decoder.decode(leaseOut.subarray(0, Number(len[0]))));
    if (rc === ERANGE && Number(len[0]) > leaseOut.length) {
      leaseOut = new Uint8Array(Number(len[0]) * 2);
      continue;
    }
    const text = cString(err);
    const [kind, code, message, hint] = text.split("\t");
    if (rc === EPERM && message !== undefined)
      throw new LjError(kind as LjErrorKind, code!, message, { hint: hint || undefined });
    throw new ShimError(rc, text);
  }
}

/**
 * FreeBSD: a process's start time in microseconds since boot (kern.proc.pid's ki_start less
 * kern.boottime), its identity across pid reuse; null when there is no such process.
 * (Linux reads /proc/PID/stat instead; its shim answers ENOSYS.)
 */
export function shimProcStart(pid: number): bigint | null {
  const s = load();
  const out = new BigUint64Array(1);
  const err = new Uint8Array(ERR_LEN);
  const rc = s.lj_proc_start(pid, ptr(out), ptr(err), ERR_LEN);
  if (rc !== 0) return null;
  return out[0]!;
}

/**
 * The few libc calls Node's fs has no counterpart for, used to publish overlay layers:
 * extended attributes (overlayfs marks an opaque directory with one) and the whiteout that
 * records a deleted lower file (a character device 0:0). Linux only.
 */
const libcSymbols = {
  lgetxattr: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
  lsetxattr: {
    args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.i32],
    returns: FFIType.i32,
  },
  mknod: { args: [FFIType.ptr, FFIType.u32, FFIType.u64], returns: FFIType.i32 },
} as const;
let libc: ReturnType<typeof dlopen<typeof libcSymbols>>["symbols"] | undefined;
const libcCalls = () => {
  libc ??= dlopen("libc.so.6", libcSymbols).symbols;
  return libc;
};
const cstr = (s: string) => Buffer.from(`${s}\0`);

/** An extended attribute's value (not following a symlink), or null when it has none. */
export function getXattr(path: string, name: string): Buffer | null {
  const buf = Buffer.alloc(256);
  const n = Number(libcCalls().lgetxattr(ptr(cstr(path)), ptr(cstr(name)), ptr(buf), buf.length));
  return n < 0 ? null : buf.subarray(0, n);
}

export function setXattr(path: string, name: string, value: string): void {
  const v = Buffer.from(value);
  const p = cstr(path);
  if (
    libcCalls().lsetxattr(ptr(p), ptr(cstr(name)), v.length ? ptr(v) : ptr(Buffer.alloc(1)), v.length, 0) !==
    0
  ) {
    throw new LjError("internal", "setxattr-failed", `cannot set ${name} on ${path}`);
  }
}

/** Creates an overlayfs whiteout (a character device 0:0, which opens nothing) at `path`. */
export function makeWhiteout(path: string): void {
  const S_IFCHR = 0o020000;
  if (libcCalls().mknod(ptr(cstr(path)), S_IFCHR, 0) !== 0) {
    throw new LjError("internal", "whiteout-failed", `cannot create the whiteout ${path}`);
  }
}
