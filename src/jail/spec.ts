/**
 * JailSpec: what a jail is made of, validated here and encoded into the shim's wire format
 * (zig/src/spec.zig documents the bytes; the two files change together).
 */
import { LjError } from "../errors.ts";

export type NetMode = "none" | "host" | "private";
export type StdioMode = "inherit" | "pipe" | "ignore" | number;

export interface BindMount {
  src: string;
  dst: string;
  readonly?: boolean;
  /**
   * Linux, user-namespaced jails: show this read-only source idmapped, so the host's ids
   * 0..count-1 appear inside as themselves (root-owned files as root's) instead of as nobody.
   * Root inside then has root's read access to the source: ask for it only for sources that
   * are the jail's system (a host world's /usr), never for one holding host secrets. Without a
   * user namespace the host's ids show as they are anyway, so the flag changes nothing there.
   */
  idmap?: boolean;
  /**
   * Linux: the jail's layers' own copies of this directory merge over the source (an overlay
   * at the target, the source at the bottom); in a build (an upper layer) what the jail
   * writes there lands in the upper's copy instead of the source. A host world's /usr is bound
   * so: an overlay built over it installs packages into itself, and jails over that overlay see
   * them. Read-only (the source is never written).
   */
  layered?: boolean;
}

export interface JailLimits {
  /** Memory limit in bytes (cgroup memory.max / memory.limit_in_bytes, RCTL memoryuse). */
  memoryBytes?: number;
  /** Maximum number of processes and threads. */
  pids?: number;
  /** CPU quota in CPUs (0.5 = half a core). */
  cpus?: number;
}

export type RlimitName = "nofile" | "nproc" | "core" | "fsize" | "stack" | "as" | "cpu" | "memlock";

export interface JailSpec {
  /** Program and arguments; a name without a slash is searched in the jail's PATH. */
  argv: string[];
  /** Exactly the payload's environment: nothing is inherited from the caller. */
  env?: Record<string, string>;
  cwd?: string;
  /** Seed `-d DIR`: use this directory as the root, as is and writable. */
  root?: string;
  rootReadonly?: boolean;
  /** Read-only layers, bottom to top: the world first, then overlays. */
  layers?: string[];
  /** Writable upper layer (builds). Default: a fresh tmpfs thrown away at exit. */
  upper?: string;
  hostname?: string;
  /** Seed `-0` is uid/gid 65534. Default root (without capabilities). */
  uid?: number;
  gid?: number;
  net?: NetMode;
  mounts?: BindMount[];
  limits?: JailLimits;
  /**
   * Resource limits, soft and hard (one number: both). Without `nofile` a jail gets 1024 soft,
   * 4096 hard (the shim's default, zig/src/spec.zig `defaults`), never its owner's limit.
   */
  rlimits?: Partial<Record<RlimitName, number | [number, number]>>;
  /** Capabilities the payload keeps (e.g. ["CHOWN", "DAC_OVERRIDE"]); default none. */
  caps?: string[];
  stdio?: [StdioMode, StdioMode, StdioMode];
  /** Descriptors handed to the payload as 3, 4, ... */
  passFds?: number[];
  /** Kill the jail after this many milliseconds. */
  timeoutMs?: number;
  /** Detach from the controlling terminal (default: true unless stdin is inherited). */
  newSession?: boolean;
  /** Keep the seccomp filter (default true). */
  seccomp?: boolean;
  /**
   * Size caps for the tmpfs upper layer (the jail's writable `/`, without `upper`) and /tmp, in
   * bytes. Default (the shim's, zig/src/spec.zig `defaults`): each as large as the memory
   * limit, or 256 MiB without one. Writing past a cap fails with ENOSPC.
   */
  upperBytes?: number;
  tmpBytes?: number;
  /** FreeBSD: addresses for ip4.addr/ip6.addr and the interface they alias on. */
  addresses?: string[];
  /** FreeBSD: the interface the addresses alias on. Linux (net "private"): the uplink for egress. */
  iface?: string;
  /** Linux, net "private": "auto" (default) or ADDR[/PREFIX] inside the jail subnet. */
  address?: string;
  /** Linux, net "private": outbound NAT through the host (off by default). */
  egress?: boolean;
  /** Linux, net "private": addresses this jail may open connections to (app -> service). */
  links?: string[];
  /** Name used for the jail (FreeBSD jail name, error texts). */
  name?: string;
  /**
   * Linux: run in a new user namespace, so root inside is an unprivileged uid outside
   * (inside ids 0..count-1 map to hostBase..). `true` uses the defaults: 100000 and 65536.
   * The world and overlays are seen idmapped (host ids 0..count-1 as themselves: root's files
   * are root's inside, and root may change them; the changes land in the upper layer, owned by
   * hostBase+id); so are mounts marked `idmap`. The paths to the stage, the upper layer and
   * other bind sources must be searchable by hostBase.
   */
  userns?: boolean | { uidBase?: number; gidBase?: number; count?: number };
  /**
   * Linux: time every step of the jail's life (setup, keeper, payload) and report it in the
   * result's `trace`. Costs a few status-pipe writes; for benchmarks and diagnosis.
   */
  trace?: boolean;
}

