/**
 * Several state roots on one machine: each has its own nftables table and veth names, `lj gc`
 * of one never touches another's jails, and a root whose jail subnet overlaps a live root's
 * refuses to start until that root's owner is gone. Real jails, real nftables; every address
 * used lives on this machine.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LjError } from "../src/errors.ts";
import { leaseOf, waitForPort } from "../src/jail/net.ts";
import { netConfig } from "../src/jail/net-alloc.ts";
import { liveRoots } from "../src/jail/net-registry.ts";
import { type Jail, spawnJail } from "../src/jail/spawn.ts";
import { hostIpv4, hostSh } from "./helpers/host-sh.ts";
import { type JailEnv, lj, makeJailEnv, projectDir } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

// Subnets of this file only (other test files and a real lightjail use others).
const SUBNET_A = "10.249.0.0/24";
const SUBNET_B = "10.250.0.0/24";
const SUBNET_C = "10.251.0.0/24";
const OVERLAPS_C = "10.251.0.128/25";

let a: JailEnv; // this process's root
let b: JailEnv; // another root, driven through child processes

const sh = hostSh;

beforeAll(async () => {
  if (!isRoot()) return;
  b = await makeJailEnv();
  a = await makeJailEnv(); // last: LIGHTJAIL_ROOT stays on A for this process
  process.env.LJ_SUBNET = SUBNET_A;
});

afterAll(async () => {
  if (!isRoot()) return;
  // Both roots are idle now: gc takes their tables away.
  for (const root of [b?.root, a?.root]) {
    if (!root) continue;
    const gc = await lj(["gc"], { LIGHTJAIL_ROOT: root, LJ_SUBNET: root === a.root ? SUBNET_A : SUBNET_B });
    expect(gc.code).toBe(0);
    expect(sh(`nft list table ${netConfig({ LIGHTJAIL_ROOT: root }).table}`).code).not.toBe(0);
  }
  delete process.env.LJ_SUBNET;
  a?.cleanup();
  b?.cleanup();
});

/** An HTTP server jail of root A (this process) on port 8080. */
async function serverA(): Promise<Jail> {
  const j = spawnJail({
    ...a.base,
    net: "private",
    argv: ["/usr/bin/python3", "-m", "http.server", "--bind", "0.0.0.0", "8080"],
    stdio: ["ignore", "ignore", "ignore"],
  });
  await waitForPort(j, 8080, { timeoutMs: 10_000 });
  return j;
}

/**
 * A child process that owns a private server jail in `root` with `subnet` and prints
 * "<address> <veth>" once it serves; it lives until killed (its jail dies with it).
 */
async function owner(
  env: JailEnv,
  subnet: string,
): Promise<{ proc: Bun.Subprocess; address: string; veth: string }> {
  const script = join(env.root, `owner-${subnet.replace(/[./]/g, "_")}.ts`);
  const spec = {
    ...env.base,
    net: "private",
    argv: ["/usr/bin/python3", "-m", "http.server", "--bind", "0.0.0.0", "8080"],
    stdio: ["ignore", "ignore", "ignore"],
  };
  await Bun.write(
    script,
    `import { spawnJail } from ${JSON.stringify(join(projectDir, "src/jail/spawn.ts"))};
import { waitForPort } from ${JSON.stringify(join(projectDir, "src/jail/net.ts"))};
import { leaseOf } from ${JSON.stringify(join(projectDir, "src/jail/net.ts"))};
const j = spawnJail(${JSON.stringify(spec)});
await waitForPort(j, 8080, { timeoutMs: 10_000 });
console.log(j.address, leaseOf(j.address).veth);
await j.exited;`,
  );
  const proc = Bun.spawn([process.execPath, script], {
    stdout: "pipe",
    stderr: "inherit",
    env: { ...process.env, LIGHTJAIL_ROOT: env.root, LJ_SUBNET: subnet },
  });
  const reader = proc.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  const [address, veth] = new TextDecoder().decode(value).trim().split(" ");
  if (!address || !veth) throw new Error("the owner process did not start its jail");
  return { proc, address, veth };
}

async function kill(proc: Bun.Subprocess): Promise<void> {
  proc.kill("SIGKILL");
  await proc.exited;
}

