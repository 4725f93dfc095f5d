/**
 * Jail networking on Linux (net: "private"). Each jail gets a veth pair: the host end
 * (ljn<root tag><address in hex>) carries the subnet's gateway address with the jail's address
 * as its point-to-point peer, the jail end (eth0) carries the jail's address with the gateway as
 * peer and default route. Every packet between jails therefore crosses the host, where the
 * root's own nftables table (`inet lightjail_<hash of the root>`) decides: a jail may talk to
 * the allowed ports of its gateway, to the jails it was linked to, and (with egress) to
 * addresses outside the machine through NAT; nothing else. Per-jail state is only set
 * elements, so adding or removing a jail is one atomic transaction and the rules themselves
 * never change after the first jail of a process.
 *
 * The per-jail work is netlink from the shim (zig/src/netwire.zig), which defines what a jail
 * gets for the native ljspawn as well: the jail's child wires its veth, addresses and routes
 * while it builds its root; the owner adds the set elements in one nftables transaction before
 * the spawn (one call, no process), and at the end removes them and takes the host veth out of
 * the way (releaseVeth in netwire.zig) while the kernel deletes it with the jail's namespace.
 * Only the table's rules go through `nft -f`, once per process and configuration.
 */
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { ShimError, shimNet } from "./ffi.ts";
import {
  acquireLease,
  adoptLease,
  claimPooledVeth,
  claimStale,
  drainPooledAddresses,
  dropLease,
  forgetLink,
  forgetPort,
  formatIp,
  type GatewayPort,
  type Lease,
  linkFile,
  listLeases,
  listLinks,
  livePorts,
  type NetConfig,
  netConfig,
  parseGatewayPort,
  parseIp,
  readLease,
  recordLink,
  recordPort,
  takeOff,
  unclaimPooledVeth,
  VETH_FAMILY,
  vethAddress,
  vethName,
} from "./net-alloc.ts";
import { forgetTable, holdSubnet, ifRootIdle, orphanTables, recordTable } from "./net-registry.ts";
import { ownerIdLive } from "./owner.ts";
import type { JailSpec } from "./spec.ts";

export { DEFAULT_SUBNET, netConfig } from "./net-alloc.ts";
export { holdSubnet } from "./net-registry.ts";

/** This root's veths (nft glob). */
const vethGlob = (cfg: NetConfig) => `"${cfg.vethPrefix}*"`;
/** Every root's veths on the machine. */
const ANY_JAIL = `"${VETH_FAMILY}*"`;
/**
 * Never reachable through egress: "this" network, loopback, link-local (cloud metadata
 * endpoints live at 169.254.169.254), multicast and the reserved block with the broadcast
 * address. Jail subnets and the host's own addresses are handled by their own rules.
 */
export const NEVER_EGRESS = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4"];
const REJECT = "reject with icmpx type admin-prohibited";

/** What spawnJail keeps for a jail with a private address. */
export interface JailNet {
  address: string;
  gateway: string;
  lease: Lease;
  /** The root's configuration at reservation: teardown uses it whatever the environment says later. */
  cfg: NetConfig;
  /** Ends this jail's hold on the root's registration (net-registry.ts). */
  unhold: () => void;
  /** What the jail's child wires (the spec's `net` record), or its owner for a user-namespaced
   * jail (whose child has no rights over the host's network). */
  wire: Uint8Array;
  ownerWires: boolean;
  /** The filter's elements are in (before the spawn): the jail needs nothing of its owner. */
  ready: boolean;
  /** Its elements and veth have been taken off the host (unwireNet). */
  unwired?: boolean;
}

const netError = (message: string, hint?: string) => new LjError("isolation", "net-setup", message, { hint });

function defaultRouteIfaces(): string[] {
  try {
    return readFileSync("/proc/net/route", "utf8")
      .split("\n")
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[1] === "00000000" && f[7] === "00000000" && f[0])
      .map((f) => f[0]!);
  } catch {
    return [];
  }
}

/** Checks the network fields of a spec against the configuration (synchronously). */
export function checkNetSpec(spec: JailSpec, cfg: NetConfig = netConfig()): void {
  if (spec.net !== "private") return;
  if (spec.iface !== undefined) {
    if (!spec.egress) {
      throw new LjError("usage", "iface-without-egress", `-f ${spec.iface} selects the uplink for --egress`, {
        hint: "add --egress, or leave -f out",
      });
    }
    if (!cfg.uplinks.includes(spec.iface)) {
      throw new LjError("usage", "unknown-uplink", `interface ${spec.iface} is not a configured uplink`, {
        hint: cfg.uplinks.length
          ? `configured uplinks: ${cfg.uplinks.join(", ")}`
          : "no uplink is configured on Linux: set [net] uplinks in config.toml or LJ_UPLINKS",
      });
    }
    if (!existsSync(`/sys/class/net/${spec.iface}`)) {
      throw new LjError("unavailable", "no-uplink", `uplink interface ${spec.iface} does not exist`);
    }
  }
  for (const l of spec.links ?? []) {
    if (parseIp(l) === null)
      throw new LjError("usage", "invalid-spec", `link target "${l}" is not an IPv4 address`);
  }
}

/** Records of a request to the shim (zig/src/netwire.zig, `Tag`). */
const REQ = {
  table: 1,
  jailAdd: 2,
  jailDel: 3,
  linkAdd: 4,
  linkDel: 5,
  guardAdd: 6,
  wire: 8,
  unreachableRoute: 9,
} as const;
const IFNAMSIZ = 16;