/**
 * Linux capabilities in kernel order (index = capability number), split into those a jail may
 * keep and those it never may (they open the host: modules, raw I/O, administration, time).
 */
const CAPS = (
  "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE " +
  "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO " +
  "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME " +
  "SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP"
).split(" ");
const GRANTABLE = new Set(
  (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID NET_BIND_SERVICE NET_RAW " +
    "SYS_CHROOT AUDIT_WRITE SETFCAP SETPCAP"
  ).split(" "),
);

/** The capabilities a package manager needs when a build runs as root. */
export const BUILD_CAPS = [
  "CHOWN",
  "DAC_OVERRIDE",
  "FOWNER",
  "FSETID",
  "KILL",
  "SETGID",
  "SETUID",
  "SYS_CHROOT",
  "AUDIT_WRITE",
];

const RLIMITS: Record<RlimitName, number> = {
  cpu: 0,
  fsize: 1,
  stack: 3,
  core: 4,
  nproc: 6,
  nofile: 7,
  memlock: 8,
  as: 9,
};

export const NOBODY = 65534;

/**
 * Where a jail's programs are looked up when its environment says nothing else; the shim
 * searches the same list for a payload without PATH (zig/src/sys.zig `default_path`).
 */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Host paths a spec may mask (zig/src/spec.zig max_hides). */
export const MAX_HIDDEN = 16;

const Tag = {
  rootDir: 1,
  lower: 2,
  upper: 3,
  work: 4,
  stage: 5,
  hostname: 6,
  argv: 7,
  env: 8,
  cwd: 9,
  uid: 10,
  gid: 11,
  flags: 12,
  caps: 13,
  rlimit: 14,
  mount: 15,

  cgroup: 16,
  limits: 17,
  stdio: 18,
  passFd: 19,
  tmpfs: 20,
  jailName: 21,
  ip4: 22,
  ip6: 23,
  iface: 24,
  idmap: 25,
  hide: 26,
  net: 27,
} as const;

export const Flag = {
  netHost: 1 << 0,
  netPrivate: 1 << 1,
  newSession: 1 << 2,
  noSeccomp: 1 << 3,
  rootReadonly: 1 << 4,
  noTmp: 1 << 5,
  userns: 1 << 6,
  trace: 1 << 7,
  /** The owner has nothing to do before the payload starts: the shim lets it go at once. */
  go: 1 << 8,
} as const;

/** A mount record's flags (zig/src/spec.zig MountFlags). */
export const MountFlag = {
  readonly: 1 << 0,
  /** Create the target if it is missing (always asked for). */
  create: 1 << 1,
  idmap: 1 << 2,
  layered: 1 << 3,
} as const;

/** `join`: made and limited ahead of time by the owner; the jail only joins it. */
export const CgroupKind = { unified: 0, memory: 1, pids: 2, cpu: 3, join: 4 } as const;
export interface CgroupDir {
  kind: number;
  dir: string;
}

export const STDIO_NULL = -1;
export const STDIO_PIPE = -2;

const invalid = (message: string, hint?: string) => new LjError("usage", "invalid-spec", message, { hint });

function checkPath(what: string, p: string): void {
  if (typeof p !== "string" || p.length === 0) throw invalid(`${what} must be a non-empty path`);
  if (!p.startsWith("/")) throw invalid(`${what} must be an absolute path, got "${p}"`);
  if (p.includes("\0")) throw invalid(`${what} contains a NUL byte`);
  if (p.length > 4000) throw invalid(`${what} is longer than 4000 bytes`);
}

function checkId(what: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xfffffffe)) {
    throw invalid(`${what} must be an integer between 0 and 4294967294, got ${v}`);
  }
}

