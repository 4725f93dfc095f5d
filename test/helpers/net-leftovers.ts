/**
 * What a test's subnet (addresses PREFIX + N, a /24) may leave on the host once its jails are
 * gone: this root's veths, its table's elements, routes and the root's lease (and link)
 * records. Only this root's are counted, so another lightjail on the machine does not matter.
 */
import { expect } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { stopPoolWiring } from "../../src/jail/net.ts";
import { netConfig, netDirs } from "../../src/jail/net-alloc.ts";
import { ownerId } from "../../src/jail/owner.ts";
import { hostIpv4, hostSh, ipList } from "./host-sh.ts";

export interface LeftoverRules {
  /** The subnet's addresses without their last number ("10.248.0."). */
  prefix: string;
  /** An nft line that belongs to the gateway (kept by design), not to a jail. */
  gatewayLine: (line: string) => boolean;
  /** Link records count too. */
  links?: boolean;
}

/**
 * A veth named apart from its address ("<prefix>p...": the namespace pool's spares, made ahead
 * without an address and gone with the pool, and jails' released ones, which lose their
 * address at once and go with the jail's namespace) is no leftover while it has no address,
 * nor once it is gone (the kernel may delete it between the listing and the look).
 */
const poolSpare = (dev: string, vethPrefix: string) => {
  if (!dev.startsWith(`${vethPrefix}p`)) return false;
  return !hostIpv4(dev);
};

const leaseText = (file: string) => {
  try {
    const text = readFileSync(file, "utf8").trim();
    return text.includes(`"${ownerId()}"`) ? `${text} (this process's)` : text;
  } catch {
    return "(gone)";
  }
};

/** Everything the subnet may leave on the host: must all be empty. */
export function netLeftovers(r: LeftoverRules): string[] {
  const out: string[] = [];
  const cfg = netConfig();
  for (const dev of readdirSync("/sys/class/net"))
    if (dev.startsWith(cfg.vethPrefix) && !poolSpare(dev, cfg.vethPrefix)) out.push(`veth ${dev}`);
  for (const line of hostSh(`nft list table ${cfg.table}`).out.split("\n"))
    if (line.includes(r.prefix) && !r.gatewayLine(line) && !line.includes(`${r.prefix}0/24`))
      out.push(`nft ${line.trim()}`);
  // The subnet's own unreachable route stays by design (it keeps jail addresses on the machine).
  for (const line of ipList(["route"]).out.split("\n"))
    if (line.includes(r.prefix) && !line.startsWith(`unreachable ${r.prefix}0/24`)) out.push(`route ${line}`);
  // A lease says whose it is (owner and jail), so a failure tells this process's from another's.
  if (existsSync(netDirs.leases()))
    for (const f of readdirSync(netDirs.leases()))
      out.push(`lease ${f} ${leaseText(join(netDirs.leases(), f))}`);
  if (r.links && existsSync(netDirs.links()))
    for (const f of readdirSync(netDirs.links())) out.push(`link ${f}`);
  return out;
}

/**
 * A finished jail's host veth is taken out of the way at once (without its address; one named
 * after its address also down and renamed "<prefix>x...") and deleted by the kernel with the
 * jail's namespace a moment later, and with it the routes through it. Wait for the kernel
 * (bounded), then nothing at all may be left.
 */
export async function expectNoNetLeftovers(r: LeftoverRules): Promise<void> {
  // Addresses this process's namespace pool leased and wired ahead are the pool's, not a
  // jail's: they go back first (as they do a second after the root's last jail, and at exit).
  stopPoolWiring();
  for (let i = 0; i < 200 && netLeftovers(r).length > 0; i++) await Bun.sleep(10);
  expect(netLeftovers(r)).toEqual([]);
}
