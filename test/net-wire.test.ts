/**
 * The netlink wiring's failure cases (zig/src/netwire.zig, src/jail/net.ts): a veth name
 * already taken, an address already leased, and the wiring failing halfway. Each leaves
 * nothing behind: no veth, no set element, no route but the subnet's own, no lease.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { collectNetLeftovers, type NetLeftoverReport, stopPoolWiring } from "../src/jail/net.ts";
import { leasePath, netConfig, netDirs, parseIp, readLease, vethName } from "../src/jail/net-alloc.ts";
import { ownerId, procStat } from "../src/jail/owner.ts";
import { spawnJail } from "../src/jail/spawn.ts";
import type { JailSpec } from "../src/jail/spec.ts";
import { hostIpv4, hostSh, ipList } from "./helpers/host-sh.ts";
import { type JailEnv, makeJailEnv, projectDir } from "./helpers/jail-env.ts";
import { poolLeases } from "./helpers/leases.ts";
import { expectNoNetLeftovers } from "./helpers/net-leftovers.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

// A subnet of its own (test/net.test.ts uses 10.248.0.0/24).
const SUBNET = "10.247.3.0/24";
const PREFIX = "10.247.3.";
const LEFTOVERS = {
  prefix: PREFIX,
  gatewayLine: (l: string) => l.includes(`${PREFIX}1 `) || l.includes(`${PREFIX}1 }`),
};

let env: JailEnv;

const sh = hostSh;

beforeAll(async () => {
  if (!isRoot()) return;
  process.env.LJ_SUBNET = SUBNET;
  env = await makeJailEnv();
});

afterAll(async () => {
  if (!isRoot()) return;
  delete process.env.LJ_TEST_NET_FAIL_AT;
  const report: NetLeftoverReport = { removed: [], errors: [] };
  await collectNetLeftovers(report);
  expect(report.errors).toEqual([]);
  env.cleanup();
});

const spec = (argv: string[], extra: Partial<JailSpec> = {}): JailSpec => ({
  ...env.base,
  argv,
  net: "private",
  stdio: ["ignore", "pipe", "pipe"],
  ...extra,
});

async function run(s: JailSpec) {
  const j = spawnJail(s);
  const [out, err, r] = await Promise.all([
    new Response(j.stdout!).text(),
    new Response(j.stderr!).text(),
    j.exited,
  ]);
  await j.closed;
  return { out, err, r, address: j.address };
}

describe("wiring failures leave nothing behind", () => {
  rootTest("a working jail first: its eth0 has the address, and it is all gone after", async () => {
    const { out, r } = await run(spec(["/bin/sh", "-c", "ip -4 -o addr show dev eth0; ip route"]));
    expect(r.status).toBe(0);
    expect(out).toContain(`inet ${PREFIX}2 peer ${PREFIX}1/32`);
    expect(out).toContain(`default via ${PREFIX}1 dev eth0`);
    await expectNoNetLeftovers(LEFTOVERS);
  });

  rootTest(
    "a pooled veth comes ready: no IPv6 link-local address on either end, forwarding on at the host end, kept by name",
    async () => {
      // The pool makes veths once private jails are being spawned: look at a jail that got one.
      let seen = false;
      for (let i = 0; i < 30 && !seen; i++) {
        const j = spawnJail(
          spec(["/bin/sh", "-c", "ip -o addr show dev eth0; read x; true"], {
            stdio: ["pipe", "pipe", "pipe"],
          }),
        );
        try {
          for (let k = 0; k < 500 && !existsSync(leasePath(j.address!)); k++) await Bun.sleep(2);
          const veth = (JSON.parse(readFileSync(leasePath(j.address!), "utf8")) as { veth: string }).veth;
          const hostEnd = sh(`ip -o addr show dev ${veth}`).out;
          j.stdin!.end();
          const out = await new Response(j.stdout!).text();
          const r = await j.exited;
          expect(r.status).toBe(0);
          expect(out).toContain(`inet ${j.address} peer ${PREFIX}1/32`);
          if (!/p[0-9a-f]{7}$/.test(veth)) continue;
          seen = true;
          expect(out).not.toContain("inet6");
          expect(hostEnd).not.toContain("inet6");
        } finally {
          j.kill();
          await j.closed;
        }
      }
      expect(seen).toBe(true);
      // The pool's next veths, made ahead: up, forwarding on, no IPv6 address; no IPv4 address
      // either, or (wired ahead) the gateway's with the address of one of the pool's own leases
      // (no jail yet) as its peer.
      const pooled = () =>
        readdirSync("/sys/class/net").filter((d) => d.startsWith(`${netConfig().vethPrefix}p`));
      let spare = pooled();
      for (let i = 0; i < 200 && spare.length === 0; i++) {
        await Bun.sleep(10);
        spare = pooled();
      }
      const poolsOwn = new Map(poolLeases(env.root, ownerId()).map((l) => [l.veth, l.address]));
      for (const d of spare) {
        const addrs = ipList(["-o", "addr", "show", "dev", d]);
        if (addrs.code !== 0) continue; // gone meanwhile (a finished jail's)
        expect(addrs.out).not.toContain("inet6");
        const v4 = addrs.out.trim();
        if (v4 !== "") {
          const a = poolsOwn.get(d);
          if (a === undefined) continue; // a jail's, taken since the listing
          expect(v4).toContain(`inet ${PREFIX}1 peer ${a}/32`);
        }
        if (sh(`cat /proc/sys/net/ipv4/conf/${d}/forwarding`).out.trim() === "1") return;
      }
      throw new Error(`no pooled veth ready among ${spare.join(", ") || "none"}`);
    },
  );

  for (const step of [1, 2, 3, 4]) {
    rootTest(`the wiring failing at step ${step} of 4: a setup error naming it, nothing left`, async () => {
      process.env.LJ_TEST_NET_FAIL_AT = String(step);
      try {
        const { r, out } = await run(spec(["/bin/echo", "payload ran"]));
        expect(out).toBe("");
        expect(r.reason).toBe("setup");
        expect(r.status).toBe(125);
        expect(r.error).toContain("injected failure");
        // It names the jail's host veth (its address's name, or a pooled one's).
        expect(r.error).toMatch(
          new RegExp(`network ${netConfig().vethPrefix}[0-9a-fp][0-9a-f]{7}: injected`),
        );
      } finally {
        delete process.env.LJ_TEST_NET_FAIL_AT;
      }
      await expectNoNetLeftovers(LEFTOVERS);
      // The address is free again at once.
      const again = await run(spec(["/bin/true"]));
      expect(again.r.status).toBe(0);
      expect(again.address).toBe(`${PREFIX}2`);
      await expectNoNetLeftovers(LEFTOVERS);
    });
  }

  rootTest(
    "a veth name already taken on the host: that address is refused, auto skips it; the interface is untouched",
    async () => {
      const name = vethName(parseIp(`${PREFIX}2`)!);
      // "auto" below is the lowest free address: none leased ahead by this process's pool.
      stopPoolWiring();
      expect(sh(`ip link add ${name} type veth peer name ljtwcoll0p`).code).toBe(0);
      try {
        expect(() => spawnJail(spec(["/bin/true"], { address: `${PREFIX}2` }))).toThrow(/in use/);
        const { r, address } = await run(spec(["/bin/true"]));
        expect(r.status).toBe(0);
        expect(address).toBe(`${PREFIX}3`);
        expect(existsSync(`/sys/class/net/${name}`)).toBe(true);
      } finally {
        sh(`ip link del ${name}`);
      }
      await expectNoNetLeftovers(LEFTOVERS);
    },
  );

  rootTest("an address leased by another live process is refused (conflict); its lease stays", async () => {
    const file = leasePath(`${PREFIX}9`);
    // pid 1 lives: its lease is not stale.
    const start = procStat(1)!.startTime;
    writeFileSync(
      file,
      JSON.stringify({
        address: `${PREFIX}9`,
        owner: `1.${start}`,
        jail: "other",
        veth: "x",
        egress: false,
        links: [],
      }),
    );
    try {
      let err: unknown;
      try {
        spawnJail(spec(["/bin/true"], { address: `${PREFIX}9` }));
      } catch (e) {
        err = e;
      }
      expect((err as { code?: string }).code).toBe("address-in-use");
      expect((err as Error).message).toContain("in use by jail other");
      expect(existsSync(file)).toBe(true);
    } finally {
      sh(`rm -f ${file}`);
    }
    await expectNoNetLeftovers(LEFTOVERS);
  });

  rootTest("a dead owner's lease is reclaimed by the next jail that wants its address", async () => {
    const file = leasePath(`${PREFIX}10`);
    writeFileSync(
      file,
      JSON.stringify({
        address: `${PREFIX}10`,
        owner: "999999.1",
        jail: "dead",
        veth: vethName(parseIp(`${PREFIX}10`)!),
        egress: true,
        links: [],
      }),
    );
    const { r, address } = await run(spec(["/bin/true"], { address: `${PREFIX}10` }));
    expect(r.status).toBe(0);
    expect(address).toBe(`${PREFIX}10`);
    await expectNoNetLeftovers(LEFTOVERS);
  });

  rootTest(
    "the native ljspawn leases and wires by itself, next to the API's jails, and words a conflict as the API does",
    async () => {
      const ljspawn = join(projectDir, "zig", "zig-out", "bin", "ljspawn");
      // The root's table is made by the TypeScript side, with its first jail.
      expect((await run(spec(["/bin/true"]))).r.status).toBe(0);
      // The API's jail holds the lowest address. The addresses this process's namespace pool
      // leases ahead go back before each side leases: "auto" then means the lowest free address.
      stopPoolWiring();
      const held = spawnJail(spec(["/bin/sleep", "30"], { stdio: ["ignore", "ignore", "ignore"] }));
      stopPoolWiring();
      try {
        // No TypeScript to fall back on: this one must run natively.
        const native = Bun.spawnSync([ljspawn, "-i", "auto", "-p", "ip -4 -o addr show dev eth0; ip route"], {
          env: { ...process.env, LJ_BUN: "/nonexistent" },
          stderr: "pipe",
        });
        expect(native.stderr.toString()).toBe("");
        expect(native.exitCode).toBe(0);
        expect(native.stdout.toString()).toContain(`inet ${PREFIX}3 peer ${PREFIX}1/32`);
        expect(native.stdout.toString()).toContain(`default via ${PREFIX}1 dev eth0`);
        // Its lease, elements and veth are gone with it; the API's jail keeps its own.
        expect(readdirSync(netDirs.leases())).toEqual([held.address!]);
        // A native jail's lease keeps the API away from its address, the same way.
        const running = Bun.spawn([ljspawn, "-i", "auto", "--", "/bin/sleep", "5"], {
          env: { ...process.env, LJ_BUN: "/nonexistent" },
          stdout: "ignore",
          stderr: "pipe",
        });
        try {
          for (let i = 0; i < 500 && !existsSync(leasePath(`${PREFIX}3`)); i++) await Bun.sleep(10);
          expect(existsSync(leasePath(`${PREFIX}3`))).toBe(true);
          // Its veth is named apart from its address (so its release needs no rename), the
          // lease records that name, and the host end carries the gateway with the jail as peer.
          const veth = (JSON.parse(readFileSync(leasePath(`${PREFIX}3`), "utf8")) as { veth: string }).veth;
          expect(veth).toMatch(new RegExp(`^${netConfig().vethPrefix}p[0-9a-f]{7}$`));
          for (let i = 0; i < 500 && !(hostIpv4(veth) ?? "").includes("peer"); i++) await Bun.sleep(10);
          expect(hostIpv4(veth) ?? "").toContain(`inet ${PREFIX}1 peer ${PREFIX}3/32`);
          const next = await run(spec(["/bin/true"]));
          expect(next.r.status).toBe(0);
          expect(next.address).toBe(`${PREFIX}4`);
        } finally {
          running.kill("SIGTERM");
          await running.exited;
        }
        expect(existsSync(leasePath(`${PREFIX}3`))).toBe(false);
        // The held address: refused natively, in the same words and with the same exit code
        // as the API's refusal (one definition: zig/src/netlease.zig).
        const taken = Bun.spawnSync([ljspawn, "-i", held.address!, "--", "/bin/true"], {
          env: { ...process.env, LJ_BUN: "/nonexistent" },
          stderr: "pipe",
        });
        expect(taken.stderr.toString()).toBe(
          `ljspawn: address ${held.address} is in use by jail ${held.id}\n  hint: pick another address, or -i auto\n`,
        );
        expect(taken.exitCode).toBe(73);
      } finally {
        held.kill("SIGKILL");
        await held.closed;
      }
      await expectNoNetLeftovers(LEFTOVERS);
    },
  );
});

describe("the native ljspawn follows the same lease rules, without the TypeScript CLI", () => {
  const ljspawn = join(projectDir, "zig", "zig-out", "bin", "ljspawn");
  // No TypeScript to fall back on: everything here must run natively.
  const native = (args: string[], extra: Record<string, string> = {}) => {
    const p = Bun.spawnSync([ljspawn, ...args], {
      env: { ...process.env, LJ_BUN: "/nonexistent", ...extra },
      stdout: "pipe",
      stderr: "pipe",
    });
    return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
  };
  const liveOwner = async () => `1.${procStat(1)!.startTime}`;
  const leaseBody = (address: string, owner: string, jail: string) =>
    JSON.stringify({ address, owner, jail, veth: vethName(parseIp(address)!), egress: false, links: [] });

  rootTest("the root's table first (the API's jails make it)", async () => {
    const { r, err } = await run(spec(["/bin/true"]));
    expect({ status: r.status, error: r.error, err }).toEqual({ status: 0, error: undefined, err: "" });
    await expectNoNetLeftovers(LEFTOVERS);
  });

  rootTest(
    "an address leased by a live process: refused in the API's words, exit 73, its lease stays",
    async () => {
      const file = leasePath(`${PREFIX}20`);
      writeFileSync(file, leaseBody(`${PREFIX}20`, await liveOwner(), "other"));
      try {
        const r = native(["-i", `${PREFIX}20`, "--", "/bin/true"]);
        expect(r.err).toBe(
          `ljspawn: address ${PREFIX}20 is in use by jail other\n  hint: pick another address, or -i auto\n`,
        );
        expect(r.code).toBe(73);
        expect(existsSync(file)).toBe(true);
      } finally {
        sh(`rm -f ${file}`);
      }
      await expectNoNetLeftovers(LEFTOVERS);
    },
  );

  rootTest(
    "a dead owner's lease (with a link record) is reclaimed natively, its state taken off",
    async () => {
      const addr = `${PREFIX}21`;
      writeFileSync(leasePath(addr), leaseBody(addr, "999999.1", "dead"));
      const link = join(netDirs.links(), `${addr}_${PREFIX}22`);
      writeFileSync(link, "999999.1");
      const r = native(["-i", addr, "-p", "ip -4 -o addr show dev eth0"]);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(r.out).toContain(`inet ${addr} peer ${PREFIX}1/32`);
      expect(existsSync(link)).toBe(false);
      await expectNoNetLeftovers(LEFTOVERS);
    },
  );

  rootTest("a full subnet: refused in the API's words (exit 69); the API refuses alike", async () => {
    const owner = await liveOwner();
    const made: string[] = [];
    for (let i = 2; i <= 254; i++) {
      const a = `${PREFIX}${i}`;
      if (existsSync(leasePath(a))) continue;
      writeFileSync(leasePath(a), leaseBody(a, owner, "filler"));
      made.push(a);
    }
    try {
      const r = native(["-i", "auto", "--", "/bin/true"]);
      expect(r.err).toBe(
        `ljspawn: no free address left in ${SUBNET}\n  hint: end some jails, run lj gc, or configure a larger subnet (LJ_SUBNET)\n`,
      );
      expect(r.code).toBe(69);
      let err: unknown;
      try {
        spawnJail(spec(["/bin/true"]));
      } catch (e) {
        err = e;
      }
      expect((err as { code?: string }).code).toBe("subnet-full");
      expect((err as Error).message).toBe(`no free address left in ${SUBNET}`);
    } finally {
      for (const a of made) sh(`rm -f ${leasePath(a)}`);
    }
    await expectNoNetLeftovers(LEFTOVERS);
  });

  rootTest("a subnet that is no subnet: refused with its source named (exit 78)", () => {
    const r = native(["-i", "auto", "--", "/bin/true"], { LJ_SUBNET: "10.247.3.1/24" });
    expect(r.err).toBe('ljspawn: LJ_SUBNET "10.247.3.1/24" has host bits set; did you mean 10.247.3.0/24?\n');
    expect(r.code).toBe(78);
  });

  for (const step of [2, 4]) {
    rootTest(`the native wiring failing at step ${step} of 4: an error naming it, nothing left`, async () => {
      const r = native(["-i", "auto", "--", "/bin/echo", "payload ran"], {
        LJ_TEST_NET_FAIL_AT: String(step),
      });
      expect(r.out).toBe("");
      expect(r.err).toContain("injected failure");
      expect(r.code).not.toBe(0);
      await expectNoNetLeftovers(LEFTOVERS);
    });
  }
});

describe("addresses the namespace pool leases and wires ahead", () => {
  /** The addresses this process's pool holds ahead. */
  const ahead = () => poolLeases(env.root, ownerId()).map((l) => l.address);
  const leaseOf = (a: string) => {
    const l = readLease(a);
    if (!l) throw new Error(`no lease for ${a}`);
    return l;
  };
  const jailsSet = () => sh(`nft list set ${netConfig().table} jails`).out;
  /** A pool lease whose set is done: its host end carries the gateway with it as peer, and its element is in. */
  const wiredAhead = (a: string) => {
    try {
      const { veth } = leaseOf(a);
      return (hostIpv4(veth) ?? "").includes(`peer ${a}/32`) && jailsSet().includes(a);
    } catch {
      return false;
    }
  };
  /** Private jails until the pool holds an address wired ahead; returns it. */
  async function primed(): Promise<string> {
    for (let i = 0; i < 10; i++) {
      expect((await run(spec(["/bin/true"]))).r.status).toBe(0);
      for (let k = 0; k < 100; k++) {
        const ready = ahead().filter(wiredAhead);
        if (ready.length > 0) {
          await Bun.sleep(20); // its maker exits a moment after the set is done
          return ready[0]!;
        }
        await Bun.sleep(10);
      }
    }
    throw new Error("the pool never wired an address ahead");
  }

  rootTest(
    "a jail takes an address wired ahead: the lease becomes its own, eth0 and the filter are ready; the rest go back once the root is idle",
    async () => {
      stopPoolWiring();
      await primed();
      const wired = ahead().filter(wiredAhead);
      const j = spawnJail(
        spec(["/bin/sh", "-c", "ip -4 -o addr show dev eth0; ip route; read x; true"], {
          stdio: ["pipe", "pipe", "pipe"],
        }),
      );
      try {
        expect(wired).toContain(j.address!);
        const lease = leaseOf(j.address!);
        expect(lease.jail).toBe(j.id);
        expect(lease.owner).toBe(ownerId());
        expect(lease.veth).toMatch(new RegExp(`^${netConfig().vethPrefix}p[0-9a-f]{7}$`));
        expect(ahead()).not.toContain(j.address!);
        expect(hostIpv4(lease.veth) ?? "").toContain(`inet ${PREFIX}1 peer ${j.address}/32`);
        expect(jailsSet()).toContain(j.address!);
        j.stdin!.end();
        const out = await new Response(j.stdout!).text();
        expect((await j.exited).status).toBe(0);
        expect(out).toContain(`inet ${j.address} peer ${PREFIX}1/32`);
        expect(out).toContain(`default via ${PREFIX}1 dev eth0`);
      } finally {
        j.kill();
        await j.closed;
      }
      expect(existsSync(leasePath(j.address!))).toBe(false);
      // No private jail of the root for a second: the pool gives its addresses back by itself.
      for (let i = 0; i < 300 && ahead().length > 0; i++) await Bun.sleep(10);
      expect(ahead()).toEqual([]);
      await expectNoNetLeftovers(LEFTOVERS);
    },
  );

  rootTest("a jail asking for an address the pool wired ahead gets that set", async () => {
    stopPoolWiring();
    const a = await primed();
    const { out, r, address } = await run(
      spec(["/bin/sh", "-c", "ip -4 -o addr show dev eth0"], { address: a }),
    );
    expect(r.status).toBe(0);
    expect(address).toBe(a);
    expect(out).toContain(`inet ${a} peer ${PREFIX}1/32`);
    expect(ahead()).not.toContain(a);
    await expectNoNetLeftovers(LEFTOVERS);
  });

  rootTest(
    "a jail without a private address that takes a wired set: its address comes off the host at once",
    async () => {
      stopPoolWiring();
      await primed();
      // Private jails one after another until every set the pool holds is wired (the count
      // stops moving), so that the next jail, whichever set it takes, takes a wired one.
      let last = -1;
      for (let i = 0; i < 20; i++) {
        expect((await run(spec(["/bin/true"]))).r.status).toBe(0);
        await Bun.sleep(30);
        const n = ahead().filter(wiredAhead).length;
        if (n === last && n === ahead().length) break;
        last = n;
      }
      const before = ahead();
      expect(before.length).toBeGreaterThan(0);
      const veths = new Map(before.map((a) => [a, leaseOf(a).veth]));
      const none = spawnJail({ ...spec(["/bin/true"]), net: "none", stdio: ["ignore", "ignore", "ignore"] });
      expect((await none.exited).status).toBe(0);
      await none.closed;
      const after = ahead();
      const gone = before.filter((a) => !after.includes(a));
      expect(gone.length).toBe(1);
      const a = gone[0]!;
      // Its lease, element and the host end's address went in that jail's spawn.
      expect(existsSync(leasePath(a))).toBe(false);
      expect(jailsSet()).not.toContain(a);
      expect(hostIpv4(veths.get(a)!) ?? "").not.toContain(a);
      await expectNoNetLeftovers(LEFTOVERS);
    },
  );

  for (const step of [1, 2, 3, 4]) {
    rootTest(
      `the pool's wiring failing at step ${step} of 4: its lease goes back, jails wire their own`,
      async () => {
        stopPoolWiring();
        process.env.LJ_TEST_POOL_FAIL_AT = String(step);
        try {
          for (let i = 0; i < 8; i++) {
            const { out, r, address } = await run(spec(["/bin/sh", "-c", "ip -4 -o addr show dev eth0"]));
            expect(r.status).toBe(0);
            expect(out).toContain(`inet ${address} peer ${PREFIX}1/32`);
          }
          // Spoiled sets are never claimed: whatever the pool still holds is given back.
          stopPoolWiring();
          expect(ahead()).toEqual([]);
        } finally {
          delete process.env.LJ_TEST_POOL_FAIL_AT;
        }
        await expectNoNetLeftovers(LEFTOVERS);
      },
    );
  }

  rootTest("a process that exits gives back what its pool wired ahead", async () => {
    stopPoolWiring();
    const script = join(process.env.LIGHTJAIL_ROOT!, "pool-exit.ts");
    writeFileSync(
      script,
      `import { spawnJail } from ${JSON.stringify(join(projectDir, "src", "jail", "spawn.ts"))};
import { listLeases } from ${JSON.stringify(join(projectDir, "src", "jail", "net-alloc.ts"))};
const base = ${JSON.stringify(env.base)};
for (let i = 0; i < 12; i++) {
  const j = spawnJail({ ...base, argv: ["/bin/true"], net: "private", stdio: ["ignore", "ignore", "ignore"] });
  if ((await j.exited).status !== 0) process.exit(2);
  await j.closed;
  await Bun.sleep(5);
}
const ahead = listLeases(${JSON.stringify(netDirs.base())}).filter((l) => l.jail === "").length;
console.log(ahead);
process.exit(0);
`,
    );
    const p = Bun.spawnSync([process.execPath, script], { env: process.env, stderr: "pipe" });
    expect(p.stderr.toString()).toBe("");
    expect(p.exitCode).toBe(0);
    // It held addresses ahead when it exited, and gave them all back on the way out.
    expect(Number(p.stdout.toString().trim())).toBeGreaterThan(0);
    expect(readdirSync(netDirs.leases())).toEqual([]);
    await expectNoNetLeftovers(LEFTOVERS);
  });
});