/** Checks everything the kernel would otherwise reject with a bare EINVAL. */
export function validateSpec(spec: JailSpec): void {
  if (!Array.isArray(spec.argv) || spec.argv.length === 0 || spec.argv[0] === "") {
    throw invalid("nothing to run: give a command", "lj spawn ... -- CMD ARGS, or -p 'SCRIPT'");
  }
  if (spec.argv.length > 1000) throw invalid("more than 1000 arguments");
  for (const a of spec.argv) if (a.includes("\0")) throw invalid("an argument contains a NUL byte");
  if (spec.root && spec.layers?.length) {
    throw invalid("give either a root directory (-d) or layers (--world/--overlay), not both");
  }
  if (!spec.root && !spec.layers?.length) {
    throw invalid("no root: give -d DIR or a world", "lj world list shows the worlds there are");
  }
  if (spec.root) checkPath("root directory", spec.root);
  for (const l of spec.layers ?? []) checkPath("layer", l);
  if (spec.upper) checkPath("upper layer", spec.upper);
  if (spec.cwd !== undefined) checkPath("working directory", spec.cwd);
  if ((spec.layers?.length ?? 0) > 60) throw invalid("more than 60 layers");
  const env = Object.entries(spec.env ?? {});
  if (env.length > 1000) throw invalid("more than 1000 environment variables");
  for (const [k, v] of env) {
    if (!/^[^=\0]+$/.test(k)) throw invalid(`invalid environment variable name "${k}"`);
    if (v.includes("\0")) throw invalid(`environment variable ${k} contains a NUL byte`);
  }
  if (spec.hostname !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(spec.hostname)) {
    throw invalid(`invalid hostname "${spec.hostname}"`, "letters, digits, dots and dashes, at most 63");
  }
  checkId("uid", spec.uid);
  checkId("gid", spec.gid);
  if (typeof spec.userns === "object") {
    const { uidBase = 100000, gidBase = uidBase, count = 65536 } = spec.userns;
    checkId("user namespace uid base", uidBase);
    checkId("user namespace gid base", gidBase);
    if (!Number.isInteger(count) || count < 1 || count > 1 << 24)
      throw invalid("user namespace id count out of range");
    if ((spec.uid ?? 0) >= count || (spec.gid ?? 0) >= count) {
      throw invalid("uid/gid must be inside the user namespace's mapped range");
    }
  }
  if (spec.net && !["none", "host", "private"].includes(spec.net)) {
    throw invalid(`unknown network mode "${spec.net}"`, "use none, host or private");
  }
  if (spec.net !== "private" && (spec.address !== undefined || spec.egress || spec.links?.length)) {
    throw invalid('an address, egress or links need net "private"');
  }
  const addr = spec.address;
  if (addr !== undefined && addr !== "auto" && !/^\d+\.\d+\.\d+\.\d+(\/\d+)?$/.test(addr)) {
    throw invalid(`invalid jail address "${spec.address}"`, "ADDR[/PREFIX] or auto");
  }
  if ((spec.links?.length ?? 0) > 256) throw invalid("more than 256 links");
  for (const m of spec.mounts ?? []) {
    checkPath("mount source", m.src);
    checkPath("mount target", m.dst);
    if (m.dst === "/") throw invalid("a mount cannot replace the jail's root");
    if (m.dst.split("/").includes("..")) throw invalid(`mount target ${m.dst} contains ".."`);
    if (m.layered && !m.readonly) {
      throw invalid(
        `layered mount ${m.dst} must be read-only`,
        "its source is never written; add readonly: true",
      );
    }
    if (m.idmap && !m.readonly) {
      // Writes through an idmapped mount land as the host's own ids (root's as root's).
      throw invalid(`idmapped mount ${m.dst} must be read-only`, "add readonly: true, or drop idmap");
    }
  }
  if ((spec.mounts?.length ?? 0) > 60) throw invalid("more than 60 mounts");
  const lim = spec.limits ?? {};
  for (const [k, v] of Object.entries(lim)) {
    if (v !== undefined && (typeof v !== "number" || !(v > 0) || !Number.isFinite(v))) {
      throw invalid(`limit ${k} must be a positive number, got ${v}`);
    }
  }
  if (lim.memoryBytes !== undefined && lim.memoryBytes < 1 << 20) throw invalid("memory limit below 1 MB");
  for (const c of spec.caps ?? []) {
    const name = c.toUpperCase().replace(/^CAP_/, "");
    if (!CAPS.includes(name)) throw invalid(`unknown capability "${c}"`);
    if (!GRANTABLE.has(name)) throw invalid(`capability ${name} cannot be granted to a jail`);
  }
  for (const name of Object.keys(spec.rlimits ?? {})) {
    if (!(name in RLIMITS)) throw invalid(`unknown rlimit "${name}"`);
  }
  if ((spec.passFds?.length ?? 0) > 16) throw invalid("more than 16 passed descriptors");
  if (spec.timeoutMs !== undefined && !(spec.timeoutMs > 0)) throw invalid("timeout must be positive");
}

