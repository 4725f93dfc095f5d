/**
 * Parses `lj spawn` / `ljspawn` arguments. The seed's flags keep their meanings (-d -p -n -0 -m
 * -i -f); the rest are long options. Hand-written rather than left to a generic parser because
 * the seed's `-0`, repeatable options and everything after `--` belonging to the payload need
 * exact handling, and every mistake must say which flag was wrong.
 */
import { resolve } from "node:path";
import flagTable from "../../zig/src/spawn-flags.txt" with { type: "text" };
import { usageError } from "../errors.ts";
import type { BindMount, JailSpec, NetMode } from "../jail/spec.ts";
import { NOBODY } from "../jail/spec.ts";
import { tableRows } from "../jail/table.ts";

/** A flag of `lj spawn`, from the table both parsers read (zig/src/spawn-flags.txt). */
export interface SpawnFlag {
  flag: string;
  /** The name of its value; null for a switch. */
  value: string | null;
  /** The native ljspawn handles it too (otherwise it hands the command line over). */
  native: boolean;
}

export const SPAWN_FLAGS: ReadonlyMap<string, SpawnFlag> = new Map(
  tableRows(flagTable).map(([flag, value, who]) => [
    flag!,
    { flag: flag!, value: value === "-" ? null : value!, native: who === "both" },
  ]),
);

export interface SpawnArgs {
  root?: string;
  script?: string;
  argv: string[];
  name?: string;
  nobody: boolean;
  user?: { uid: number; gid: number };
  memoryMb?: number;
  address?: string;
  iface?: string;
  egress: boolean;
  world?: string;
  overlays: string[];
  upper?: string;
  net?: NetMode;
  env: Record<string, string>;
  mounts: BindMount[];
  pids?: number;
  cpus?: number;
  timeoutS?: number;
  caps: string[];
  cwd?: string;
  readOnly: boolean;
  userns: boolean;
  json: boolean;
  trace: boolean;
}

export const SPAWN_USAGE = `Usage: lj spawn [options] (-p 'SCRIPT' | -- CMD [ARGS...])
       ljspawn  [options] (-p 'SCRIPT' | -- CMD [ARGS...])

Run one process in a fresh, ephemeral jail. Exits with the process's status (128+N for signal N).

Root (one of):
  -d DIR              use DIR as the root, as is and writable (seed ljspawn)
  --world NAME        a world as the read-only base (default: lj world default)
  --overlay PATH      a read-only overlay on top of the world (repeatable, bottom to top)
  --upper DIR         keep writes in DIR (default: a tmpfs thrown away at exit)
  --read-only         with -d: mount the root read-only

Process:
  -p 'SCRIPT'         run SCRIPT with /bin/sh -c
  -- CMD ARGS...      run CMD (searched in the jail's PATH)
  -n NAME             hostname and jail name
  -0                  run as nobody (uid/gid 65534)
  --user UID[:GID]    run as UID (and GID)
  --env K=V           set a variable (repeatable); the jail gets exactly these
  --cwd DIR           working directory inside the jail (default /)
  --cap NAME          keep a capability, e.g. CHOWN (repeatable; default none)
  --userns            Linux: a user namespace, root inside is uid 100000 outside
  --mount SRC:DST[:ro]  bind a host path into the jail (repeatable)

Limits and network:
  -m MB               memory limit in megabytes; also the size of the jail's writable /
                      and /tmp (default without -m: 256 MiB each, ENOSPC past it).
                      Every jail may open 1024 files (raisable to 4096)
  --pids N            process limit
  --cpus N            CPU quota in CPUs (e.g. 0.5)
  --timeout S         kill the jail after S seconds
  --net none|host|private  own namespace with loopback only (default), the host's
                      network, or a private address (same as -i auto)
  -i ADDR[/PREFIX]|auto  Linux: a private address in the jail subnet (LJ_SUBNET, default
                      10.233.0.0/16) on a veth; the host reaches it, its gateway is the host
                      (open ports only), other jails are filtered out. FreeBSD: an alias on
                      IFACE (default lo0)
  --egress            Linux, with -i: outbound NAT to addresses outside this machine (default: none)
  -f IFACE            FreeBSD: the interface for -i. Linux: the uplink for --egress, one of
                      the configured uplinks (LJ_UPLINKS, [net] uplinks in config.toml)

Output:
  --json              print the result as JSON on stdout when the jail ends
  --trace             time every step of the jail (setup, keeper, payload) and print
                      where the time went on stderr (with --json: in the result)
  --debug             show stack traces for errors`;