async function get(address: string): Promise<number> {
  const res = await fetch(`http://${address}:8080/`, { signal: AbortSignal.timeout(5000) });
  await res.text();
  return res.status;
}

rootTest(
  "two roots: their own tables and veths; gc of one (even on an overlapping subnet) leaves the other wired",
  async () => {
    const cfgA = netConfig();
    const cfgB = netConfig({ ...process.env, LIGHTJAIL_ROOT: b.root, LJ_SUBNET: SUBNET_B });
    const jailA = await serverA();
    const ownerB = await owner(b, SUBNET_B);
    try {
      // The jail's host veth: its address's name, or a pooled one's (made ahead, kept).
      const vethA = leaseOf(jailA.address!)!.veth;
      // Names derive from each root: different tables, different veth prefixes.
      expect(cfgA.vethPrefix).not.toBe(cfgB.vethPrefix);
      expect(cfgA.table).not.toBe(cfgB.table);
      expect(vethA.length).toBeLessThanOrEqual(15);
      expect(ownerB.veth.length).toBeLessThanOrEqual(15);
      expect(vethA.startsWith(cfgA.vethPrefix)).toBe(true);
      expect(ownerB.veth.startsWith(cfgB.vethPrefix)).toBe(true);
      expect(existsSync(`/sys/class/net/${vethA}`)).toBe(true);
      expect(existsSync(`/sys/class/net/${ownerB.veth}`)).toBe(true);
      const tableA = sh(`nft list table ${cfgA.table}`).out;
      const tableB = sh(`nft list table ${cfgB.table}`).out;
      expect(tableA).toContain(jailA.address!);
      expect(tableA).not.toContain(ownerB.address);
      expect(tableB).toContain(ownerB.address);
      expect(tableB).not.toContain(jailA.address!);
      // Both registered, each with its subnet.
      const live = liveRoots();
      expect(live.some((e) => e.root === cfgA.root && e.subnet === SUBNET_A)).toBe(true);
      expect(live.some((e) => e.subnet === SUBNET_B)).toBe(true);

      // gc of B while B's owner lives removes nothing; with B's owner dead it removes only
      // B's leftovers. Run it as B with A's own subnet too: the names decide, not the subnet.
      const gcLive = await lj(["gc"], { LIGHTJAIL_ROOT: b.root, LJ_SUBNET: SUBNET_B });
      expect(gcLive.code).toBe(0);
      // (It may report tables of roots deleted earlier on this machine: not B's, not A's.)
      for (const mine of [ownerB.address, ownerB.veth, cfgB.table, jailA.address!, cfgA.table])
        expect(gcLive.stdout).not.toContain(mine);
      await kill(ownerB.proc);
      for (const subnet of [SUBNET_B, SUBNET_A]) {
        const gc = await lj(["gc"], { LIGHTJAIL_ROOT: b.root, LJ_SUBNET: subnet });
        expect(gc.stderr).toBe("");
        expect(gc.code).toBe(0);
        expect(gc.stdout).not.toContain(jailA.address!);
      }
      expect(existsSync(`/sys/class/net/${ownerB.veth}`)).toBe(false);
      expect(existsSync(`/sys/class/net/${vethA}`)).toBe(true);
      expect(sh(`nft list table ${cfgA.table}`).out).toContain(jailA.address!);
      expect(await get(jailA.address!)).toBe(200);
    } finally {
      ownerB.proc.kill("SIGKILL");
      jailA.kill("SIGKILL");
      await jailA.closed;
    }
    // A's own teardown left nothing of A (its released veth goes with the jail's namespace,
    // a moment later).
    // (The pool's spare veths, down and without an address, are no leftover.)
    const ofA = () =>
      readdirSync("/sys/class/net").filter(
        (d) => d.startsWith(cfgA.vethPrefix) && !(d.startsWith(`${cfgA.vethPrefix}p`) && !hostIpv4(d)),
      );
    for (let i = 0; i < 200 && ofA().length > 0; i++) await Bun.sleep(10);
    expect(ofA()).toEqual([]);
  },
  60_000,
);

