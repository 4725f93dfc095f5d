/**
 * A root's address leases, as the shim reads them (src/jail/net-alloc.ts's listLeases). A
 * namespace pool leases a few addresses ahead for the jails its process spawns next (jail "":
 * zig/src/ns_pool.zig); those are the pool's, not a jail's, and come and go with the process's
 * spawns.
 */
import { join } from "node:path";
import { type Lease, listLeases } from "../../src/jail/net-alloc.ts";

const leasesOf = (root: string): Lease[] => listLeases(join(root, "run", "net"));

/** The addresses the root's jails hold. */
export function jailLeases(root: string): string[] {
  return leasesOf(root)
    .filter((l) => l.jail !== "")
    .map((l) => l.address);
}

/** The leases a process's namespace pool holds ahead (`owner`'s, with no jail yet). */
export function poolLeases(root: string, owner: string): Lease[] {
  return leasesOf(root).filter((l) => l.jail === "" && l.owner === owner);
}