function ipv4Bytes(address: string): Uint8Array {
  const ip = parseIp(address);
  if (ip === null) throw netError(`"${address}" is not an IPv4 address`);
  return Uint8Array.of(ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255);
}

const utf8 = new TextEncoder();

function ifnameBytes(name: string): Uint8Array {
  const b = new Uint8Array(IFNAMSIZ);
  const text = utf8.encode(name);
  if (text.length >= IFNAMSIZ) throw netError(`interface name "${name}" is longer than 15 bytes`);
  b.set(text);
  return b;
}

/**
 * A request for the shim: a jail's set elements, links and guards, added or removed in one
 * nftables transaction (and the wiring of a jail its owner wires). What each record becomes in the table (which
 * sets, which keys) is defined once, in zig/src/netwire.zig.
 */
export class NetRequest {
  private parts: { tag: number; body: Uint8Array }[] = [];

  get empty(): boolean {
    return this.parts.length === 0;
  }

  jail(add: boolean, lease: Lease): this {
    const b = new Uint8Array(8 + 2 * IFNAMSIZ);
    b.set(ipv4Bytes(lease.address), 0);
    b[4] = lease.egress ? 1 : 0;
    b.set(ifnameBytes(lease.veth), 8);
    if (lease.egress && lease.uplink) b.set(ifnameBytes(lease.uplink), 8 + IFNAMSIZ);
    this.parts.push({ tag: add ? REQ.jailAdd : REQ.jailDel, body: b });
    return this;
  }

  link(add: boolean, from: string, to: string): this {
    const b = new Uint8Array(8);
    b.set(ipv4Bytes(from), 0);
    b.set(ipv4Bytes(to), 4);
    this.parts.push({ tag: add ? REQ.linkAdd : REQ.linkDel, body: b });
    return this;
  }

  guard(uplink: string): this {
    this.parts.push({ tag: REQ.guardAdd, body: ifnameBytes(uplink) });
    return this;
  }

  /** A jail its owner wires from outside (user-namespaced): `pid` its keeper, `wire` its record. */
  wire(pid: number, wire: Uint8Array): this {
    const b = new Uint8Array(4 + wire.length);
    new DataView(b.buffer).setInt32(0, pid, true);
    b.set(wire, 4);
    this.parts.push({ tag: REQ.wire, body: b });
    return this;
  }

  /** The subnet's unreachable route (re)put on the host (netwire.zig, Subnet). */
  unreachable(subnet: NetConfig["subnet"]): this {
    const b = new Uint8Array(5);
    b.set(ipv4Bytes(formatIp(subnet.network)), 0);
    b[4] = subnet.prefix;
    this.parts.push({ tag: REQ.unreachableRoute, body: b });
    return this;
  }

  append(other: NetRequest): this {
    this.parts.push(...other.parts);
    return this;
  }

  encode(table: string): Uint8Array {
    const name = utf8.encode(`${table.replace(/^inet /, "")}\0`);
    const all = [{ tag: REQ.table, body: name }, ...this.parts];
    const out = new Uint8Array(8 + all.reduce((n, p) => n + 8 + p.body.length, 0));
    const dv = new DataView(out.buffer);
    out.set(utf8.encode("LJN1"), 0);
    dv.setUint32(4, 1, true);
    let pos = 8;
    for (const p of all) {
      dv.setUint16(pos, p.tag, true);
      dv.setUint32(pos + 4, p.body.length, true);
      out.set(p.body, pos + 8);
      pos += 8 + p.body.length;
    }
    return out;
  }
}

/** Removing an element that may be gone fails a transaction; adding it first never does. */
function removal(cfg: NetConfig, el: string): string[] {
  return [`add element ${cfg.table} ${el}`, `delete element ${cfg.table} ${el}`];
}

/**
 * Rewrites the gateway's open ports in one go: configured ones and those live processes opened
 * (allowGatewayPort); a port whose last opener died closes here.
 */
function gatewayPortLines(cfg: NetConfig): string[] {
  const ports = new Set([...cfg.gatewayPorts, ...livePorts(cfg.dir)].map((p) => `${p.proto} . ${p.port}`));
  return [
    `flush set ${cfg.table} gw_ports`,
    ...(ports.size ? [`add element ${cfg.table} gw_ports { ${[...ports].join(", ")} }`] : []),
  ];
}