rootTest(
  "a root whose subnet overlaps a live root's refuses to start, and starts once that owner is gone",
  async () => {
    // Root C lives in a child process (an owner with a private jail).
    const rootC = mkdtempSync(join(tmpdir(), "lj-test-c-"));
    const envC: JailEnv = {
      ...a,
      root: rootC,
      cleanup: () => rmSync(rootC, { recursive: true, force: true }),
    };
    const ownerC = await owner(envC, SUBNET_C);
    try {
      const spawnB = ["spawn", "--world", "test", "-i", "auto", "-p", "true"];
      const refused = await lj(spawnB, { LIGHTJAIL_ROOT: b.root, LJ_SUBNET: OVERLAPS_C });
      expect(refused.code).toBe(73);
      expect(refused.stderr).toContain(
        `jail subnet ${OVERLAPS_C} of ${netConfig({ LIGHTJAIL_ROOT: b.root }).root}`,
      );
      expect(refused.stderr).toContain(
        `overlaps ${SUBNET_C} of ${netConfig({ LIGHTJAIL_ROOT: rootC }).root}`,
      );
      expect(refused.stderr).toContain("LJ_SUBNET");
      // lj serve refuses as well, before it serves anything.
      const serve = await lj(["serve", "--port", "0"], { LIGHTJAIL_ROOT: b.root, LJ_SUBNET: OVERLAPS_C });
      expect(serve.code).toBe(73);
      expect(serve.stderr).toContain(`overlaps ${SUBNET_C}`);
      // In this process too (the API's error), once root A's own registration here (kept a
      // second past its last private jail) is gone: A then starts afresh, with C's subnet.
      const aRoot = netConfig({ LIGHTJAIL_ROOT: a.root }).root;
      for (let i = 0; i < 100 && liveRoots().some((e) => e.root === aRoot); i++) await Bun.sleep(50);
      process.env.LJ_SUBNET = SUBNET_C; // root A with C's subnet
      let err: unknown;
      try {
        spawnJail({ ...a.base, net: "private", argv: ["true"] });
      } catch (e) {
        err = e;
      } finally {
        process.env.LJ_SUBNET = SUBNET_A;
      }
      expect(err).toBeInstanceOf(LjError);
      expect((err as LjError).code).toBe("subnet-overlap");
      // A different subnet is fine meanwhile.
      const other = await lj(spawnB, { LIGHTJAIL_ROOT: b.root, LJ_SUBNET: SUBNET_B });
      expect(other.stderr).toBe("");
      expect(other.code).toBe(0);
      // The owner of C dies: its registration no longer counts.
      await kill(ownerC.proc);
      const accepted = await lj(spawnB, { LIGHTJAIL_ROOT: b.root, LJ_SUBNET: OVERLAPS_C });
      expect(accepted.stderr).toBe("");
      expect(accepted.code).toBe(0);
      await lj(["gc"], { LIGHTJAIL_ROOT: rootC, LJ_SUBNET: SUBNET_C });
    } finally {
      ownerC.proc.kill("SIGKILL");
      envC.cleanup();
    }
  },
  60_000,
);

rootTest(
  "gc of any root removes the table of a root that was deleted, once nothing of it is left",
  async () => {
    const rootE = mkdtempSync(join(tmpdir(), "lj-test-e-"));
    const envE: JailEnv = {
      ...a,
      root: rootE,
      cleanup: () => rmSync(rootE, { recursive: true, force: true }),
    };
    const cfgE = netConfig({ LIGHTJAIL_ROOT: rootE, LJ_SUBNET: "10.252.0.0/24" });
    const ownerE = await owner(envE, "10.252.0.0/24");
    try {
      expect(sh(`nft list table ${cfgE.table}`).code).toBe(0);
      // While the root exists (even with its owner dead), another root's gc leaves its table.
      await kill(ownerE.proc);
      const kept = await lj(["gc"], { LIGHTJAIL_ROOT: a.root, LJ_SUBNET: SUBNET_A });
      expect(kept.code).toBe(0);
      expect(sh(`nft list table ${cfgE.table}`).code).toBe(0);
      envE.cleanup();
      const gc = await lj(["gc"], { LIGHTJAIL_ROOT: a.root, LJ_SUBNET: SUBNET_A });
      expect(gc.stderr).toBe("");
      expect(gc.code).toBe(0);
      expect(gc.stdout).toContain(`net-table ${cfgE.table}`);
      expect(sh(`nft list table ${cfgE.table}`).code).not.toBe(0);
    } finally {
      ownerE.proc.kill("SIGKILL");
      envE.cleanup();
    }
  },
  60_000,
);