function positiveInt(flag: string, v: string | undefined): number {
  if (v === undefined || !/^\d+$/.test(v) || Number(v) <= 0) {
    throw usageError(`${flag} needs a positive whole number, got ${v === undefined ? "nothing" : `"${v}"`}`);
  }
  return Number(v);
}

function positiveNumber(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || v === "" || !Number.isFinite(n) || n <= 0) {
    throw usageError(`${flag} needs a positive number, got ${v === undefined ? "nothing" : `"${v}"`}`);
  }
  return n;
}

function parseMount(v: string): BindMount {
  const parts = v.split(":");
  const readonly = parts.length === 3 && parts[2] === "ro";
  if (
    parts.length < 2 ||
    parts.length > 3 ||
    (parts.length === 3 && parts[2] !== "ro" && parts[2] !== "rw")
  ) {
    throw usageError(`--mount takes SRC:DST[:ro], got "${v}"`);
  }
  const [src, dst] = parts as [string, string];
  if (!src || !dst.startsWith("/"))
    throw usageError(`--mount target must be an absolute path inside the jail, got "${v}"`);
  return { src: resolve(src), dst, readonly };
}

export function parseSpawnArgs(raw: string[]): SpawnArgs {
  const a: SpawnArgs = {
    argv: [],
    nobody: false,
    overlays: [],
    env: {},
    mounts: [],
    caps: [],
    readOnly: false,
    userns: false,
    json: false,
    trace: false,
    egress: false,
  };
  for (let i = 0; i < raw.length; i++) {
    let arg = raw[i]!;
    if (arg === "--") {
      a.argv = raw.slice(i + 1);
      break;
    }
    let inline: string | undefined;
    if (arg.startsWith("--") && arg.includes("=")) {
      inline = arg.slice(arg.indexOf("=") + 1);
      arg = arg.slice(0, arg.indexOf("="));
    }
    const known = SPAWN_FLAGS.get(arg);
    if (!known) {
      if (arg.startsWith("-")) throw usageError(`unknown option ${arg}`, "lj spawn --help lists the options");
      throw usageError(`unexpected argument "${arg}"`, "put the command after --, or use -p 'SCRIPT'");
    }
    if (!known.value && inline !== undefined) throw usageError(`${arg} takes no value`);
    let v = "";
    if (known.value) {
      const next = inline ?? raw[++i];
      if (next === undefined) throw usageError(`${arg} needs a value (${known.value})`);
      v = next;
    }
    switch (arg) {
      case "-d":
        a.root = resolve(v);
        break;
      case "-p":
        a.script = v;
        break;
      case "-n":
        a.name = v;
        break;
      case "-0":
        a.nobody = true;
        break;
      case "-m":
        a.memoryMb = positiveInt("-m", v);
        break;
      case "-i":
        a.address = v;
        break;
      case "-f":
        a.iface = v;
        break;
      case "--world":
        a.world = v;
        break;
      case "--overlay":
        a.overlays.push(resolve(v));
        break;
      case "--upper":
        a.upper = resolve(v);
        break;
      case "--userns":
        a.userns = true;
        break;
      case "--read-only":
        a.readOnly = true;
        break;
      case "--net": {
        if (v !== "none" && v !== "host" && v !== "private") {
          throw usageError(
            `--net takes none, host or private, got "${v}"`,
            "private addresses come with -i ADDR",
          );
        }
        a.net = v;
        break;
      }
      case "--egress":
        a.egress = true;
        break;
      case "--env": {
        const eq = v.indexOf("=");
        if (eq <= 0) throw usageError(`--env takes K=V, got "${v}"`);
        a.env[v.slice(0, eq)] = v.slice(eq + 1);
        break;
      }
      case "--mount":
        a.mounts.push(parseMount(v));
        break;
      case "--pids":
        a.pids = positiveInt("--pids", v);
        break;
      case "--cpus":
        a.cpus = positiveNumber("--cpus", v);
        break;
      case "--timeout":
        a.timeoutS = positiveNumber("--timeout", v);
        break;
      case "--cap":
        a.caps.push(v);
        break;
      case "--cwd":
        a.cwd = v;
        break;
      case "--user": {
        const m = /^(\d+)(?::(\d+))?$/.exec(v);
        if (!m) throw usageError(`--user takes UID[:GID] as numbers, got "${v}"`);
        a.user = { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) };
        break;
      }
      case "--json":
        a.json = true;
        break;
      case "--trace":
        a.trace = true;
        break;
      case "--debug":
        break;
      default:
        throw new Error(`spawn-flags.txt names ${arg}, which parseSpawnArgs does not handle`);
    }
  }
  if (a.script !== undefined && a.argv.length > 0)
    throw usageError("give either -p 'SCRIPT' or -- CMD, not both");
  if (a.script === undefined && a.argv.length === 0) {
    throw usageError("nothing to run", "lj spawn -d DIR -p 'SCRIPT', or lj spawn --world NAME -- CMD ARGS");
  }
  if (a.root && (a.world || a.overlays.length))
    throw usageError("-d cannot be combined with --world or --overlay");
  if (a.readOnly && !a.root) throw usageError("--read-only applies to -d DIR");
  if (a.nobody && a.user) throw usageError("give either -0 or --user, not both");
  if (a.iface && !a.address) throw usageError("-f IFACE needs -i ADDR");
  if (a.address && a.net && a.net !== "private") {
    throw usageError(`-i ADDR cannot be combined with --net ${a.net}`);
  }
  if (a.egress && !a.address && a.net !== "private") throw usageError("--egress needs -i ADDR (or -i auto)");
  return a;
}