export function baseScript(cfg: NetConfig): string {
  const { subnet, table } = cfg;
  const VETH_GLOB = vethGlob(cfg);
  const r = (chain: string, rule: string) => `add rule ${table} ${chain} ${rule}`;
  return [
    `table ${table} {`,
    "  set jails { type ifname . ipv4_addr; }",
    "  set egress { type ipv4_addr; }",
    "  set egress_any { type ipv4_addr; }",
    "  set egress_via { type ipv4_addr . ifname; }",
    "  set links { type ipv4_addr . ipv4_addr; }",
    "  set gateways { type ipv4_addr; }",
    "  set subnets { type ipv4_addr; flags interval; }",
    "  set guard { type ifname; }",
    "  set gw_ports { type inet_proto . inet_service; }",
    "  set never { type ipv4_addr; flags interval; }",
    "  set inbound { type ipv4_addr . inet_proto . inet_service; }",
    "  chain input { type filter hook input priority filter; policy accept; }",
    "  chain forward { type filter hook forward priority filter; policy accept; }",
    "  chain output { type filter hook output priority filter; policy accept; }",
    "  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }",
    "  chain from_jail {}",
    "  chain jail_in {}",
    "  chain jail_fwd {}",
    "  chain to_jail {}",
    "}",
    ...["input", "forward", "output", "postrouting", "from_jail", "jail_in", "jail_fwd", "to_jail"].map(
      (c) => `flush chain ${table} ${c}`,
    ),
    `add element ${table} gateways { ${formatIp(subnet.gateway)} }`,
    `add element ${table} subnets { ${formatIp(subnet.network)}/${subnet.prefix} }`,
    `add element ${table} never { ${NEVER_EGRESS.join(", ")} }`,
    ...gatewayPortLines(cfg),
    // Whatever enters from a jail: IPv4 only, and only from the address its veth was given.
    r("from_jail", "meta nfproto != ipv4 drop"),
    r("from_jail", "iifname . ip saddr != @jails drop"),
    r("from_jail", "ct state established,related accept"),
    r("input", `iifname ${VETH_GLOB} jump from_jail`),
    r("input", `iifname ${VETH_GLOB} jump jail_in`),
    // To the host itself (any of its addresses): only the open ports of the gateway address.
    r("jail_in", "ip daddr @gateways meta l4proto . th dport @gw_ports accept"),
    r("jail_in", REJECT),
    r("forward", `iifname ${VETH_GLOB} jump from_jail`),
    r("forward", `iifname ${VETH_GLOB} jump jail_fwd`),
    r("forward", `oifname ${VETH_GLOB} jump to_jail`),
    // Uplinks lightjail switched forwarding on for forward nothing but traffic to jails (of
    // any root: each root's own table decides what reaches its jails).
    r("forward", `iifname @guard oifname != ${ANY_JAIL} drop`),
    // Between jails: only linked pairs. Egress reaches outside only: never a jail of any root,
    // the host, loopback, link-local, multicast or broadcast.
    r("jail_fwd", "ip saddr . ip daddr @links accept"),
    r("jail_fwd", `oifname ${ANY_JAIL} ${REJECT}`),
    r("jail_fwd", `ip daddr @subnets ${REJECT}`),
    r("jail_fwd", "fib daddr type { broadcast, multicast } drop"),
    r("jail_fwd", `ip daddr @never ${REJECT}`),
    r("jail_fwd", `fib daddr type local ${REJECT}`),
    r("jail_fwd", "ip saddr @egress_any accept"),
    r("jail_fwd", "ip saddr . oifname @egress_via accept"),
    // Refused at once (connect fails with "No route to host"), not left to time out.
    r("jail_fwd", REJECT),
    r("to_jail", "ct state established,related accept"),
    // Published ports (a cluster node's pods): connections from beyond the machine come in.
    r("to_jail", "ip daddr . meta l4proto . th dport @inbound accept"),
    r("to_jail", "drop"),
    // The subnet exists only on this machine: never let a packet for it out another way.
    // These two rules see every root's traffic, so they name any jail veth, not only ours:
    // a dead root's table left behind with an overlapping subnet must not get in the way.
    r("output", `ip daddr @subnets oifname != "lo" oifname != ${ANY_JAIL} reject`),
    r("postrouting", `oifname ${ANY_JAIL} return`),
    r("postrouting", "ip saddr @egress_any masquerade"),
    r("postrouting", "ip saddr . oifname @egress_via masquerade"),
    "",
  ].join("\n");
}

async function run(argv: string[], input?: string): Promise<{ ok: boolean; err: string }> {
  const p = Bun.spawn(argv, {
    stdin: input === undefined ? "ignore" : new Blob([input]),
    stdout: "ignore",
    stderr: "pipe",
  });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  return { ok: code === 0, err: err.trim() };
}

async function runOrThrow(what: string, argv: string[], input?: string): Promise<void> {
  let r: { ok: boolean; err: string };
  try {
    r = await run(argv, input);
  } catch (e) {
    throw netError(
      `${what}: cannot run ${argv[0]}: ${(e as Error).message}`,
      "install iproute2, nftables and util-linux",
    );
  }
  if (!r.ok) throw netError(`${what}: ${r.err || "failed"}`);
}

/** Table set-ups done (or under way) by this process, per root and configuration. */
const bases = new Map<string, Promise<void>>();
/** Those finished: a jail of theirs gets its elements before it is spawned. */
const basesReady = new Set<string>();
const baseKey = (cfg: NetConfig) => JSON.stringify([cfg.table, cfg.subnet.cidr, cfg.gatewayPorts]);

function ensureBase(cfg: NetConfig): Promise<void> {
  const key = baseKey(cfg);
  const known = bases.get(key);
  if (known) return known;
  const p = runOrThrow(`nftables table ${cfg.table}`, ["nft", "-f", "-"], baseScript(cfg)).then(
    () => {
      // Jails put the subnet's unreachable route back as they end; the first needs it already.
      try {
        applyNow(cfg, new NetRequest().unreachable(cfg.subnet));
      } catch (e) {
        throw netError(`${cfg.subnet.cidr}'s unreachable route: ${(e as Error).message}`);
      }
      recordTable(cfg.table, cfg.root);
      basesReady.add(key);
    },
    (e) => {
      bases.delete(key);
      throw e;
    },
  );
  bases.set(key, p);
  return p;
}

