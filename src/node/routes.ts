/**
 * Pod networking across nodes: every node's jail subnet is its podCIDR, and each node routes
 * the other nodes' podCIDRs via their InternalIP (they share a network, as nodes of one
 * cluster do). The agent keeps these routes in step with the Node objects it watches.
 */
import type { V1Node } from "@kubernetes/client-node";
import { LjError } from "../errors.ts";
import { parseSubnet } from "../jail/net-alloc.ts";

/**
 * Runs `ip ARGS`. A listing the kernel interrupted (the machine's addresses or routes changed
 * during the dump: ip says so on stderr, yet exits 0) may lack entries: it is asked again.
 */
async function ip(args: string[]): Promise<{ ok: boolean; out: string; err: string }> {
  for (let attempt = 1; ; attempt++) {
    const p = Bun.spawn(["ip", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    const [out, err, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    if (!err.includes("Dump was interrupted") || attempt === 20)
      return { ok: code === 0, out, err: err.trim() };
  }
}

/** The interface that carries `address` on this machine (the node's uplink). */
export async function interfaceOf(address: string): Promise<string> {
  const r = await ip(["-o", "-4", "addr", "show"]);
  for (const line of r.out.split("\n")) {
    const m = /^\d+:\s+(\S+)\s+inet\s+([\d.]+)\//.exec(line);
    if (m && m[2] === address) return m[1]!;
  }
  throw new LjError("config", "no-such-address", `no interface of this machine has the address ${address}`, {
    hint: "pass --address with one of this machine's addresses on the cluster network",
  });
}

export function internalIP(n: V1Node): string | undefined {
  return n.status?.addresses?.find((a) => a.type === "InternalIP")?.address;
}

export class RouteTable {
  /** podCIDR -> gateway, as installed. */
  private installed = new Map<string, string>();
  private busy: Promise<void> = Promise.resolve();

  constructor(
    private readonly self: string,
    private readonly log: (line: string) => void,
  ) {}

  sync(nodes: V1Node[]): Promise<void> {
    this.busy = this.busy.then(() => this.apply(nodes));
    return this.busy;
  }

  private async apply(nodes: V1Node[]): Promise<void> {
    const want = new Map<string, string>();
    for (const n of nodes) {
      const cidr = n.spec?.podCIDR;
      const via = internalIP(n);
      if (n.metadata?.name === this.self || !cidr || !via) continue;
      try {
        want.set(parseSubnet(cidr, `podCIDR of node ${n.metadata?.name}`).cidr, via);
      } catch (e) {
        this.log((e as Error).message);
      }
    }
    for (const [cidr, via] of want) {
      if (this.installed.get(cidr) === via) continue;
      const r = await ip(["route", "replace", cidr, "via", via]);
      if (r.ok) this.installed.set(cidr, via);
      else this.log(`route ${cidr} via ${via}: ${r.err}`);
    }
    for (const cidr of [...this.installed.keys()]) {
      if (want.has(cidr)) continue;
      await ip(["route", "del", cidr]);
      this.installed.delete(cidr);
    }
  }

  async clear(): Promise<void> {
    await this.sync([]);
  }
}