/** The parts of a JailSpec the arguments decide; the root is resolved by the caller. */
export function specFromArgs(a: SpawnArgs): Omit<JailSpec, "layers" | "root"> {
  const ids = a.nobody ? { uid: NOBODY, gid: NOBODY } : (a.user ?? {});
  return {
    argv: a.script !== undefined ? ["/bin/sh", "-c", a.script] : a.argv,
    env: a.env,
    cwd: a.cwd,
    hostname: a.name,
    name: a.name,
    ...ids,
    ...netFromArgs(a),
    mounts: a.mounts,
    limits: {
      memoryBytes: a.memoryMb ? a.memoryMb * 1024 * 1024 : undefined,
      pids: a.pids,
      cpus: a.cpus,
    },
    caps: a.caps,
    upper: a.upper,
    rootReadonly: a.readOnly,
    ...(a.trace ? { trace: true } : {}),
    userns: a.userns || undefined,
    timeoutMs: a.timeoutS ? a.timeoutS * 1000 : undefined,
  };
}

/**
 * -i/-f/--egress: on FreeBSD an ip4.addr alias on IFACE (the seed's meaning); on Linux a
 * private address on a veth (src/jail/net.ts), -f naming the configured uplink for egress.
 */
function netFromArgs(a: SpawnArgs): Pick<JailSpec, "net" | "address" | "egress" | "iface" | "addresses"> {
  if (process.platform === "freebsd") {
    return {
      net: a.net ?? "none",
      ...(a.address ? { addresses: [a.address], iface: a.iface ?? "lo0" } : {}),
    };
  }
  if (!a.address && a.net !== "private") return { net: a.net ?? "none" };
  return {
    net: "private",
    address: a.address ?? "auto",
    ...(a.egress ? { egress: true } : {}),
    ...(a.iface ? { iface: a.iface } : {}),
  };
}
