/**
 * Jail addresses: the TypeScript side of a root's private network configuration and records.
 * The rules themselves (subnets, a root's names, the machine-wide registry, the address leases
 * and their stale reclaim, and the words of every refusal) are the shim's, zig/src/netlease.zig,
 * shared with the native ljspawn; the functions here call it through ffi.ts. What stays here is
 * what only this side does: reading the configuration (LJ_* and config.toml), and the records of
 * links, opened gateway ports and published ports.
 */

import { mkdirSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { ljRoot, paths } from "../store/paths.ts";
import { LeaseOp, shimLease } from "./ffi.ts";
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

/** A jail subnet (/8 to /29, no host bits); `source` names where the text came from. */
export function parseSubnet(cidr: string, source = "subnet"): Subnet {
  return shimLease(LeaseOp.subnet, [cidr, source]) as Subnet;
}

type ConfigNet = { subnet?: string; uplinks?: string[]; gatewayPorts?: unknown[] };

/** The last reading of each config.toml, kept while the file is unchanged (every private spawn asks). */
const configRead = new Map<string, { stamp: string; net: ConfigNet }>();

function readConfigNet(file: string): ConfigNet {
  const st = statSync(file, { throwIfNoEntry: false });
  const stamp = st ? `${st.ino}:${st.size}:${st.mtimeMs}` : "";
  const known = configRead.get(file);
  if (known?.stamp === stamp) return known.net;
  const net = st ? parseConfigNet(file) : {};
  configRead.set(file, { stamp, net });
  return net;
}

function parseConfigNet(file: string): ConfigNet {
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

interface RootNames {
  root: string;
  table: string;
  vethPrefix: string;
  dir: string;
  subnet: Subnet;
}
const namesOf = new Map<string, RootNames>();

/**
 * The subnet, uplinks and gateway ports (LJ_SUBNET / LJ_UPLINKS / LJ_GATEWAY_PORTS win over
 * [net] subnet / uplinks / gateway_ports in $LIGHTJAIL_ROOT/config.toml), and this root's names
 * (the shim's: its real path's hash gives its table and veth prefix).
 */
export function netConfig(env: Record<string, string | undefined> = process.env): NetConfig {
  const root = ljRoot(env);
  const configFile = join(root, "config.toml");
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
  const key = `${root}\n${subnetText}`;
  let names = namesOf.get(key);
  if (!names) {
    const c = shimLease(LeaseOp.config, [root, subnetText, source]) as RootNames;
    names = { ...c, table: `inet ${c.table}` };
    namesOf.set(key, names);
  }
  return { ...names, uplinks, gatewayPorts };
}

/** The host veths of this process's leased addresses (an address's own name, or a pooled one). */
const ownVeths = new Map<string, string>();

/**
 * The host-side veth of an address: for an address this process leased, its lease's (a
 * pooled veth keeps the name the pool gave it); otherwise, or with an explicit `prefix`, the
 * address's own name (15 characters, the kernel's limit): the root's prefix and the address
 * in hex, so it names the root and the address (and through its lease, the owner).
 */
export function vethName(ip: number, prefix?: string): string {
  if (prefix === undefined) {
    const own = ownVeths.get(formatIp(ip));
    if (own) return own;
  }
  return `${prefix ?? netConfig().vethPrefix}${ip.toString(16).padStart(8, "0")}`;
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

/** A dead owner's lease claimed (exactly one caller wins) and its kernel state taken off the
 * host (elements, links, veth); null when it is live, gone, or someone else's to clean. */
export function claimStale(address: string, cfg: NetConfig): Lease | null {
  return shimLease(LeaseOp.reclaim, [cfg.root, cfg.subnet.cidr, address]) as Lease | null;
}

export interface LeaseRequest {
  /** "auto" or ADDR[/PREFIX]. */
  address: string;
  jail: string;
  egress: boolean;
  uplink?: string;
  links: string[];
  /** A pooled veth's name to lease the address with (claimPooledVeth), instead of the address's. */
  veth?: string;
}

/** A pooled veth set aside for a jail (claimPooledVeth), and the address it was wired with. */
export interface PooledVeth {
  veth: string;
  /** The address the pool leased and wired it with ahead (its lease the pool's until adopted). */
  address?: string;
}

/**
 * A veth of the namespace pool, made ahead with this root's prefix, set aside for the jail
 * about to be leased: leased with its name, the jail keeps it (no rename on its path). With
 * `wired` (the root's filter table exists in this process), the pool's makers lease and wire
 * addresses ahead too (zig/src/ns_pool.zig's Plan), and a set so made comes first when its
 * address suits `address` ("auto": any). Null when the pool has none ready.
 */
export function claimPooledVeth(cfg: NetConfig, wired = false, address = "auto"): PooledVeth | null {
  const args = wired
    ? [cfg.vethPrefix, cfg.root, cfg.subnet.cidr, ownerId(), address, poolFailAt()]
    : [cfg.vethPrefix];
  const got = shimLease(LeaseOp.poolClaim, args) as { veth: string; address: string } | null;
  if (!got) return null;
  return got.address ? { veth: got.veth, address: got.address } : { veth: got.veth };
}

/** Test hook: the pool's makers fail at this step of wiring an address ahead (netwire.zig). */
const poolFailAt = () => String(Math.max(0, Math.min(4, Number(process.env.LJ_TEST_POOL_FAIL_AT ?? 0) || 0)));

/** Gives back a claimed pooled veth whose jail was never spawned. */
export function unclaimPooledVeth(name: string): void {
  shimLease(LeaseOp.poolUnclaim, [name]);
}

/** Every pooled set wired with an address given back: their addresses off, their leases dropped. */
export function drainPooledAddresses(): void {
  shimLease(LeaseOp.poolDrain, []);
}

const leaseArgs = (req: LeaseRequest, cfg: NetConfig) => [
  cfg.root,
  cfg.subnet.cidr,
  ownerId(),
  req.jail,
  req.address,
  req.egress ? "1" : "0",
  req.uplink ?? "",
  req.links.join(","),
  req.veth ?? "",
];

/**
 * Makes the lease the pool made ahead for a claimed veth's address (PooledVeth.address) the
 * jail's: rewritten in place with its record.
 */
export function adoptLease(req: LeaseRequest, cfg: NetConfig): Lease {
  const got = shimLease(LeaseOp.adopt, leaseArgs(req, cfg)) as { lease: Lease };
  ownVeths.set(got.lease.address, got.lease.veth);
  return got.lease;
}

/**
 * Reserves an address in cfg's root for this process. Returns the lease and the addresses
 * whose stale leases were reclaimed on the way (their kernel state is off already; their
 * published ports, if any, are the caller's to remove before the jail is wired).
 */
export function acquireLease(req: LeaseRequest, cfg: NetConfig): { lease: Lease; reclaimed: string[] } {
  ensureDirs(cfg.dir);
  const got = shimLease(LeaseOp.acquire, leaseArgs(req, cfg)) as { lease: Lease; reclaimed: string[] };
  ownVeths.set(got.lease.address, got.lease.veth);
  return got;
}

/** Gives an address back, if `owner` still holds it. */
export function dropLease(address: string, owner = ownerId(), dir = defaultDir()): void {
  if (owner === ownerId()) ownVeths.delete(address);
  shimLease(LeaseOp.drop, [dir, address, owner]);
}

/** A lease's state off the host: its elements and links (and their records), its veth released. */
export function takeOff(lease: Lease, cfg: NetConfig): void {
  shimLease(LeaseOp.takeOff, [cfg.root, cfg.subnet.cidr, JSON.stringify(lease)]);
}

export function listLeases(dir = defaultDir()): Lease[] {
  return shimLease(LeaseOp.list, [dir]) as Lease[];
}

/** The lease of an address, or null. */
export function readLease(address: string, dir = defaultDir()): Lease | null {
  return listLeases(dir).find((l) => l.address === address) ?? null;
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