function forgetBase(cfg: NetConfig): void {
  bases.delete(baseKey(cfg));
  basesReady.delete(baseKey(cfg));
}

/** Applies a per-jail transaction (text, for the rare changes: gateway ports, gc); a missing table is recreated once. */
async function nftJail(cfg: NetConfig, lines: string[]): Promise<void> {
  if (lines.length === 0) return;
  await ensureBase(cfg);
  const script = `${lines.join("\n")}\n`;
  const r = await run(["nft", "-f", "-"], script);
  if (r.ok) return;
  forgetBase(cfg);
  await ensureBase(cfg);
  await runOrThrow("nftables jail rules", ["nft", "-f", "-"], script);
}

const ENOENT = 2;
const tableGone = (e: unknown) => e instanceof ShimError && e.errno === ENOENT;

/** Applies a request at once; the shim's error as it is (tableGone tells a missing table). */
function applyNow(cfg: NetConfig, req: NetRequest): void {
  if (!req.empty) shimNet(req.encode(cfg.table));
}

/** Applies a request once the table is there; a table deleted by hand is made again once. */
async function apply(cfg: NetConfig, req: NetRequest): Promise<void> {
  if (req.empty) return;
  await ensureBase(cfg);
  try {
    shimNet(req.encode(cfg.table));
    return;
  } catch (e) {
    if (!tableGone(e)) throw netError((e as Error).message);
  }
  forgetBase(cfg);
  await ensureBase(cfg);
  try {
    applyNow(cfg, req);
  } catch (e) {
    throw netError((e as Error).message);
  }
}

let ipv6: boolean | undefined;
/** Test hook: make the child's wiring fail at this step (netwire.zig), to prove nothing stays. */
const failAt = () => Math.max(0, Math.min(255, Number(process.env.LJ_TEST_NET_FAIL_AT ?? 0) || 0));

/** The spec's `net` record (netwire.Wire): what the jail's child wires. */
function wireRecord(cfg: NetConfig, lease: Lease, prewired: boolean): Uint8Array {
  ipv6 ??= existsSync("/proc/sys/net/ipv6");
  const b = new Uint8Array(32);
  b.set(ipv4Bytes(lease.address), 0);
  b.set(ipv4Bytes(formatIp(cfg.subnet.gateway)), 4);
  b.set(ipv4Bytes(formatIp(cfg.subnet.network)), 8);
  b[12] = cfg.subnet.prefix;
  b[13] = ipv6 ? 1 : 0;
  b[14] = failAt();
  b[15] = prewired ? 1 : 0;
  b.set(ifnameBytes(lease.veth), 16);
  return b;
}

/**
 * Reserves the jail's address (synchronously: `jail.address` is known when spawnJail returns)
 * and, once this process has the root's table, puts its filter elements in. Leftovers of a
 * dead owner's jail at the same address are removed in the same transaction.
 */
export function reserveNet(spec: JailSpec, jailId: string, cfg: NetConfig = netConfig()): JailNet {
  checkNetSpec(spec, cfg);
  const unhold = holdSubnet(cfg);
  // A user-namespaced jail is wired from outside, with a veth of its own (no pool). Once this
  // process has the root's table, the pool wires addresses ahead as well, in subnets large
  // enough that the few it holds ahead never crowd out another process's jails.
  // (A test that makes the child's wiring fail wants the child to wire.)
  const key = baseKey(cfg);
  const baseReady = basesReady.has(key);
  const wired = !spec.userns && baseReady && cfg.subnet.prefix <= POOL_WIRES_UP_TO_PREFIX && failAt() === 0;
  if (wired) poolWiresFor(cfg, key);
  const pooled = spec.userns ? null : claimPooledVeth(cfg, wired, spec.address ?? "auto");
  let lease: Lease;
  try {
    const req = {
      address: pooled?.address ?? spec.address ?? "auto",
      jail: jailId,
      egress: !!spec.egress,
      uplink: spec.iface,
      links: spec.links ?? [],
      veth: pooled?.veth,
    };
    if (pooled?.address) {
      lease = adoptLease(req, cfg);
    } else {
      const got = acquireLease(req, cfg);
      lease = got.lease;
      // A dead owner's published ports at a reclaimed address go before anything reaches it.
      try {
        for (const a of got.reclaimed) removeInboundNow(cfg, a);
      } catch (e) {
        dropLease(lease.address, lease.owner, cfg.dir);
        throw e;
      }
    }
  } catch (e) {
    if (pooled) unclaimPooledVeth(pooled.veth);
    unhold();
    throw e;
  }
  for (const to of lease.links) recordLink(lease.address, to, cfg.dir);
  const prewired = !!pooled?.address;
  const counted = poolJailStarts(key);
  const net: JailNet = {
    address: lease.address,
    gateway: formatIp(cfg.subnet.gateway),
    lease,
    cfg,
    unhold: () => {
      unhold();
      if (counted) poolJailEnds(counted);
    },
    wire: wireRecord(cfg, lease, prewired),
    ownerWires: !!spec.userns,
    ready: false,
  };
  // Wired ahead, the jail's element is in already; it goes in again all the same (a no-op
  // then), because the transaction is what finds a table deleted by hand since: without its
  // table a jail would run unfiltered.
  if (baseReady && !net.ownerWires) {
    try {
      install(net, applyNow);
      net.ready = true;
    } catch (e) {
      if (!tableGone(e)) {
        abandon(net);
        throw e instanceof ShimError ? netError(e.message) : e;
      }
      forgetBase(cfg); // the table was deleted by hand: attachNet makes it again
    }
  }
  return net;
}