export function capMask(caps: string[] = []): bigint {
  let m = 0n;
  for (const c of caps) {
    const i = CAPS.indexOf(c.toUpperCase().replace(/^CAP_/, ""));
    if (i >= 0) m |= 1n << BigInt(i);
  }
  return m;
}

/** Little-endian record writer for the shim's wire format. */
class Encoder {
  private buf = new Uint8Array(4096);
  private view = new DataView(this.buf.buffer);
  private len = 0;
  private static text = new TextEncoder();

  constructor() {
    this.bytes(Encoder.text.encode("LJS1"));
    this.ensure(4);
    this.view.setUint32(this.len, 1, true);
    this.len += 4;
  }

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  private bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  record(tag: number, payload: Uint8Array): void {
    this.ensure(8);
    this.view.setUint16(this.len, tag, true);
    this.view.setUint16(this.len + 2, 0, true);
    this.view.setUint32(this.len + 4, payload.length, true);
    this.len += 8;
    this.bytes(payload);
  }

  str(tag: number, s: string): void {
    this.record(tag, Encoder.text.encode(`${s}\0`));
  }

  u32(tag: number, v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    this.record(tag, b);
  }

  i32(tag: number, v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setInt32(0, v, true);
    this.record(tag, b);
  }

  u64s(tag: number, ...vs: bigint[]): void {
    const b = new Uint8Array(8 * vs.length);
    const dv = new DataView(b.buffer);
    for (const [i, v] of vs.entries()) dv.setBigUint64(i * 8, v, true);
    this.record(tag, b);
  }

