/**
 * Jail addresses: the subnet they come from and the leases that keep two live jails from
 * sharing one. A lease is a file per address under $LIGHTJAIL_ROOT/run/net/leases/, created
 * with link(2) from a finished temporary file, so it appears atomically with its content and
 * at most one process can hold it, whichever process (or Bun instance) asks. It names the
 * owner by pid and start time: a lease whose owner is gone is stale and can be reclaimed
 * (by `lj gc`, or by an allocation that needs the address) after its kernel state is removed.
 */

import { createHash } from "node:crypto";
import {
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { LjError } from "../errors.ts";
import { ljRoot, paths } from "../store/paths.ts";
import { ownerId, ownerIdLive } from "./owner.ts";

/** Default jail subnet: private, and only ever routed to namespaces on this machine. */
export const DEFAULT_SUBNET = "10.233.0.0/16";

export interface Subnet {
  /** Network address as an unsigned 32-bit number. */
  network: number;
  prefix: number;
  /** The host end of every jail's veth carries this address (network + 1). */
  gateway: number;
  /** First and last address a jail may get. */
  first: number;
  last: number;
  cidr: string;
}

export interface GatewayPort {
  proto: "tcp" | "udp";
  port: number;
}

export interface NetConfig {
  subnet: Subnet;
  /** Host interfaces a jail's egress may be pinned to with -f IFACE. */
  uplinks: string[];
  /** Ports jails may reach on their gateway (configured; the API adds more at run time). */
  gatewayPorts: GatewayPort[];
  /** The state root, resolved (symlinks followed): what the names below derive from. */
  root: string;
  /** This root's nftables table, e.g. "inet lightjail_1a2b3c4d5e6f". */
  table: string;
  /** Host-side veth names of this root: VETH_FAMILY + 4 hex digits of the root's hash. */
  vethPrefix: string;
  /** $LIGHTJAIL_ROOT/run/net: leases, links and gateway port records. */
  dir: string;
}

/** Every lightjail root's host-side veths start with this (and nothing else on the host should). */
export const VETH_FAMILY = "ljn";

export interface Lease {
  address: string;
  owner: string;
  jail: string;
  veth: string;
  egress: boolean;
  uplink?: string;
  links: string[];
}

const invalidAddr = (message: string, hint?: string) =>
  new LjError("usage", "invalid-address", message, { hint });

export function parseIp(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return null;
  return (((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0) as number;
}

export function formatIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

const mask = (prefix: number) => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

export function parseSubnet(cidr: string, source = "subnet"): Subnet {
  const [addr, p] = cidr.split("/");
  const ip = parseIp(addr ?? "");
  const prefix = Number(p);
  if (ip === null || p === undefined || !/^\d+$/.test(p) || prefix < 8 || prefix > 29) {
    throw new LjError(
      "config",
      "bad-subnet",
      `${source} "${cidr}" is not an IPv4 subnet between /8 and /29`,
      {
        hint: `e.g. ${DEFAULT_SUBNET}`,
      },
    );
  }
  const network = (ip & mask(prefix)) >>> 0;
  if (network !== ip) {
    throw new LjError(
      "config",
      "bad-subnet",
      `${source} "${cidr}" has host bits set; did you mean ${formatIp(network)}/${prefix}?`,
    );
  }
  const broadcast = (network | ~mask(prefix)) >>> 0;
  return { network, prefix, gateway: network + 1, first: network + 2, last: broadcast - 1, cidr };
}

function readConfigNet(file: string): { subnet?: string; uplinks?: string[]; gatewayPorts?: unknown[] } {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return {};
  }
  try {
    const doc = Bun.TOML.parse(text) as {
      net?: { subnet?: unknown; uplinks?: unknown; gateway_ports?: unknown };
    };
    const net = doc.net ?? {};
    const subnet = typeof net.subnet === "string" ? net.subnet : undefined;
    const uplinks = Array.isArray(net.uplinks) ? net.uplinks.map(String) : undefined;
    const gatewayPorts = Array.isArray(net.gateway_ports) ? net.gateway_ports : undefined;
    return { subnet, uplinks, gatewayPorts };
  } catch (e) {
    throw new LjError("config", "bad-config", `cannot parse ${file}: ${(e as Error).message}`);
  }
}

/** "53/udp", "8125" (tcp) or 8125: one port jails may reach on their gateway. */
export function parseGatewayPort(v: unknown, source = "gateway port"): GatewayPort {
  const m = /^(\d{1,5})(?:\/(tcp|udp))?$/.exec(String(v).trim());
  const port = m ? Number(m[1]) : 0;
  if (!m || port < 1 || port > 65535) {
    throw new LjError("config", "bad-gateway-port", `${source}: "${v}" is not PORT or PORT/tcp|udp`, {
      hint: 'e.g. "53/udp", "53/tcp" or 8125',
    });
  }
  return { proto: (m[2] as "tcp" | "udp" | undefined) ?? "tcp", port };
}

const rootIds = new Map<string, { root: string; hash: string }>();

/**
 * A root's identity on this machine: its real path and a hash of it. Two roots never share a
 * table or veth names because both derive from this hash (a 4-digit veth tag could collide:
 * the registry refuses a second live root with the same tag).
 */
export function rootId(root = paths.root()): { root: string; hash: string } {
  const known = rootIds.get(root);
  if (known) return known;
  let real: string;
  try {
    real = realpathSync(root);
  } catch {
    real = resolve(root);
  }
  const id = { root: real, hash: createHash("sha256").update(real).digest("hex") };
  rootIds.set(root, id);
  return id;
}

/**
 * The subnet, uplinks and gateway ports (LJ_SUBNET / LJ_UPLINKS / LJ_GATEWAY_PORTS win over
 * [net] subnet / uplinks / gateway_ports in $LIGHTJAIL_ROOT/config.toml), and this root's names.
 */
export function netConfig(env: Record<string, string | undefined> = process.env): NetConfig {
  const configFile = join(ljRoot(env), "config.toml");
  const file = readConfigNet(configFile);
  const subnetText = env.LJ_SUBNET || file.subnet || DEFAULT_SUBNET;
  const source = env.LJ_SUBNET ? "LJ_SUBNET" : file.subnet ? `[net] subnet in ${configFile}` : "subnet";
  const uplinks =
    env.LJ_UPLINKS !== undefined ? env.LJ_UPLINKS.split(",").filter(Boolean) : (file.uplinks ?? []);
  const gatewayPorts =
    env.LJ_GATEWAY_PORTS !== undefined
      ? env.LJ_GATEWAY_PORTS.split(",")
          .filter((p) => p.trim())
          .map((p) => parseGatewayPort(p, "LJ_GATEWAY_PORTS"))
      : (file.gatewayPorts ?? []).map((p) => parseGatewayPort(p, `[net] gateway_ports in ${configFile}`));
  const { root, hash } = rootId(ljRoot(env));
  return {
    subnet: parseSubnet(subnetText, source),
    uplinks,
    gatewayPorts,
    root,
    table: `inet lightjail_${hash.slice(0, 12)}`,
    vethPrefix: `${VETH_FAMILY}${hash.slice(0, 4)}`,
    dir: join(ljRoot(env), "run", "net"),
  };
}

/** True when two subnets share any address (for CIDR blocks: one contains the other). */
export function subnetsOverlap(a: Subnet, b: Subnet): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return (a.network & mask(p)) >>> 0 === (b.network & mask(p)) >>> 0;
}

/** Parses ADDR[/PREFIX] for a jail: inside the subnet, neither its gateway nor its ends. */
export function parseJailAddress(text: string, subnet: Subnet): number {
  const [addr, p] = text.split("/");
  const ip = parseIp(addr ?? "");
  if (ip === null) throw invalidAddr(`"${text}" is not an IPv4 address`, "give -i ADDR[/PREFIX] or -i auto");
  if (p !== undefined && Number(p) !== subnet.prefix) {
    throw invalidAddr(
      `prefix /${p} of ${text} does not match the jail subnet ${subnet.cidr}`,
      "leave the prefix out",
    );
  }
  if ((ip & mask(subnet.prefix)) >>> 0 !== subnet.network) {
    throw invalidAddr(
      `${addr} is outside the jail subnet ${subnet.cidr}`,
      "set LJ_SUBNET or [net] subnet in config.toml",
    );
  }
  if (ip < subnet.first || ip > subnet.last) {
    throw invalidAddr(`${addr} is reserved in ${subnet.cidr} (network, gateway or broadcast)`);
  }
  return ip;
}

/**
 * Host-side veth name (15 characters, the kernel's limit): the root's prefix and the address
 * in hex, so it names the root and the address (and through its lease, the owner).
 */
export function vethName(ip: number, prefix = netConfig().vethPrefix): string {
  return `${prefix}${ip.toString(16).padStart(8, "0")}`;
}

/** The address a veth of this root stands for; null for any other interface. */
export function vethAddress(name: string, prefix: string): string | null {
  if (!name.startsWith(prefix)) return null;
  const m = /^([0-9a-f]{8})$/.exec(name.slice(prefix.length));
  return m ? formatIp(Number.parseInt(m[1]!, 16)) : null;
}

const defaultDir = () => join(paths.run(), "net");

/** Directories under run/net of a root (the current one unless `dir` is given). */
export const netDirs = {
  base: (dir = defaultDir()) => dir,
  leases: (dir = defaultDir()) => join(dir, "leases"),
  links: (dir = defaultDir()) => join(dir, "links"),
  ports: (dir = defaultDir()) => join(dir, "ports"),
};

const dirsMade = new Set<string>();
function ensureDirs(dir: string): void {
  if (dirsMade.has(dir)) return;
  for (const d of [netDirs.leases(dir), netDirs.links(dir), netDirs.ports(dir)])
    mkdirSync(d, { recursive: true, mode: 0o700 });
  dirsMade.add(dir);
}

export const leasePath = (address: string, dir = defaultDir()) => join(netDirs.leases(dir), address);

export function readLease(file: string): Lease | null {
  try {
    const l = JSON.parse(readFileSync(file, "utf8")) as Lease;
    return typeof l.address === "string" && typeof l.owner === "string" ? l : null;
  } catch {
    return null;
  }
}

/** True while the process named "<pid>.<start time>" lives. */

let tmpSeq = 0;
function createExclusive(file: string, body: string, dir: string): boolean {
  const tmp = join(dir, `.tmp.${process.pid}.${++tmpSeq}`);
  writeFileSync(tmp, body, { mode: 0o600 });
  try {
    linkSync(tmp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  } finally {
    unlinkSync(tmp);
  }
}

/**
 * Takes a stale lease out of the way so that exactly one caller cleans up after it: the rename
 * succeeds for one process only. Returns the lease for the caller to clean up, or null.
 */
export function claimStale(address: string, dir = defaultDir()): Lease | null {
  const file = leasePath(address, dir);
  const seen = readLease(file);
  if (!seen || ownerIdLive(seen.owner)) return null;
  const tomb = join(dir, `.stale.${address}.${process.pid}.${++tmpSeq}`);
  try {
    renameSync(file, tomb);
  } catch {
    return null; // someone else got there first
  }
  const got = readLease(tomb);
  if (got && ownerIdLive(got.owner)) {
    // A live owner took the address between our read and the rename: give it back.
    try {
      linkSync(tomb, file);
    } catch {}
    unlinkSync(tomb);
    return null;
  }
  unlinkSync(tomb);
  return got ?? seen;
}

export interface LeaseRequest {
  /** "auto" or ADDR[/PREFIX]. */
  address: string;
  jail: string;
  egress: boolean;
  uplink?: string;
  links: string[];
}

/**
 * Reserves an address in cfg's root. `reclaim` removes a stale lease's kernel state (it runs
 * synchronously enough for allocation: the caller passes a function that schedules the cleanup
 * and returns whether the address may be reused now).
 */
export function acquireLease(req: LeaseRequest, cfg: NetConfig, reclaim: (stale: Lease) => void): Lease {
  const { dir } = cfg;
  ensureDirs(dir);
  const make = (ip: number): Lease => ({
    address: formatIp(ip),
    owner: ownerId(),
    jail: req.jail,
    veth: vethName(ip, cfg.vethPrefix),
    egress: req.egress,
    ...(req.uplink ? { uplink: req.uplink } : {}),
    links: req.links,
  });
  const take = (lease: Lease): Lease | null => {
    if (!createExclusive(leasePath(lease.address, dir), JSON.stringify(lease), dir)) return null;
    // A veth of ours without a live lease is a leftover that lj gc has not removed yet.
    if (existsSync(`/sys/class/net/${lease.veth}`)) {
      unlinkSync(leasePath(lease.address, dir));
      return null;
    }
    return lease;
  };
  const tryTake = (ip: number): Lease | null => {
    const lease = make(ip);
    const got = take(lease);
    if (got) return got;
    const stale = claimStale(lease.address, dir);
    if (!stale) return null;
    reclaim(stale);
    // The stale jail's veth, if the kernel still has it, is removed by our own setup.
    return createExclusive(leasePath(lease.address, dir), JSON.stringify(lease), dir) ? lease : null;
  };
  const { subnet } = cfg;
  if (req.address !== "auto") {
    const ip = parseJailAddress(req.address, subnet);
    const got = tryTake(ip);
    if (got) return got;
    const holder = readLease(leasePath(formatIp(ip), dir));
    throw new LjError(
      "conflict",
      "address-in-use",
      `address ${formatIp(ip)} is in use by jail ${holder?.jail ?? "?"}`,
      {
        hint: "pick another address, or -i auto",
      },
    );
  }
  // Lowest free address first: the listing only skips known leases; link(2) decides.
  const taken = new Set(readdirSync(netDirs.leases(dir)));
  for (let ip = subnet.first; ip <= subnet.last; ip++) {
    if (taken.has(formatIp(ip))) continue;
    const got = tryTake(ip);
    if (got) return got;
  }
  // Full: leases of dead owners are the only hope.
  for (const name of taken) {
    const ip = parseIp(name);
    if (ip === null || ip < subnet.first || ip > subnet.last) continue;
    const stale = claimStale(name, dir);
    if (!stale) continue;
    reclaim(stale);
    const got = tryTake(ip);
    if (got) return got;
  }
  throw new LjError("unavailable", "subnet-full", `no free address left in ${subnet.cidr}`, {
    hint: "end some jails, run lj gc, or configure a larger subnet (LJ_SUBNET)",
  });
}

export function dropLease(address: string, owner = ownerId(), dir = defaultDir()): void {
  const file = leasePath(address, dir);
  const l = readLease(file);
  if (l && l.owner !== owner) return; // not ours any more
  try {
    unlinkSync(file);
  } catch {}
}

export function listLeases(dir = defaultDir()): Lease[] {
  let names: string[] = [];
  try {
    names = readdirSync(netDirs.leases(dir));
  } catch {
    return [];
  }
  return names.map((n) => readLease(join(netDirs.leases(dir), n))).filter((l): l is Lease => l !== null);
}

/** Link records: "<from>_<to>" files, so gc and the other end can find and drop them. */
export function linkFile(from: string, to: string, dir = defaultDir()): string {
  return join(netDirs.links(dir), `${from}_${to}`);
}

export function listLinks(dir = defaultDir()): { from: string; to: string; owner: string }[] {
  let names: string[] = [];
  try {
    names = readdirSync(netDirs.links(dir));
  } catch {
    return [];
  }
  const out: { from: string; to: string; owner: string }[] = [];
  for (const n of names) {
    const [from, to] = n.split("_");
    if (!from || !to || parseIp(from) === null || parseIp(to) === null) continue;
    let owner = "";
    try {
      owner = readFileSync(join(netDirs.links(dir), n), "utf8").trim();
    } catch {
      continue;
    }
    out.push({ from, to, owner });
  }
  return out;
}

export function recordLink(from: string, to: string, dir = defaultDir()): void {
  ensureDirs(dir);
  writeFileSync(linkFile(from, to, dir), ownerId());
}

export function forgetLink(from: string, to: string, dir = defaultDir()): void {
  try {
    unlinkSync(linkFile(from, to, dir));
  } catch {}
}

/**
 * Gateway ports opened at run time (allowGatewayPort): a file "<proto>_<port>_<owner>" each,
 * so the port closes again when its last live opener is gone (lj gc, or the next table setup).
 */
function portFile(p: GatewayPort, owner: string, dir: string): string {
  return join(netDirs.ports(dir), `${p.proto}_${p.port}_${owner}`);
}

export function recordPort(p: GatewayPort, dir: string): void {
  ensureDirs(dir);
  writeFileSync(portFile(p, ownerId(), dir), "");
}

export function forgetPort(p: GatewayPort, dir: string): void {
  try {
    unlinkSync(portFile(p, ownerId(), dir));
  } catch {}
}

/** Ports recorded by live openers; records of dead ones are removed on the way. */
export function livePorts(dir: string): GatewayPort[] {
  let names: string[] = [];
  try {
    names = readdirSync(netDirs.ports(dir));
  } catch {
    return [];
  }
  const out: GatewayPort[] = [];
  for (const n of names) {
    const m = /^(tcp|udp)_(\d+)_(\d+\.\d+)$/.exec(n);
    if (!m) continue;
    if (!ownerIdLive(m[3]!)) {
      try {
        unlinkSync(join(netDirs.ports(dir), n));
      } catch {}
      continue;
    }
    out.push({ proto: m[1] as "tcp" | "udp", port: Number(m[2]) });
  }
  return out;
}