/**
 * The root whose addresses the namespace pool leases and wires ahead (one at a time), held
 * in the registry while it does, and this process's live private jails there. The pool gives
 * its addresses back once the root has had no private jail for a second, when another root
 * takes its place, when `lj gc` runs here, and at exit.
 */
let poolRoot:
  | { key: string; unhold: () => void; live: number; idle?: ReturnType<typeof setTimeout> }
  | undefined;
const POOL_IDLE_MS = 1000;
/** The pool holds at most six addresses ahead: only in a /24 or larger. */
const POOL_WIRES_UP_TO_PREFIX = 24;
let poolExitHook = false;

function poolWiresFor(cfg: NetConfig, key: string): void {
  if (poolRoot?.key === key) return;
  stopPoolWiring();
  poolRoot = { key, unhold: holdSubnet(cfg), live: 0 };
  armPoolIdle(poolRoot); // until a jail is counted (its reservation may yet fail)
  if (!poolExitHook) {
    poolExitHook = true;
    process.on("exit", stopPoolWiring);
  }
}

/** The pool's addresses given back and the root's hold released (no more wired ahead until the next jail). */
export function stopPoolWiring(): void {
  const r = poolRoot;
  if (!r) return;
  poolRoot = undefined;
  if (r.idle) clearTimeout(r.idle);
  drainPooledAddresses();
  r.unhold();
}

type PoolRoot = NonNullable<typeof poolRoot>;

/** A private jail of the pool's root reserved: counted there until it ends (poolJailEnds). */
function poolJailStarts(key: string): PoolRoot | undefined {
  const r = poolRoot;
  if (!r || r.key !== key) return undefined;
  r.live++;
  if (r.idle) clearTimeout(r.idle);
  r.idle = undefined;
  return r;
}

/** The last of the root's private jails gone: the pool's addresses go back a second later. */
function poolJailEnds(r: PoolRoot): void {
  if (--r.live > 0 || poolRoot !== r) return;
  armPoolIdle(r);
}

function armPoolIdle(r: PoolRoot): void {
  if (r.idle) clearTimeout(r.idle);
  r.idle = setTimeout(() => {
    if (poolRoot === r && r.live <= 0) stopPoolWiring();
  }, POOL_IDLE_MS);
  r.idle.unref();
}

/**
 * A pooled veth claimed for a jail that was never spawned goes back to the pool (no-op once
 * the jail took it).
 */
function giveBackPooled(net: JailNet): void {
  if (net.lease.veth !== vethName(parseIp(net.address)!, net.cfg.vethPrefix))
    unclaimPooledVeth(net.lease.veth);
}

/** A reservation given up before its jail existed: lease, links and hold go. */
function abandon(net: JailNet): void {
  giveBackPooled(net);
  for (const to of net.lease.links) forgetLink(net.address, to, net.cfg.dir);
  dropLease(net.address, net.lease.owner, net.cfg.dir);
  net.unhold();
}

function readSysctl(path: string): string | null {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
}

/** The jail's elements, then forwarding on its egress uplinks. */
function install<T>(
  net: JailNet,
  applyFn: (cfg: NetConfig, req: NetRequest) => T,
  pid?: number,
): T | Promise<void> {
  const { lease, cfg } = net;
  // Egress needs forwarding on the uplink; where lightjail turns it on, `guard` keeps that
  // uplink from forwarding anything but jail traffic. The guard goes in before the switch.
  const uplinks = lease.egress ? (lease.uplink ? [lease.uplink] : defaultRouteIfaces()) : [];
  const switchOn = uplinks.filter((u) => readSysctl(`/proc/sys/net/ipv4/conf/${u}/forwarding`) === "0");
  const req = new NetRequest().jail(true, lease);
  for (const to of lease.links) req.link(true, lease.address, to);
  for (const u of switchOn) req.guard(u);
  if (pid !== undefined) req.wire(pid, net.wire);
  const switchForwarding = () => {
    try {
      for (const u of switchOn) writeFileSync(`/proc/sys/net/ipv4/conf/${u}/forwarding`, "1");
    } catch (e) {
      throw netError(`enable forwarding on ${switchOn.join(", ")}: ${(e as Error).message}`);
    }
  };
  const done = applyFn(cfg, req);
  if (done instanceof Promise) return done.then(switchForwarding);
  switchForwarding();
  return done;
}

/**
 * The jail's child unshares its network namespace a moment after it exists: until then
 * /proc/PID/ns/net is the host's. Wait for it.
 */
async function jailNetns(pid: number): Promise<void> {
  const host = readlinkSync("/proc/self/ns/net");
  for (let i = 0, delay = 0; ; i++, delay = Math.min(delay + 1, 5)) {
    let ns: string;
    try {
      ns = readlinkSync(`/proc/${pid}/ns/net`);
    } catch {
      throw netError(`the jail (pid ${pid}) ended before its network was set up`);
    }
    if (ns !== host) return;
    if (i > 2000) throw netError(`the jail (pid ${pid}) never got its own network namespace`);
    await Bun.sleep(delay);
  }
}

/**
 * For a jail spawned before this process had the root's table: makes the table, then puts the
 * jail's elements in (the jail waits for its go meanwhile; its child wires the rest itself).
 * A user-namespaced jail (`pid`: its keeper) is wired by its owner too, from outside, once it
 * has its network namespace.
 */
