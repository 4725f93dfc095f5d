/**
 * Jail addresses: the subnet they come from and the leases that keep two live jails from
 * sharing one. A lease is a file per address under $LIGHTJAIL_ROOT/run/net/leases/, created
 * with link(2) from a finished temporary file, so it appears atomically with its content and
 * at most one process can hold it, whichever process (or Bun instance) asks. It names the
 * owner by pid and start time: a lease whose owner is gone is stale and can be reclaimed
 * (by `lj gc`, or by an allocation that needs the address) after its kernel state is removed.
 */
import {
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { paths } from "../store/paths.ts";
import { ownerId, ownerLive } from "./cgroup.ts";

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

export interface NetConfig {
  subnet: Subnet;
  /** Host interfaces a jail's egress may be pinned to with -f IFACE. */
  uplinks: string[];
}

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

function readConfigNet(): { subnet?: string; uplinks?: string[] } {
  let text: string;
  try {
    text = readFileSync(paths.config(), "utf8");
  } catch {
    return {};
  }
  try {
    const doc = Bun.TOML.parse(text) as { net?: { subnet?: unknown; uplinks?: unknown } };
    const net = doc.net ?? {};
    const subnet = typeof net.subnet === "string" ? net.subnet : undefined;
    const uplinks = Array.isArray(net.uplinks) ? net.uplinks.map(String) : undefined;
    return { subnet, uplinks };
  } catch (e) {
    throw new LjError("config", "bad-config", `cannot parse ${paths.config()}: ${(e as Error).message}`);
  }
}

/** The subnet and uplinks: LJ_SUBNET / LJ_UPLINKS win over [net] in $LIGHTJAIL_ROOT/config.toml. */
export function netConfig(env: Record<string, string | undefined> = process.env): NetConfig {
  const file = readConfigNet();
  const subnetText = env.LJ_SUBNET || file.subnet || DEFAULT_SUBNET;
  const source = env.LJ_SUBNET ? "LJ_SUBNET" : file.subnet ? `[net] subnet in ${paths.config()}` : "subnet";
  const uplinks =
    env.LJ_UPLINKS !== undefined ? env.LJ_UPLINKS.split(",").filter(Boolean) : (file.uplinks ?? []);
  return { subnet: parseSubnet(subnetText, source), uplinks };
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

/** Host-side veth name: identifies the address (and through its lease, the owner). */
export function vethName(ip: number): string {
  return `ljv${ip.toString(16).padStart(8, "0")}`;
}

export function vethAddress(name: string): string | null {
  const m = /^ljv([0-9a-f]{8})$/.exec(name);
  return m ? formatIp(Number.parseInt(m[1]!, 16)) : null;
}

export const netDirs = {
  base: () => join(paths.run(), "net"),
  leases: () => join(paths.run(), "net", "leases"),
  links: () => join(paths.run(), "net", "links"),
};

let dirsFor: string | undefined;
function ensureDirs(): void {
  if (dirsFor === paths.root()) return;
  mkdirSync(netDirs.leases(), { recursive: true, mode: 0o700 });
  mkdirSync(netDirs.links(), { recursive: true, mode: 0o700 });
  dirsFor = paths.root();
}

export const leasePath = (address: string) => join(netDirs.leases(), address);

export function readLease(file: string): Lease | null {
  try {
    const l = JSON.parse(readFileSync(file, "utf8")) as Lease;
    return typeof l.address === "string" && typeof l.owner === "string" ? l : null;
  } catch {
    return null;
  }
}

/** True while the process named "<pid>.<start time>" lives. */
export function ownerAlive(owner: string): boolean {
  const [pid, start] = owner.split(".");
  return ownerLive(Number(pid), start);
}

let tmpSeq = 0;
function createExclusive(file: string, body: string): boolean {
  const tmp = join(netDirs.base(), `.tmp.${process.pid}.${++tmpSeq}`);
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

export function writeLease(lease: Lease): void {
  const tmp = join(netDirs.base(), `.tmp.${process.pid}.${++tmpSeq}`);
  writeFileSync(tmp, JSON.stringify(lease), { mode: 0o600 });
  renameSync(tmp, leasePath(lease.address));
}

/**
 * Takes a stale lease out of the way so that exactly one caller cleans up after it: the rename
 * succeeds for one process only. Returns the lease for the caller to clean up, or null.
 */
export function claimStale(address: string): Lease | null {
  const file = leasePath(address);
  const seen = readLease(file);
  if (!seen || ownerAlive(seen.owner)) return null;
  const tomb = join(netDirs.base(), `.stale.${address}.${process.pid}.${++tmpSeq}`);
  try {
    renameSync(file, tomb);
  } catch {
    return null; // someone else got there first
  }
  const got = readLease(tomb);
  if (got && ownerAlive(got.owner)) {
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
 * Reserves an address. `reclaim` removes a stale lease's kernel state (it runs synchronously
 * enough for allocation: the caller passes a function that schedules the cleanup and
 * returns whether the address may be reused now).
 */
export function acquireLease(req: LeaseRequest, cfg: NetConfig, reclaim: (stale: Lease) => void): Lease {
  ensureDirs();
  const make = (ip: number): Lease => ({
    address: formatIp(ip),
    owner: ownerId(),
    jail: req.jail,
    veth: vethName(ip),
    egress: req.egress,
    ...(req.uplink ? { uplink: req.uplink } : {}),
    links: req.links,
  });
  const take = (lease: Lease): Lease | null => {
    if (!createExclusive(leasePath(lease.address), JSON.stringify(lease))) return null;
    // A veth without a lease here belongs to another LIGHTJAIL_ROOT on the same subnet.
    if (existsSync(`/sys/class/net/${lease.veth}`)) {
      unlinkSync(leasePath(lease.address));
      return null;
    }
    return lease;
  };
  const tryTake = (ip: number): Lease | null => {
    const lease = make(ip);
    const got = take(lease);
    if (got) return got;
    const stale = claimStale(lease.address);
    if (!stale) return null;
    reclaim(stale);
    // The stale jail's veth, if the kernel still has it, is removed by our own setup.
    return createExclusive(leasePath(lease.address), JSON.stringify(lease)) ? lease : null;
  };
  const { subnet } = cfg;
  if (req.address !== "auto") {
    const ip = parseJailAddress(req.address, subnet);
    const got = tryTake(ip);
    if (got) return got;
    const holder = readLease(leasePath(formatIp(ip)));
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
  const taken = new Set(readdirSync(netDirs.leases()));
  for (let ip = subnet.first; ip <= subnet.last; ip++) {
    if (taken.has(formatIp(ip))) continue;
    const got = tryTake(ip);
    if (got) return got;
  }
  // Full: leases of dead owners are the only hope.
  for (const name of taken) {
    const ip = parseIp(name);
    if (ip === null || ip < subnet.first || ip > subnet.last) continue;
    const stale = claimStale(name);
    if (!stale) continue;
    reclaim(stale);
    const got = tryTake(ip);
    if (got) return got;
  }
  throw new LjError("unavailable", "subnet-full", `no free address left in ${subnet.cidr}`, {
    hint: "end some jails, run lj gc, or configure a larger subnet (LJ_SUBNET)",
  });
}

export function dropLease(address: string, owner = ownerId()): void {
  const file = leasePath(address);
  const l = readLease(file);
  if (l && l.owner !== owner) return; // not ours any more
  try {
    unlinkSync(file);
  } catch {}
}

export function listLeases(): Lease[] {
  let names: string[] = [];
  try {
    names = readdirSync(netDirs.leases());
  } catch {
    return [];
  }
  return names.map((n) => readLease(join(netDirs.leases(), n))).filter((l): l is Lease => l !== null);
}

/** Link records: "<from>_<to>" files, so gc and the other end can find and drop them. */
export function linkFile(from: string, to: string): string {
  return join(netDirs.links(), `${from}_${to}`);
}

export function listLinks(): { from: string; to: string; owner: string }[] {
  let names: string[] = [];
  try {
    names = readdirSync(netDirs.links());
  } catch {
    return [];
  }
  const out: { from: string; to: string; owner: string }[] = [];
  for (const n of names) {
    const [from, to] = n.split("_");
    if (!from || !to || parseIp(from) === null || parseIp(to) === null) continue;
    let owner = "";
    try {
      owner = readFileSync(join(netDirs.links(), n), "utf8").trim();
    } catch {
      continue;
    }
    out.push({ from, to, owner });
  }
  return out;
}

export function recordLink(from: string, to: string): void {
  ensureDirs();
  writeFileSync(linkFile(from, to), ownerId());
}

export function forgetLink(from: string, to: string): void {
  try {
    unlinkSync(linkFile(from, to));
  } catch {}
}
