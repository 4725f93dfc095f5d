/**
 * A root's address leases that belong to jails. A namespace pool leases a few addresses ahead
 * for the jails its process spawns next (jail "": zig/src/ns_pool.zig); those are the pool's,
 * not a jail's, and come and go with the process's spawns.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export function jailLeases(root: string): string[] {
  const dir = join(root, "run", "net", "leases");
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => {
    try {
      return (JSON.parse(readFileSync(join(dir, f), "utf8")) as { jail?: string }).jail !== "";
    } catch {
      return false; // gone between the listing and the read
    }
  });
}