export async function attachNet(net: JailNet, pid: number): Promise<void> {
  if (net.ready) return;
  if (net.ownerWires) {
    await ensureBase(net.cfg);
    await jailNetns(pid);
  }
  await install(net, apply, net.ownerWires ? pid : undefined);
  net.ready = true;
}

/**
 * Takes a jail's address off the host once its payload has ended: its elements and links out
 * (one transaction), its host veth out of the address's way (releaseVeth in netwire.zig; the
 * kernel deletes it with the jail's namespace). Called as soon as the payload's end is known, so it
 * overlaps the jail's own teardown; a few hundred microseconds, on the event loop.
 */
export function unwireNet(net: JailNet): void {
  if (net.unwired) return;
  net.unwired = true;
  const { lease, cfg } = net;
  try {
    giveBackPooled(net);
    takeOff(lease, cfg);
  } catch {
    // What could not come off is swept by lj gc (it finds elements and veths without a lease).
  }
}

/** Everything a jail's address put on the host removed (unwireNet), then its lease given back. */
export async function releaseNet(net: JailNet): Promise<void> {
  unwireNet(net);
  // Published ports (rare: a cluster node's pods) go before the address can be leased again.
  const inbound = inboundRemovals(net.cfg, net.lease.address);
  if (inbound.length) await nftJail(net.cfg, inbound).catch(() => {});
  dropLease(net.lease.address, net.lease.owner, net.cfg.dir);
  net.unhold();
}

export interface JailLink {
  from: string;
  to: string;
  /** Removes the link (also removed when either jail ends). */
  unlink(): Promise<void>;
}

type Addressed = { address?: string } | string;

function addressOf(x: Addressed, what: string): string {
  const a = typeof x === "string" ? x : x.address;
  if (!a || parseIp(a) === null) {
    throw new LjError("usage", "no-address", `${what} has no private address`, {
      hint: 'spawn it with net: "private"',
    });
  }
  return a;
}

/**
 * Lets `from` open connections to `to` (app -> service); replies flow, the reverse does not.
 * Both ends are jails (or their addresses) of this machine's subnet.
 */
export async function linkJails(from: Addressed, to: Addressed): Promise<JailLink> {
  const a = addressOf(from, "the linking jail");
  const b = addressOf(to, "the linked jail");
  const cfg = netConfig();
  recordLink(a, b, cfg.dir);
  await apply(cfg, new NetRequest().link(true, a, b));
  return {
    from: a,
    to: b,
    async unlink() {
      forgetLink(a, b, cfg.dir);
      await apply(cfg, new NetRequest().link(false, a, b));
    },
  };
}

/** Published ports of an address: run/net/inbound/ADDRESS lists its elements, one a line. */
const inboundFile = (cfg: NetConfig, address: string) => join(cfg.dir, "inbound", address);

function inboundRemovals(cfg: NetConfig, address: string): string[] {
  let text = "";
  try {
    text = readFileSync(inboundFile(cfg, address), "utf8");
  } catch {
    return [];
  }
  rmSync(inboundFile(cfg, address), { force: true });
  return text
    .split("\n")
    .filter(Boolean)
    .flatMap((el) => removal(cfg, el));
}

/**
 * A dead owner's published ports at an address being leased again, removed before the new
 * jail is wired (synchronously: the lease is taken synchronously). Rare: a node agent that
 * died with pods running.
 */
function removeInboundNow(cfg: NetConfig, address: string): void {
  const lines = inboundRemovals(cfg, address);
  if (lines.length === 0) return;
  const p = Bun.spawnSync(["nft", "-f", "-"], {
    stdin: utf8.encode(`${lines.join("\n")}\n`),
    stderr: "pipe",
  });
  if (p.exitCode !== 0 && !/No such file or directory/.test(p.stderr.toString())) {
    throw netError(`removing published ports of ${address}: ${p.stderr.toString().trim()}`);
  }
}

export interface Published {
  address: string;
  ports: number[];
  /** Closes the ports again (they also close when the jail's address is released). */
  unpublish(): Promise<void>;
}

/**
 * Lets hosts beyond this machine open connections to a jail's TCP ports, coming in through
 * `uplink` (a cluster node's pods, reached over the node network). Forwarding is switched on
 * for the uplink under the same guard as egress uplinks: it forwards nothing but jail traffic.
 * A jail's own traffic is unchanged (other jails stay unreachable to it unless linked).
 */
export async function publishPorts(address: string, ports: number[], uplink: string): Promise<Published> {
  const a = addressOf(address, "the published jail");
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65535)
      throw new LjError("usage", "invalid-port", `port ${p} is not a TCP port`);
  }
  if (!existsSync(`/sys/class/net/${uplink}`))
    throw new LjError("unavailable", "no-uplink", `interface ${uplink} does not exist`);
  const cfg = netConfig();
  const els = ports.map((p) => `inbound { ${a} . tcp . ${p} }`);
  mkdirSync(join(cfg.dir, "inbound"), { recursive: true, mode: 0o700 });
  writeFileSync(inboundFile(cfg, a), `${els.join("\n")}\n`);
  const switchOn = readSysctl(`/proc/sys/net/ipv4/conf/${uplink}/forwarding`) === "0";
  await nftJail(cfg, [
    ...(switchOn ? [`add element ${cfg.table} guard { "${uplink}" }`] : []),
    ...els.map((el) => `add element ${cfg.table} ${el}`),
  ]);
  if (switchOn) writeFileSync(`/proc/sys/net/ipv4/conf/${uplink}/forwarding`, "1");
  return {
    address: a,
    ports,
    async unpublish() {
      await nftJail(cfg, inboundRemovals(cfg, a));
    },
  };
}