  prefixed(tag: number, head: number, s: string): void {
    const body = Encoder.text.encode(s);
    const b = new Uint8Array(4 + body.length);
    new DataView(b.buffer).setUint32(0, head >>> 0, true);
    b.set(body, 4);
    this.record(tag, b);
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

export interface EncodeContext {
  /** Empty directory the root is assembled on (Linux: shared, per mount namespace). */
  stage: string;
  /** overlayfs work directory for a given upper layer (same filesystem). */
  work?: string;
  /** Linux: cgroups the jail's own placer creates, limits and joins while the jail sets up. */
  cgroups?: CgroupDir[];
  stdio: [number, number, number];
  newSession: boolean;
  /** Neither held nor wired by its owner: the shim puts the go byte in the sync pipe itself. */
  go?: boolean;
  /** Host paths the jail must never see (the state root): masked wherever its tree shows them. */
  hide?: string[];
  /** Linux, net "private": the address the jail's child wires (src/jail/net.ts, wireRecord). */
  net?: Uint8Array;
}

function ipBytes(addr: string): { tag: number; bytes: Uint8Array } {
  const a = addr.split("/")[0] ?? "";
  if (/^\d+\.\d+\.\d+\.\d+$/.test(a)) {
    const parts = a.split(".").map(Number);
    if (parts.some((p) => p > 255)) throw invalid(`invalid IPv4 address ${addr}`);
    return { tag: Tag.ip4, bytes: Uint8Array.from(parts) };
  }
  throw invalid(`unsupported address ${addr}`, "give an IPv4 address");
}

export function encodeSpec(spec: JailSpec, ctx: EncodeContext): Uint8Array {
  const e = new Encoder();
  if (spec.root) e.str(Tag.rootDir, spec.root);
  for (const l of spec.layers ?? []) e.str(Tag.lower, l);
  if (spec.upper) {
    e.str(Tag.upper, spec.upper);
    if (!ctx.work) throw invalid("upper layer without a work directory");
    e.str(Tag.work, ctx.work);
  }
  e.str(Tag.stage, ctx.stage);
  if (spec.hostname) e.str(Tag.hostname, spec.hostname);
  if (spec.name) e.str(Tag.jailName, spec.name);
  for (const a of spec.argv) e.str(Tag.argv, a);
  for (const [k, v] of Object.entries(spec.env ?? {})) e.str(Tag.env, `${k}=${v}`);
  e.str(Tag.cwd, spec.cwd ?? "/");
  e.u32(Tag.uid, spec.uid ?? 0);
  e.u32(Tag.gid, spec.gid ?? spec.uid ?? 0);
  let flags = 0;
  if (spec.net === "host") flags |= Flag.netHost;
  if (spec.net === "private") flags |= Flag.netPrivate;
  if (ctx.newSession) flags |= Flag.newSession;
  if (spec.seccomp === false) flags |= Flag.noSeccomp;
  if (spec.rootReadonly) flags |= Flag.rootReadonly;
  if (spec.userns) flags |= Flag.userns;
  if (spec.trace) flags |= Flag.trace;
  if (ctx.go) flags |= Flag.go;
  e.u32(Tag.flags, flags);
  const caps = capMask(spec.caps);
  if (caps) e.u64s(Tag.caps, caps);
  for (const [name, v] of Object.entries(spec.rlimits ?? {})) {
    const [soft, hard] = Array.isArray(v) ? v : [v, v];
    const b = new Uint8Array(24);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, RLIMITS[name as RlimitName], true);
    dv.setBigUint64(8, BigInt(soft), true);
    dv.setBigUint64(16, BigInt(hard), true);
    e.record(Tag.rlimit, b);
  }
  for (const m of spec.mounts ?? []) {
    const flagsM =
      MountFlag.create |
      (m.readonly ? MountFlag.readonly : 0) |
      (m.idmap ? MountFlag.idmap : 0) |
      (m.layered ? MountFlag.layered : 0);
    e.prefixed(Tag.mount, flagsM, `${m.src}\0${m.dst}\0`);
  }
  for (const h of ctx.hide ?? []) e.str(Tag.hide, h);
  if (ctx.net) e.record(Tag.net, ctx.net);
  for (const cg of ctx.cgroups ?? []) e.prefixed(Tag.cgroup, cg.kind, `${cg.dir}\0`);
  const lim = spec.limits ?? {};
  if (lim.memoryBytes || lim.pids || lim.cpus) {
    e.u64s(
      Tag.limits,
      BigInt(Math.floor(lim.memoryBytes ?? 0)),
      BigInt(Math.floor(lim.pids ?? 0)),
      BigInt(Math.round((lim.cpus ?? 0) * 1000)),
    );
  }
  const stdio = new Uint8Array(12);
  const sv = new DataView(stdio.buffer);
  for (const [i, fd] of ctx.stdio.entries()) sv.setInt32(i * 4, fd, true);
  e.record(Tag.stdio, stdio);
  for (const fd of spec.passFds ?? []) e.i32(Tag.passFd, fd);
  if (spec.upperBytes || spec.tmpBytes) {
    e.u64s(Tag.tmpfs, BigInt(spec.upperBytes ?? 0), BigInt(spec.tmpBytes ?? 0));
  }
  for (const a of spec.addresses ?? []) {
    const ip = ipBytes(a);
    e.record(ip.tag, ip.bytes);
  }
  if (spec.iface) e.str(Tag.iface, spec.iface);
  if (spec.userns) {
    const m = typeof spec.userns === "object" ? spec.userns : {};
    const uidBase = m.uidBase ?? 100000;
    const b = new Uint8Array(12);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, uidBase, true);
    dv.setUint32(4, m.gidBase ?? uidBase, true);
    dv.setUint32(8, m.count ?? 65536, true);
    e.record(Tag.idmap, b);
  }
  return e.finish();
}

/** The jail name FreeBSD jails get when the spec names none (jail names may not hold dots). */
export const freebsdJailName = (id: string) => `lj_${id.replaceAll(".", "_")}`;

/** What a pre-made jail runs, decided when it is started (see JailPool). */
export type JailPayload = Pick<
  JailSpec,
  "argv" | "env" | "cwd" | "uid" | "gid" | "caps" | "newSession" | "seccomp"
>;

export function validatePayload(p: JailPayload): void {
  validateSpec({ ...p, layers: ["/"] });
}

/** The sync-pipe message that starts a held jail with this payload: 'p', u32 length, records. */
export function payloadMessage(p: JailPayload): Uint8Array {
  const e = new Encoder();
  for (const a of p.argv) e.str(Tag.argv, a);
  for (const [k, v] of Object.entries(p.env ?? {})) e.str(Tag.env, `${k}=${v}`);
  e.str(Tag.cwd, p.cwd ?? "/");
  e.u32(Tag.uid, p.uid ?? 0);
  e.u32(Tag.gid, p.gid ?? p.uid ?? 0);
  const caps = capMask(p.caps);
  if (caps) e.u64s(Tag.caps, caps);
  let flags = 0;
  if (p.newSession ?? true) flags |= Flag.newSession;
  if (p.seccomp === false) flags |= Flag.noSeccomp;
  e.u32(Tag.flags, flags);
  const body = e.finish();
  const msg = new Uint8Array(5 + body.length);
  msg[0] = "p".charCodeAt(0);
  new DataView(msg.buffer).setUint32(1, body.length, true);
  msg.set(body, 5);
  return msg;
}