export interface GatewayPortHandle extends GatewayPort {
  /** Closes the port again (unless configured, or still opened by another live process). */
  close(): Promise<void>;
}

/**
 * Opens a port of the gateway address to this root's jails (e.g. 53/udp and 53/tcp for a
 * resolver the platform runs there), in addition to the configured ones ([net] gateway_ports,
 * LJ_GATEWAY_PORTS). It stays open while this process lives, until close(); a dead process's
 * ports close at the next `lj gc` or table set-up. Bind such a service to the gateway address.
 */
export async function allowGatewayPort(
  port: number | string,
  proto: "tcp" | "udp" = "tcp",
): Promise<GatewayPortHandle> {
  const p = parseGatewayPort(typeof port === "number" ? `${port}/${proto}` : port);
  const cfg = netConfig();
  const unhold = holdSubnet(cfg);
  recordPort(p, cfg.dir);
  try {
    await nftJail(cfg, gatewayPortLines(cfg));
  } catch (e) {
    forgetPort(p, cfg.dir);
    unhold();
    throw e;
  }
  return {
    ...p,
    async close() {
      forgetPort(p, cfg.dir);
      unhold();
      await nftJail(cfg, gatewayPortLines(cfg));
    },
  };
}

export interface WaitForPortOptions {
  timeoutMs?: number;
}

/**
 * Resolves once something inside the jail accepts TCP connections on `port` at its address;
 * rejects on timeout or when the jail ends first (a health check's building block).
 */
export async function waitForPort(
  jail: { address?: string; exited?: Promise<unknown> } | string,
  port: number,
  opts: WaitForPortOptions = {},
): Promise<void> {
  const host = addressOf(jail, "the jail");
  const deadline = performance.now() + (opts.timeoutMs ?? 10_000);
  let ended = false;
  if (typeof jail !== "string")
    jail.exited?.then(
      () => (ended = true),
      () => (ended = true),
    );
  for (let delay = 2; ; delay = Math.min(delay * 2, 50)) {
    const ok = await new Promise<boolean>((resolve) => {
      Bun.connect({
        hostname: host,
        port,
        socket: {
          open(s) {
            s.end();
            resolve(true);
          },
          data() {},
          error() {
            resolve(false);
          },
          connectError() {
            resolve(false);
          },
        },
      }).catch(() => resolve(false));
    });
    // A jail that ended gives its address back: whatever answers there now is someone else
    // (the address is reused only after the jail is gone, so its end is known by then).
    if (ended)
      throw new LjError("unavailable", "jail-ended", `the jail at ${host} ended before port ${port} opened`);
    if (ok) return;
    if (performance.now() + delay > deadline) {
      throw new LjError(
        "unavailable",
        "port-timeout",
        `nothing accepted connections on ${host}:${port} in time`,
      );
    }
    await Bun.sleep(delay);
  }
}

export interface NetLeftoverReport {
  removed: { kind: string; what: string }[];
  errors: { kind: string; what: string; error: string }[];
}

async function listedElements(table: string): Promise<Record<string, string[][]>> {
  const p = Bun.spawn(["nft", "-j", "list", "table", ...table.split(" ")], {
    stdout: "pipe",
    stderr: "ignore",
  });
  const [text, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  const out: Record<string, string[][]> = {};
  if (code !== 0) return out;
  type Elem = string | { concat?: (string | number | object)[]; prefix?: object };
  const doc = JSON.parse(text) as { nftables: { set?: { name: string; elem?: Elem[] } }[] };
  for (const item of doc.nftables) {
    if (!item.set) continue;
    out[item.set.name] = (item.set.elem ?? []).map((e) =>
      typeof e === "string"
        ? [e]
        : (e.concat ?? []).map((x) => (typeof x === "string" || typeof x === "number" ? String(x) : "")),
    );
  }
  return out;
}

/**
 * gc: leases of dead owners, veths nobody holds, and set elements for addresses no live lease
 * has (a crash between steps). Live jails are never touched.
 */
export async function collectNetLeftovers(report: NetLeftoverReport): Promise<void> {
  // Addresses this process's pool holds ahead are given back first: gc leaves only live jails'.
  stopPoolWiring();
  let cfg: NetConfig;
  try {
    cfg = netConfig();
  } catch (e) {
    report.errors.push({ kind: "net", what: "config", error: (e as Error).message });
    return;
  }
  for (const l of listLeases(cfg.dir)) {
    if (ownerIdLive(l.owner)) continue;
    try {
      const stale = claimStale(l.address, cfg);
      if (!stale) continue;
      removeInboundNow(cfg, stale.address);
      report.removed.push({ kind: "net-lease", what: `${stale.address} (${stale.veth})` });
    } catch (e) {
      report.errors.push({ kind: "net-lease", what: l.address, error: (e as Error).message });
    }
  }
  // Only this root's veths and addresses: other roots on the machine own theirs.
  const { subnet } = cfg;
  const inSubnet = (a: string | undefined) => {
    const ip = a === undefined ? null : parseIp(a);
    return ip !== null && ip >= subnet.first && ip <= subnet.last;
  };
  const live = new Map<string, Lease>();
  for (const l of listLeases(cfg.dir)) if (ownerIdLive(l.owner)) live.set(l.address, l);
  for (const dev of existsSync("/sys/class/net") ? readdirSync("/sys/class/net") : []) {
    // An address's veth nobody holds, or a released one the kernel has not deleted yet
    // (renamed "<prefix>x<7 hex>" when its jail ended: its namespace outlived the jail).
    const addr = vethAddress(dev, cfg.vethPrefix);
    const released = dev.startsWith(`${cfg.vethPrefix}x`);
    if (!released && (!addr || !inSubnet(addr) || live.get(addr)?.veth === dev)) continue;
    const r = await run(["ip", "link", "del", dev]);
    if (r.ok) report.removed.push({ kind: "net-veth", what: dev });
    else if (existsSync(`/sys/class/net/${dev}`))
      report.errors.push({ kind: "net-veth", what: dev, error: r.err });
  }
  for (const l of listLinks(cfg.dir)) {
    if (live.has(l.from) && live.has(l.to)) continue;
    if (ownerIdLive(l.owner) && live.has(l.from)) continue;
    forgetLink(l.from, l.to, cfg.dir);
  }
  await dropOrphanTables(report);
  const sets = await listedElements(cfg.table);
  if (Object.keys(sets).length === 0) return; // this root has no table here
  const lines: string[] = [];
  const what: string[] = [];
  const dead = (a: string | undefined) => inSubnet(a) && !live.has(a!);
  for (const [set, elems] of Object.entries(sets)) {
    for (const e of elems) {
      let el: string | null = null;
      if (set === "jails" && dead(e[1])) el = `jails { "${e[0]}" . ${e[1]} }`;
      if ((set === "egress_any" || set === "egress") && dead(e[0])) el = `${set} { ${e[0]} }`;
      if (set === "egress_via" && dead(e[0])) el = `egress_via { ${e[0]} . "${e[1]}" }`;
      if (set === "links" && (dead(e[0]) || (dead(e[1]) && !existsSync(linkFile(e[0]!, e[1]!, cfg.dir)))))
        el = `links { ${e[0]} . ${e[1]} }`;
      if (el) {
        lines.push(...removal(cfg, el));
        what.push(el);
      }
    }
  }
  // Ports opened by processes that are gone close with the same transaction.
  const before = (sets.gw_ports ?? []).map((e) => e.join(" . ")).sort();
  const after = [
    ...new Set([...cfg.gatewayPorts, ...livePorts(cfg.dir)].map((p) => `${p.proto} . ${p.port}`)),
  ].sort();
  if (before.join() !== after.join()) {
    lines.push(...gatewayPortLines(cfg));
    what.push(`gw_ports { ${after.join(", ")} }`);
  }
  if (lines.length) {
    try {
      await nftJail(cfg, lines);
      for (const w of what) report.removed.push({ kind: "net-rule", what: w });
    } catch (e) {
      report.errors.push({ kind: "net-rule", what: what.join(", "), error: (e as Error).message });
    }
  }
  dropIdleTable(cfg, sets, report);
}

/**
 * A root with no live process and no live lease needs no table; its next jail makes it again.
 * It stays while it guards an uplink that still exists: forwarding lightjail switched on there
 * would otherwise route anything.
 */
function dropIdleTable(cfg: NetConfig, sets: Record<string, string[][]>, report: NetLeftoverReport): void {
  if (listLeases(cfg.dir).some((l) => ownerIdLive(l.owner))) return;
  dropTable(cfg.table, cfg.root, sets, report);
}

/** Under the registry lock, so that no jail of the root is being set up meanwhile. */
function dropTable(
  table: string,
  root: string,
  sets: Record<string, string[][]>,
  report: NetLeftoverReport,
): void {
  if ((sets.guard ?? []).some(([u]) => u && existsSync(`/sys/class/net/${u}`))) return;
  let err = "";
  const ran = ifRootIdle(root, () => {
    const p = Bun.spawnSync(["nft", "delete", "table", ...table.split(" ")], { stderr: "pipe" });
    if (p.exitCode !== 0) err = p.stderr.toString().trim() || "nft failed";
    else forgetTable(table);
  });
  if (!ran) return;
  if (err) report.errors.push({ kind: "net-table", what: table, error: err });
  else report.removed.push({ kind: "net-table", what: table });
  for (const key of [...bases.keys()]) {
    if (!key.startsWith(`[${JSON.stringify(table)},`)) continue;
    bases.delete(key);
    basesReady.delete(key);
  }
}

/**
 * Tables of roots that were deleted (test roots, a moved installation): no process of theirs
 * lives, no veth of theirs is left (their prefix is "ljn" + the table's first 4 hex digits).
 */
async function dropOrphanTables(report: NetLeftoverReport): Promise<void> {
  const devs = existsSync("/sys/class/net") ? readdirSync("/sys/class/net") : [];
  const start = "inet lightjail_".length;
  for (const { table, root } of orphanTables()) {
    const prefix = `${VETH_FAMILY}${table.slice(start, start + 4)}`;
    if (devs.some((d) => d.startsWith(prefix))) continue;
    const sets = await listedElements(table);
    if (Object.keys(sets).length === 0) {
      forgetTable(table);
      continue;
    }
    dropTable(table, root, sets, report);
  }
}

/** The lease of an address (diagnostics, tests). */
export function leaseOf(address: string): Lease | null {
  return readLease(address);
}
