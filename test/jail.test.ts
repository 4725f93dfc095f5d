/**
 * The Linux jail core, end to end: real namespaces, overlayfs, cgroups and the keeper. Each test
 * is a property a jail must keep; each fails if that property breaks.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { basename, join } from "node:path";
import { cgroupLayout } from "../src/jail/cgroup.ts";
import { removeStock } from "../src/jail/cgroup-stock.ts";
import { leftoverMounts } from "../src/jail/gc.ts";
import { ownerId, procStat } from "../src/jail/owner.ts";
import { type JailResult, runJail, spawnJail } from "../src/jail/spawn.ts";
import type { JailSpec } from "../src/jail/spec.ts";
import { buildProbe, cliPath, type JailEnv, lj, makeJailEnv, projectDir } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

let env: JailEnv;
let probe: string;

beforeAll(async () => {
  if (!isRoot()) return;
  env = await makeJailEnv();
  probe = await buildProbe(env.root);
});
afterAll(() => env?.cleanup());

const sh = (script: string, extra: Partial<JailSpec> = {}) =>
  runJail({
    ...env.base,
    argv: ["/bin/sh", "-c", script],
    ...extra,
    mounts: [...(env.base.mounts ?? []), ...(extra.mounts ?? [])],
  });

function lines(s: string): string[] {
  return s.split("\n").filter(Boolean);
}

/** Host pids whose command line contains `marker`. */
function hostPidsWith(marker: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, "utf8").includes(marker)) out.push(Number(d));
    } catch {}
  }
  return out;
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

describe("isolation", () => {
  rootTest("pid 1 is the keeper and only the jail's processes are visible", async () => {
    const r = await sh("echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '");
    expect(r.status).toBe(0);
    const [self, visible] = lines(r.stdout);
    // The payload: the keeper is 1, and the cgroup placer (when there are limits to write) took 2.
    expect([2, 3]).toContain(Number(self));
    const pids = visible!.trim().split(" ").map(Number);
    expect(pids[0]).toBe(1);
    expect(pids.length).toBeLessThanOrEqual(6); // keeper, sh, ls, grep, sort, tr: nothing of the host
    expect(pids.every((p) => p < 10)).toBe(true);
  });

  rootTest("hostname is the jail's, and the host's is unchanged", async () => {
    const before = hostname();
    const r = await sh("hostname", { hostname: "jailbox" });
    expect(r.stdout.trim()).toBe("jailbox");
    expect(hostname()).toBe(before);
  });

  rootTest("host files outside the world are invisible", async () => {
    const marker = join(projectDir, "package.json");
    const r = await sh(
      `ls -A /root /home; test -e ${marker} && echo LEAK; test -e /etc/shadow && echo SHADOW; ls /work 2>&1; echo end`,
    );
    expect(r.stdout).not.toContain("LEAK");
    expect(r.stdout).not.toContain("SHADOW");
    expect(r.stdout).toContain("No such file");
    expect(lines(r.stdout).at(-1)).toBe("end");
    // Not one of the host's mounts is left in the payload's mount table: the old root was
    // detached before it started (its first instruction reads the table).
    const mounts = await runJail({ ...env.base, argv: ["/bin/cat", "/proc/self/mountinfo"] });
    const points = lines(mounts.stdout).map((l) => l.split(" ")[4]);
    expect(points[0]).toBe("/");
    expect(points.filter((p) => p === "/")).toHaveLength(1);
    const given = (env.base.mounts ?? []).map((m) => m.dst);
    for (const p of points) if (!given.includes(p!)) expect(p).toMatch(/^\/(proc|dev|tmp)?(\/|$)/);
    expect(mounts.stdout).not.toContain("cgroup");
  });

  rootTest("a read-only bind mount is read-only all the way down, mounts under its source too", async () => {
    const src = join(env.root, "bind-src");
    mkdirSync(join(src, "inner"), { recursive: true });
    const mounted = Bun.spawnSync(["mount", "-t", "tmpfs", "lj-test-inner", join(src, "inner")]);
    expect(mounted.exitCode).toBe(0);
    try {
      const script = "touch /data/top 2>&1; touch /data/inner/below 2>&1; echo done";
      const ro = await sh(script, {
        mounts: [...(env.base.mounts ?? []), { src, dst: "/data", readonly: true }],
      });
      expect(lines(ro.stdout).filter((l) => l.includes("Read-only file system"))).toHaveLength(2);
      expect(existsSync(join(src, "top")) || existsSync(join(src, "inner", "below"))).toBe(false);
      // A writable bind carries the mount under it (the jail writes into that tmpfs).
      const rw = await sh(script, { mounts: [...(env.base.mounts ?? []), { src, dst: "/data" }] });
      expect(rw.stdout).toBe("done\n");
      expect(existsSync(join(src, "inner", "below"))).toBe(true);
    } finally {
      Bun.spawnSync(["umount", join(src, "inner")]);
      rmSync(src, { recursive: true, force: true });
    }
  });

  rootTest("a read-only -d root cannot be written, and keeps no host mount either", async () => {
    const r = await runJail({
      root: env.base.layers![0]!,
      rootReadonly: true,
      mounts: env.base.mounts,
      argv: ["/bin/sh", "-c", "touch /lj-ro-probe 2>&1; cat /proc/self/mountinfo"],
    });
    expect(r.stdout).toContain("Read-only file system");
    expect(existsSync(join(env.base.layers![0]!, "lj-ro-probe"))).toBe(false);
    expect(r.stdout).not.toContain("cgroup");
  });

  rootTest("the world stays read-only and unchanged; writes land in a throwaway upper", async () => {
    const before = readFileSync(join(env.world, "etc/hostname"), "utf8");
    const r = await sh(
      "echo changed > /etc/hostname && cat /etc/hostname; touch /usr/bin/lj-probe 2>&1; echo x > /newfile && echo wrote",
    );
    expect(r.stdout).toContain("changed");
    expect(r.stdout).toContain("wrote");
    expect(r.stdout + r.stderr).toContain("Read-only file system");
    expect(readFileSync(join(env.world, "etc/hostname"), "utf8")).toBe(before);
    expect(existsSync(join(env.world, "newfile"))).toBe(false);
    expect(existsSync("/usr/bin/lj-probe")).toBe(false);
    const again = await sh("cat /newfile 2>&1; cat /etc/hostname");
    expect(again.stdout).toContain("No such file");
    expect(again.stdout).not.toContain("changed");
  });

  rootTest("`..` and /proc/1/root do not leave the root", async () => {
    const r = await sh(
      "cd /; cd ../../..; pwd; ls / | sort | md5sum; ls /../.. | sort | md5sum; ls /proc/1/root/ 2>&1 | head -1; readlink /proc/self/root",
    );
    const [pwd, a, b, proc1, selfRoot] = lines(r.stdout);
    expect(pwd).toBe("/");
    expect(a).toBe(b!);
    expect(proc1).toContain("Permission denied");
    expect(selfRoot).toBe("/");
  });

  rootTest("no capabilities, no_new_privs and seccomp are in force", async () => {
    const r = await sh(
      "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    const s = Object.fromEntries(lines(r.stdout).map((l) => l.split(":\t") as [string, string]));
    for (const k of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]) expect(s[k]).toBe("0000000000000000");
    expect(s.NoNewPrivs).toBe("1");
    expect(s.Seccomp).toBe("2");
  });

  rootTest(
    "root in the jail cannot mount, mknod, change sysctls, load modules or make namespaces",
    async () => {
      const r = await runJail({
        ...env.base,
        argv: ["/probe"],
        env: { LJ_PROBE_IN_JAIL: "1" },
        mounts: [...(env.base.mounts ?? []), { src: probe, dst: "/probe", readonly: true }],
      });
      expect(r.stderr).toBe("");
      const got = Object.fromEntries(lines(r.stdout).map((l) => l.split(" ") as [string, string]));
      expect(got.mount).toBe("errno=1");
      expect(got.mknod).toBe("errno=1");
      expect(got["unshare-user"]).toBe("errno=1");
      expect(got["unshare-net"]).toBe("errno=1");
      expect(got.finit_module).toBe("errno=1");
      expect(got.chroot).toBe("errno=1");
      expect(got["sysctl-open"]).toBe("errno=30"); // EROFS: /proc/sys is read-only
      expect(got.sethostname).toBe("errno=1");
      expect(got.keyctl).toBe("errno=1");
      expect(got.bpf).toBe("errno=1");
    },
  );

  rootTest("the payload, even as root, cannot read or replace the keeper", async () => {
    const r = await sh(
      "cat /proc/1/environ >/dev/null 2>&1 && echo environ-readable; head -c1 /proc/1/mem >/dev/null 2>&1 && echo mem-readable; (echo x >> /proc/1/exe) 2>/dev/null && echo exe-writable; readlink /proc/1/exe >/dev/null 2>&1 && echo exe-visible; echo checked",
    );
    expect(r.stdout.trim()).toBe("checked");
  });

  rootTest("-0 runs as nobody (uid and gid 65534)", async () => {
    const r = await lj(["spawn", "--world", "test", "-0", "--", "id", "-u"], { LIGHTJAIL_ROOT: env.root });
    expect(r).toEqual({ code: 0, stdout: "65534\n", stderr: "" });
    const g = await sh("id -g; id -G", { uid: 65534, gid: 65534 });
    expect(lines(g.stdout)).toEqual(["65534", "65534"]);
  });

  rootTest("network none has only a working loopback", async () => {
    const r = await sh(
      "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/operstate 2>/dev/null; grep -c . /proc/net/route",
    );
    const [ifaces, ...rest] = lines(r.stdout);
    expect(ifaces).toBe("lo");
    expect(lines(r.stdout).filter((l) => l !== "lo" && !/^\d+$/.test(l) && l !== "unknown")).toEqual([]);
    expect(rest.at(-1)).toBe("1"); // only the header line: no routes
  });

  rootTest("network host shares the host's interfaces", async () => {
    const ifaces = (text: string) =>
      text
        .split("\n")
        .slice(2)
        .map((l) => l.split(":")[0]!.trim())
        .filter(Boolean)
        .sort();
    const r = await sh("cat /proc/net/dev", { net: "host" });
    expect(ifaces(r.stdout)).toEqual(ifaces(readFileSync("/proc/net/dev", "utf8")));
  });

  rootTest("core dumps are off unless the jail's rlimits allow them", async () => {
    const soft = async (extra: Partial<JailSpec> = {}) =>
      (await sh("grep 'Max core file size' /proc/self/limits", extra)).stdout.trim().split(/\s+/)[4];
    // Even when the owner itself would dump core.
    const setOwnerCore = (v: string) =>
      expect(Bun.spawnSync(["prlimit", `--pid=${process.pid}`, `--core=${v}`]).exitCode).toBe(0);
    setOwnerCore("4096:");
    try {
      expect(readFileSync("/proc/self/limits", "utf8")).toMatch(/Max core file size\s+4096/);
      expect(await soft()).toBe("0");
      expect(await soft({ rlimits: { core: [8192, 8192] } })).toBe("8192");
    } finally {
      setOwnerCore("0:");
    }
  });

  rootTest("the environment is exactly what was given", async () => {
    const r = await runJail({ ...env.base, argv: ["/usr/bin/env"], env: { A: "1", B: "two words" } });
    expect(r.stdout).toBe("A=1\nB=two words\n");
  });
});

describe("limits and lifetime", () => {
  rootTest("a memory hog is killed and reported as the memory limit", async () => {
    const r = await sh("head -c 300000000 /dev/zero | tail -c 1 >/dev/null; echo survived", {
      limits: { memoryBytes: 32 * 1024 * 1024 },
    });
    // tail buffers the stream in memory; the OOM killer ends it inside the jail.
    if (!r.stdout.includes("survived")) expect(r).toMatchObject({ reason: "oom" });
    const hog = await runJail({
      ...env.base,
      argv: ["/bin/sh", "-c", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo "$x" | wc -c'],
      limits: { memoryBytes: 48 * 1024 * 1024 },
    });
    expect(hog).toMatchObject({ reason: "oom", signal: 9, status: 137 });
    // A SIGKILL that is not the memory limit's is not reported as one.
    const killed = await sh("kill -KILL $$", { limits: { memoryBytes: 48 * 1024 * 1024 } });
    expect(killed).toMatchObject({ reason: "signal", signal: 9, status: 137 });
    const cli = await lj(
      ["spawn", "--world", "test", "-m", "48", "-p", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a)'],
      {
        LIGHTJAIL_ROOT: env.root,
      },
    );
    expect(cli.code).toBe(137);
    expect(cli.stderr).toContain("ran out of memory (limit 48 MB)");
  });

  rootTest("a fork bomb stops at the pids limit and the host stays responsive", async () => {
    // The shell gives up ("Cannot fork") when the limit bites: the last number is how far it got.
    const r = await sh("i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); echo $i; done", {
      limits: { pids: 40 },
    });
    const forked = Number(lines(r.stdout).at(-1));
    expect(forked).toBeGreaterThan(10);
    expect(forked).toBeLessThan(40);
    const bomb = await sh("f() { f | f & }; f; sleep 5", { limits: { pids: 64 }, timeoutMs: 1500 });
    expect(["timeout", "exit", "signal"]).toContain(bomb.reason);
    const t = performance.now();
    expect(await Bun.spawn(["/bin/true"]).exited).toBe(0);
    expect(performance.now() - t).toBeLessThan(2000);
  });

  rootTest(
    "cgroups made ahead of time limit the jail that takes them, and come back as good as new",
    async () => {
      // 96 MB: a set may come back with up to 4 MiB still charged (the page cache and kernel
      // objects of a fresh world that this jail was first to touch).
      const limits = { memoryBytes: 96 * 1024 * 1024, pids: 24 };
      const layout = cgroupLayout()!;
      const memBase = layout.version === 2 ? layout.unified! : layout.memory!;
      const limitFile = layout.version === 2 ? "memory.max" : "memory.limit_in_bytes";
      const memDirOf = (dirs: readonly string[]) => dirs.find((d) => d.startsWith(`${memBase}/`))!;
      const limitOf = (dirs: readonly string[]) =>
        Number(readFileSync(join(memDirOf(dirs), limitFile), "utf8"));
      // What the jails below run is read into the page cache first, outside any limit: a page
      // is charged to the cgroup that first reads it, and a set left with much charged is not
      // used again (as the end of this test shows).
      expect((await sh("sleep 0 & wait; head -c 1 /dev/zero | tr '\\0' a")).status).toBe(0);
      // The first jail with these limits makes its own cgroups; the owner then makes a stock.
      expect((await sh("true", { limits })).status).toBe(0);
      await Bun.sleep(0);
      const before = new Set(cgroupEntries());
      const jail = spawnJail({
        ...env.base,
        argv: [
          "/bin/sh",
          "-c",
          "echo up; read go; i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); echo $i; done",
        ],
        limits,
        stdio: ["pipe", "pipe", "ignore"],
      });
      const dirs = [...jail.cgroups];
      expect(dirs.length).toBe(layout.version === 2 ? 1 : 2);
      for (const d of dirs) expect(before.has(d)).toBe(true); // made before the jail was spawned
      expect(limitOf(dirs)).toBe(limits.memoryBytes);
      const reader = jail.stdout!.getReader();
      let out = new TextDecoder().decode((await reader.read()).value);
      // The jail is in them (its payload runs), and the pids limit stops its fork loop.
      for (const d of dirs)
        expect(readFileSync(`/proc/${jail.pid}/cgroup`, "utf8")).toContain(`/${basename(d)}\n`);
      // Something with the rights to (the host, here) changes the jail's memory limit meanwhile.
      writeFileSync(join(memDirOf(dirs), limitFile), String(limits.memoryBytes / 2));
      await jail.stdin!.write("go\n");
      await jail.stdin!.end();
      for (let r = await reader.read(); !r.done; r = await reader.read())
        out += new TextDecoder().decode(r.value);
      const forked = Number(lines(out).at(-1));
      expect(forked).toBeGreaterThan(10);
      expect(forked).toBeLessThan(24);
      jail.kill();
      await jail.closed;
      // The set is back in the stock, empty and with its own limit again, and a later jail gets it.
      for (const d of dirs) expect(readFileSync(join(d, "cgroup.procs"), "utf8")).toBe("");
      expect(limitOf(dirs)).toBe(limits.memoryBytes);
      let reused = false;
      for (let i = 0; i < 6 && !reused; i++) {
        const next = spawnJail({
          ...env.base,
          argv: ["/bin/true"],
          limits,
          stdio: ["ignore", "ignore", "ignore"],
        });
        reused = next.cgroups.join() === dirs.join();
        expect(next.id).not.toBe(jail.id);
        expect((await next.exited).status).toBe(0);
        await next.closed;
      }
      expect(reused).toBe(true);
      // A set whose limit was reached goes: the memory limit of a made set is reported as such,
      // and a later jail never starts with the counters of that OOM.
      const hog = spawnJail({
        ...env.base,
        argv: ["/bin/sh", "-c", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a)'],
        limits,
        stdio: ["ignore", "ignore", "ignore"],
      });
      expect(await hog.exited).toMatchObject({ reason: "oom", signal: 9, status: 137 });
      await hog.closed;
      for (const d of hog.cgroups) expect(existsSync(d)).toBe(false);
      // So does one that still has much charged to it: here the page cache of a file the jail
      // wrote to a host directory.
      const shared = join(env.root, "cgroup-residue");
      mkdirSync(shared, { recursive: true });
      const writer = spawnJail({
        ...env.base,
        argv: ["/bin/sh", "-c", "head -c 8000000 /dev/zero > /shared/file"],
        limits,
        mounts: [...(env.base.mounts ?? []), { src: shared, dst: "/shared" }],
        stdio: ["ignore", "ignore", "ignore"],
      });
      expect((await writer.exited).status).toBe(0);
      await writer.closed;
      expect(writer.cgroups.length).toBeGreaterThan(0);
      for (const d of writer.cgroups) expect(existsSync(d)).toBe(false);
      rmSync(shared, { recursive: true, force: true });
    },
  );

  rootTest("double-forked daemons die with the jail", async () => {
    const marker = "987123";
    const jail = spawnJail({
      ...env.base,
      argv: ["/bin/sh", "-c", `(sleep ${marker} &) ; (setsid sleep ${marker}.5 &); echo started`],
      stdio: ["ignore", "pipe", "ignore"],
    });
    expect(await new Response(jail.stdout).text()).toBe("started\n");
    await jail.exited;
    await jail.closed;
    expect(hostPidsWith(`sleep\x00${marker}`)).toEqual([]);
  });

  rootTest("SIGKILL of the owning Bun process takes the jail down", async () => {
    const script = `
      import { spawnJail } from ${JSON.stringify(join(projectDir, "src/jail/spawn.ts"))};
      const j = spawnJail({ layers: ${JSON.stringify(env.base.layers)}, mounts: ${JSON.stringify(env.base.mounts)},
        argv: ["/bin/sh", "-c", "sleep 876543"], stdio: ["ignore", "ignore", "ignore"] });
      console.log(j.pid);
      await j.exited;`;
    const owner = Bun.spawn([process.execPath, "-e", script], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, LIGHTJAIL_ROOT: env.root },
    });
    const reader = owner.stdout.getReader();
    const { value } = await reader.read();
    const keeper = Number(new TextDecoder().decode(value).trim());
    expect(keeper).toBeGreaterThan(1);
    await until("the payload to start", () => hostPidsWith("sleep\x00876543").length === 1);
    owner.kill("SIGKILL");
    await owner.exited;
    await until(
      "the jail to die",
      () => !existsSync(`/proc/${keeper}`) && hostPidsWith("sleep\x00876543").length === 0,
    );
  });

  rootTest("exit codes and signals propagate, distinctly", async () => {
    expect((await sh("exit 42")).status).toBe(42);
    const sig = await sh("kill -USR1 $$");
    expect(sig.signal).toBe(10);
    expect(sig.exitCode).toBeNull();
    expect(sig.status).toBe(138);
    const cli = await lj(["spawn", "--world", "test", "-p", "kill -TERM $$"], { LIGHTJAIL_ROOT: env.root });
    expect(cli.code).toBe(143);
    expect(cli.stderr).toContain("SIGTERM");
    const ok = await lj(["spawn", "--world", "test", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], {
      LIGHTJAIL_ROOT: env.root,
    });
    expect(ok).toEqual({ code: 3, stdout: "out\n", stderr: "err\n" });
  });

  rootTest("the payload starts with the owner's CPUs and scheduling, and so does the keeper", async () => {
    // The owner's spawning thread pins itself to its CPU for an instant (the namespace
    // makers start there): none of that may reach a jail. The program's very first
    // instructions see the owner's CPUs, policy and nice value.
    const look = await buildProbe(env.root, "sched/first-look.c", "first-look");
    const owner = readFileSync(`/proc/${process.pid}/status`, "utf8");
    const cpus = Number(
      /^Cpus_allowed_list:\s*(.*)$/m
        .exec(owner)![1]!
        .split(",")
        .reduce((n, r) => {
          const [a, b] = r.split("-").map(Number);
          return n + (b === undefined ? 1 : b - a! + 1);
        }, 0),
    );
    expect(cpus).toBeGreaterThan(1); // otherwise a pinned payload would look like any other
    const nice = procStat(process.pid)!.nice;
    const mounts = [...(env.base.mounts ?? []), { src: look, dst: "/first-look", readonly: true }];
    for (let i = 0; i < 20; i++) {
      const r = await runJail({ ...env.base, argv: ["/first-look"], mounts });
      expect({ out: r.stdout, err: r.stderr, status: r.status }).toEqual({
        out: `cpus ${cpus} policy 0 nice ${nice}\n`,
        err: "",
        status: 0,
      });
    }
    // The keeper too, once its payload runs (read from the host: it is not dumpable).
    const jail = spawnJail({
      ...env.base,
      argv: ["/bin/sh", "-c", "echo up; read x"],
      stdio: ["pipe", "pipe", "ignore"],
    });
    const reader = jail.stdout!.getReader();
    await reader.read();
    const keeper = readFileSync(`/proc/${jail.pid}/sched`, "utf8");
    expect(/^policy\s*:\s*(\d+)$/m.exec(keeper)?.[1]).toBe("0");
    expect(readFileSync(`/proc/${jail.pid}/status`, "utf8")).toContain(
      /^Cpus_allowed_list:.*$/m.exec(owner)![0],
    );
    await jail.stdin!.write("go\n");
    await jail.stdin!.end();
    expect((await jail.exited).status).toBe(0);
  });

  rootTest("cgroup moves are made cheap (favordynmods on the cgroup2 mount), unless opted out", async () => {
    const { favorDynamicMoves } = await import("../src/jail/cgroup.ts");
    expect((await sh("true", { limits: { pids: 16 } })).status).toBe(0);
    const mountinfo = readFileSync("/proc/self/mountinfo", "utf8");
    const v2 = mountinfo.split("\n").find((l) => l.includes(" - cgroup2 "));
    // Every host here (hybrid v1 or v2) has a cgroup2 mount, and its kernel knows the option.
    expect(v2).toBeDefined();
    expect(v2!.split(" - ")[1]!.split(" ")[2]!.split(",")).toContain("favordynmods");
    process.env.LJ_CGROUP_FAVORDYNMODS = "0";
    try {
      expect(favorDynamicMoves()).toBeNull();
    } finally {
      delete process.env.LJ_CGROUP_FAVORDYNMODS;
    }
  });

  rootTest("a traced jail reports every step, in order, adding up to its duration", async () => {
    const r = await runJail({ ...env.base, argv: ["/bin/true"], limits: { pids: 16 }, trace: true });
    expect(r.status).toBe(0);
    const names = (r.trace ?? []).map((s) => s.step);
    for (const step of ["owner, spawn call", "/proc", "cgroups placed", "keeper started"]) {
      expect(names).toContain(step);
    }
    // Its root was built and entered here, or ahead of time by the namespace pool.
    expect(names.includes("pivot_root") !== names.includes("root from the namespace pool")).toBe(true);
    expect(names.slice(-5)).toEqual([
      "cgroup namespace, filter, go",
      "payload identity",
      "payload executed",
      "payload ran",
      "owner noticed the end",
    ]);
    for (const s of r.trace ?? []) expect(s.ms).toBeGreaterThanOrEqual(0);
    const sum = (r.trace ?? []).reduce((a, s) => a + s.ms, 0);
    expect(Math.abs(sum - r.durationMs)).toBeLessThan(0.01);
    // Untraced jails carry no trace (and write no marks).
    expect((await sh("true")).trace).toBeUndefined();
  });

  rootTest("under cgroup v2 the kernel starts a jail in its cgroup made ahead (clone3)", async () => {
    // The first jail with new limits makes its cgroup; later ones take sets made ahead.
    const limits = { pids: 48, memoryBytes: 96 * 1024 * 1024 };
    const steps: string[][] = [];
    for (let i = 0; i < 4; i++) {
      const r = await runJail({
        ...env.base,
        argv: ["/bin/sh", "-c", "cat /proc/self/cgroup"],
        limits,
        trace: true,
      });
      expect(r.status).toBe(0);
      // Its cgroup namespace starts at its own cgroup, wherever it was placed.
      expect(r.stdout.trim()).toMatch(/^0::\/$|:\/$/m);
      steps.push((r.trace ?? []).map((s) => s.step));
    }
    const born = steps.filter((s) => s.includes("child started in its cgroup")).length;
    if (cgroupLayout()!.version === 2) expect(born).toBeGreaterThanOrEqual(2);
    else expect(born).toBe(0);
    for (const s of steps) expect(s).toContain("cgroups placed");
  });

  for (const sig of ["SIGINT", "SIGHUP", "SIGQUIT", "SIGTERM"] as const) {
    rootTest(`${sig} sent to lj spawn reaches the jailed process`, async () => {
      const name = sig.slice(3);
      const p = Bun.spawn(
        [
          process.execPath,
          join(projectDir, "src/cli/lj.ts"),
          "spawn",
          "--world",
          "test",
          "-p",
          `trap 'echo got ${name}; exit 7' ${name}; echo ready; while :; do sleep 0.05; done`,
        ],
        { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LIGHTJAIL_ROOT: env.root } },
      );
      const reader = p.stdout.getReader();
      let out = "";
      while (!out.includes("ready")) {
        const { value, done } = await reader.read();
        if (done) break;
        out += new TextDecoder().decode(value);
      }
      p.kill(sig);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        out += new TextDecoder().decode(value);
      }
      expect(await p.exited).toBe(7);
      expect(out).toBe(`ready\ngot ${name}\n`);
    });
  }

  rootTest(
    "one Bun process runs 200 jails at once without blocking its event loop",
    async () => {
      const jails = Array.from({ length: 200 }, () =>
        spawnJail({
          ...env.base,
          argv: ["/bin/sh", "-c", "read line; echo got $line"],
          stdio: ["pipe", "pipe", "ignore"],
        }),
      );
      // While all 200 wait on their stdin, timers keep firing on time.
      const t = performance.now();
      await Bun.sleep(50);
      expect(performance.now() - t).toBeLessThan(1000);
      const outputs = jails.map((j) => new Response(j.stdout).text());
      jails.forEach((j, i) => {
        j.stdin!.write(`${i}\n`);
        j.stdin!.end();
      });
      expect(await Promise.all(outputs)).toEqual(jails.map((_, i) => `got ${i}\n`));
      const results = await Promise.all(jails.map((j) => j.exited));
      expect(results.every((r) => r.status === 0)).toBe(true);
      await Promise.all(jails.map((j) => j.closed));
    },
    60_000,
  );

  rootTest("SIGKILL of the owner leaves only cgroups, and lj gc removes them", async () => {
    const script = `
      import { spawnJail } from ${JSON.stringify(join(projectDir, "src/jail/spawn.ts"))};
      const j = spawnJail({ layers: ${JSON.stringify(env.base.layers)}, mounts: ${JSON.stringify(env.base.mounts)},
        argv: ["/bin/sh", "-c", "echo up; sleep 765432"], limits: { memoryBytes: 64 << 20, pids: 16 },
        stdio: ["ignore", "inherit", "ignore"] });
      await j.exited;`;
    const owner = Bun.spawn([process.execPath, "-e", script], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, LIGHTJAIL_ROOT: env.root },
    });
    const reader = owner.stdout.getReader();
    await reader.read(); // "up": the jail runs inside its cgroups
    const mine = () => cgroupEntries().filter((d) => d.split("/").at(-1)!.startsWith(`${owner.pid}.`));
    expect(mine().length).toBeGreaterThan(0);
    owner.kill("SIGKILL");
    await owner.exited;
    await until("the jail to die", () => hostPidsWith("sleep\x00765432").length === 0);
    expect(mine().length).toBeGreaterThan(0); // nobody was left to remove them
    const gc = await lj(["gc", "--json"], { LIGHTJAIL_ROOT: env.root });
    expect(gc.code).toBe(0);
    const report = JSON.parse(gc.stdout) as { removed: { kind: string; what: string }[] };
    for (const dir of mine()) expect(report.removed).toContainEqual({ kind: "cgroup", what: dir });
    expect(mine()).toEqual([]);
    const again = await lj(["gc"], { LIGHTJAIL_ROOT: env.root });
    expect(again.code).toBe(0);
  });

  rootTest("a timeout kills the jail and says so", async () => {
    const r = await sh("sleep 30", { timeoutMs: 300 });
    expect(r.reason).toBe("timeout");
    expect(r.signal).toBe(9);
  });
});

function cgroupEntries(): string[] {
  const l = cgroupLayout();
  if (!l) return [];
  return [l.unified, l.memory, l.pids, l.cpu]
    .filter((d): d is string => !!d && existsSync(d))
    .flatMap((d) =>
      readdirSync(d)
        .filter((n) => /^\d+\.\d+\.\d+$/.test(n))
        .map((n) => join(d, n)),
    );
}

describe("no leftovers", () => {
  const limited = (): JailSpec => ({
    ...env.base,
    argv: ["/bin/true"],
    limits: { memoryBytes: 64 * 1024 * 1024, pids: 32, cpus: 1 },
    stdio: ["ignore", "ignore", "ignore"],
  });

  rootTest(
    "200 sequential and 50 concurrent jails leave no mount, cgroup or process behind",
    async () => {
      // Mounts in this (the host's) namespace that name this test's root anywhere: mount
      // point, source or options (an overlay's layers). Other lightjails may mount meanwhile.
      const ourMounts = () =>
        readFileSync("/proc/self/mountinfo", "utf8")
          .split("\n")
          .filter((l) => l.includes(env.root));
      const mountsBefore = ourMounts();
      for (let i = 0; i < 200; i++) {
        const j = spawnJail(limited());
        const r = await j.exited;
        await j.closed;
        expect(r.status).toBe(0);
      }
      const jails = Array.from({ length: 50 }, () => spawnJail(limited()));
      const results: JailResult[] = await Promise.all(jails.map((j) => j.exited));
      await Promise.all(jails.map((j) => j.closed));
      expect(results.every((r) => r.status === 0)).toBe(true);
      removeStock(); // the cgroups made ahead for the next jails: no jail's
      expect(cgroupEntries().filter((d) => d.split("/").at(-1)!.startsWith(`${ownerId()}.`))).toEqual([]);
      expect(leftoverMounts(env.root)).toEqual([]);
      expect(ourMounts()).toEqual(mountsBefore);
      for (const j of jails) expect(existsSync(`/proc/${j.pid}`)).toBe(false);
    },
    120_000,
  );
});

describe("bad input", () => {
  rootTest("bad flags and a missing world give clear errors", async () => {
    const bad = await lj(["spawn", "--frobnicate"], { LIGHTJAIL_ROOT: env.root });
    expect(bad.code).toBe(64);
    expect(bad.stderr).toContain("unknown option --frobnicate");
    const missing = await lj(["spawn", "--world", "nope", "--", "true"], { LIGHTJAIL_ROOT: env.root });
    expect(missing.code).toBe(66);
    expect(missing.stderr).toContain('world "nope" does not exist');
    expect(missing.stderr).toContain("lj world create");
    const nothing = await lj(["spawn", "--world", "test"], { LIGHTJAIL_ROOT: env.root });
    expect(nothing.code).toBe(64);
    expect(nothing.stderr).toContain("nothing to run");
    const badMem = await lj(["spawn", "-m", "lots", "--", "true"], { LIGHTJAIL_ROOT: env.root });
    expect(badMem.code).toBe(64);
    expect(badMem.stderr).toContain("-m needs a positive whole number");
    const noCmd = await lj(["spawn", "--world", "test", "--", "/no/such/program"], {
      LIGHTJAIL_ROOT: env.root,
    });
    expect(noCmd.code).toBe(71);
    expect(noCmd.stderr).toContain("exec /no/such/program: ENOENT");
    const noDir = await lj(["spawn", "-d", "/no/such/dir", "-p", "true"], { LIGHTJAIL_ROOT: env.root });
    expect(noDir.code).toBe(71);
    expect(noDir.stderr).toContain("/no/such/dir");
  });
});

describe("user namespaces", () => {
  rootTest("with --userns, root in the jail is an unprivileged uid on the host", async () => {
    const { chmodSync, mkdtempSync, statSync, writeFileSync, rmSync } = await import("node:fs");
    chmodSync(env.root, 0o755); // the mapped uid must be able to reach the layers
    const r = await sh(
      "cat /proc/self/uid_map; id -u; cat /proc/self/status | grep CapEff; echo x > /tmp/f && echo wrote",
      { userns: true },
    );
    expect(r).toMatchObject({ status: 0, stderr: "" });
    const [map, uid, caps, wrote] = lines(r.stdout);
    // The owner places a user-namespaced jail in its cgroups (the jail has no rights there).
    const limited = spawnJail({ ...env.base, argv: ["sleep", "30"], userns: true, limits: { pids: 32 } });
    // /proc/PID/cgroup: "N:pids:/lightjail/ID" per v1 hierarchy, "0::/lightjail/ID" under v2.
    const placed =
      cgroupLayout()!.version === 2
        ? /^0::\/lightjail\/\d+\.\d+\.\d+$/m
        : /^\d+:pids:\/lightjail\/\d+\.\d+\.\d+$/m;
    await until("the jail to be placed", () =>
      placed.test(readFileSync(`/proc/${limited.pid}/cgroup`, "utf8")),
    );
    limited.kill("SIGKILL");
    await limited.closed;
    expect(map!.trim().split(/\s+/)).toEqual(["0", "100000", "65536"]);
    expect(uid).toBe("0");
    expect(caps).toBe("CapEff:\t0000000000000000");
    expect(wrote).toBe("wrote");
    // Files the host keeps from root stay out of reach, even through a bind mount.
    const secretDir = mkdtempSync(join(env.root, "secret-"));
    chmodSync(secretDir, 0o755);
    const secret = join(secretDir, "key");
    writeFileSync(secret, "s3cret", { mode: 0o600 });
    const denied = await sh("cat /secret 2>&1; echo done", {
      userns: true,
      mounts: [{ src: secret, dst: "/secret", readonly: true }],
    });
    expect(denied.stdout).toContain("Permission denied");
    expect(denied.stdout).not.toContain("s3cret");
    // What the jail writes to an upper directory belongs to the mapped uid on the host.
    const upper = join(env.root, "upper-userns");
    const w = await sh("echo hi > /made-here", { userns: true, upper });
    expect(w.status).toBe(0);
    expect(statSync(join(upper, "made-here")).uid).toBe(100000);
    rmSync(upper, { recursive: true, force: true });
    rmSync(secretDir, { recursive: true, force: true });
  });
});

describe("gc of mounts", () => {
  rootTest("lj gc detaches mounts a dead owner left under the run directory, and no live one", async () => {
    const { mkdirSync } = await import("node:fs");
    const { ownerId } = await import("../src/jail/owner.ts");
    const run = join(env.root, "run");
    const dead = join(run, "stage", "1.1.1", "root"); // pid 1 never started at time 1
    const live = join(run, "stage", `${ownerId()}.999`, "root");
    for (const d of [dead, live]) {
      mkdirSync(d, { recursive: true });
      expect(Bun.spawnSync(["mount", "-t", "tmpfs", "lj-gc-test", d]).exitCode).toBe(0);
    }
    try {
      expect(leftoverMounts(run)).toEqual([dead]);
      const gc = await lj(["gc", "--json"], { LIGHTJAIL_ROOT: env.root });
      expect(gc.code).toBe(0);
      expect(JSON.parse(gc.stdout).removed).toContainEqual({ kind: "mount", what: dead });
      expect(leftoverMounts(run)).toEqual([]);
      expect(readFileSync("/proc/self/mountinfo", "utf8")).toContain(live);
    } finally {
      Bun.spawnSync(["umount", "-l", live]);
      Bun.spawnSync(["umount", "-l", dead]);
    }
  });
});

describe("native ljspawn", () => {
  const native = join(projectDir, "zig", "zig-out", "bin", "ljspawn");
  const run = async (cmd: string[], args: string[]) => {
    const p = Bun.spawn([...cmd, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LIGHTJAIL_ROOT: env.root },
    });
    const [stdout, stderr, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    return { code, stdout, stderr: stderr.replaceAll(/^(lj|ljspawn): /gm, "PROG: ") };
  };
  const cases: string[][] = [
    ["--world", "test", "-n", "box", "-p", "hostname; id -u; echo err >&2; exit 3"],
    ["--world", "test", "-0", "--env", "A=1", "--", "/usr/bin/env"],
    ["--world", "test", "-p", "kill -TERM $$"],
    ["--world", "test", "-m", "48", "-p", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a)'],
    ["--world", "test", "--timeout", "0.2", "--", "sleep", "5"],
    ["--world", "test", "--", "/no/such/program"],
    ["--world", "test", "--json", "--", "sh", "-c", "exit 4"],
    [
      "--world",
      "test",
      "--mount",
      `${projectDir}/package.json:/pkg.json:ro`,
      "-p",
      "head -c 1 /pkg.json; touch /pkg.json 2>&1 | grep -c Read-only",
    ],
    ["--frobnicate"],
    ["--world", "nope", "--", "true"],
    ["--world", "test", "-m", "zero", "--", "true"],
  ];
  rootTest("--trace shows where a jail's time went, from either ljspawn", async () => {
    for (const cmd of [[native], [process.execPath, cliPath, "spawn"]]) {
      const human = await run(cmd, ["--world", "test", "--trace", "--", "true"]);
      expect(human.code).toBe(0);
      expect(human.stderr).toContain("PROG: where the time went (ms)");
      expect(human.stderr).toMatch(/\n {2}payload ran +\d+\.\d{3}\n/);
      expect(human.stderr).toMatch(/\n {2}total +\d+\.\d{3}\n$/);
      const json = await run(cmd, ["--world", "test", "--trace", "--json", "--", "true"]);
      const r = JSON.parse(json.stdout) as JailResult;
      expect(r.trace?.map((t) => t.step)).toContain("pivot_root");
    }
  });

  rootTest(
    "the native ljspawn sets limits itself, on cgroup v1 and v2 alike (no hand-off to Bun)",
    async () => {
      const hog = 'x=$(head -c 200000000 /dev/zero | tr "\\0" a)';
      const p = Bun.spawn([native, "--world", "test", "-m", "48", "--pids", "32", "-p", hog], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, LIGHTJAIL_ROOT: env.root, LJ_BUN: "/nonexistent" },
      });
      const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
      expect({ code, err }).toEqual({
        code: 137,
        err: "ljspawn: the jail ran out of memory (limit 48 MB)\n",
      });
    },
  );

  for (const args of cases) {
    rootTest(`ljspawn ${args.join(" ")} behaves exactly like lj spawn`, async () => {
      const fast = await run([native], args);
      const ts = await run([process.execPath, cliPath, "spawn"], args);
      if (args.includes("--json")) {
        expect(JSON.parse(fast.stdout)).toMatchObject({
          status: JSON.parse(ts.stdout).status,
          reason: JSON.parse(ts.stdout).reason,
          exitCode: JSON.parse(ts.stdout).exitCode,
        });
        expect(fast.code).toBe(ts.code);
      } else {
        expect(fast).toEqual(ts);
      }
    });
  }
});

describe("jail pools", () => {
  rootTest(
    "a pool's jails run the payload given at start, each in a fresh jail, and close cleanly",
    async () => {
      const { JailPool } = await import("../src/jail/pool.ts");
      const pool = new JailPool(
        {
          ...env.base,
          argv: ["/bin/false"],
          hostname: "pooled",
          limits: { memoryBytes: 64 * 1024 * 1024, pids: 32 },
          stdio: ["ignore", "pipe", "pipe"],
        },
        { size: 2 },
      );
      const run = async (script: string, extra: Record<string, unknown> = {}) => {
        const j = pool.spawn({ argv: ["/bin/sh", "-c", script], env: { WHO: "payload" }, ...extra });
        const [out, r] = await Promise.all([new Response(j.stdout).text(), j.exited]);
        await j.closed;
        return { out, r };
      };
      const first = await run(
        "echo $(hostname) $WHO $(env | cut -d= -f1 | sort | tr '\\n' ' ')$$; touch /tmp/mark; id -u",
      );
      expect(first.r.status).toBe(0);
      // The payload's env (plus the shell's PWD); its pid follows the keeper's and its helpers'.
      expect(first.out).toMatch(/^pooled payload PWD WHO [23]\n0\n$/);
      const second = await run("test -e /tmp/mark && echo reused || echo fresh", { uid: 65534, gid: 65534 });
      expect(second.out).toBe("fresh\n");
      // The pool's jails wait with the filter installed: a payload cannot drop it.
      expect(() => pool.spawn({ argv: ["true"], seccomp: false })).toThrow("seccomp filter");
      const limited = await run('x=$(head -c 200000000 /dev/zero | tr "\\0" a)');
      expect(limited.r.reason).toBe("oom");
      const timed = pool.spawn({ argv: ["sleep", "30"] });
      const slow = await runJail({ ...env.base, argv: ["sleep", "0.3"] }); // the pool jail waits meanwhile
      expect(slow.status).toBe(0);
      timed.kill("SIGTERM");
      expect((await timed.exited).signal).toBe(15);
      await timed.closed; // its cgroups go once the kernel has torn the jail down
      await pool.close();
      removeStock();
      expect(cgroupEntries().filter((d) => d.split("/").at(-1)!.startsWith(`${ownerId()}.`))).toEqual([]);
      expect(() => pool.spawn({ argv: ["true"] })).toThrow("closed");
    },
  );
});

describe("descriptors", () => {
  rootTest("a jail waiting to start holds no other jail's pipes: stdin EOF still arrives", async () => {
    const reader = spawnJail({
      ...env.base,
      argv: ["/bin/sh", "-c", "cat >/dev/null; echo eof"],
      stdio: ["pipe", "pipe", "ignore"],
    });
    // Made after the first, so a child that kept copies of the owner's descriptors would
    // hold the first jail's stdin open while it waits.
    const waiting = spawnJail({ ...env.base, argv: ["/bin/true"] }, { hold: true });
    reader.stdin!.end();
    expect(await new Response(reader.stdout).text()).toBe("eof\n");
    expect((await reader.exited).status).toBe(0);
    waiting.start();
    expect((await waiting.exited).status).toBe(0);
  });
});

describe("namespace pool", () => {
  rootTest(
    "roots built ahead of time are fresh for every jail and follow a layer or bind source replaced at its path",
    async () => {
      const { makeMiniWorld } = await import("../bench/mini-world.ts");
      const mini = makeMiniWorld(join(env.root, "pool-world"));
      const layer = join(env.root, "pool-layer");
      const bound = join(env.root, "pool-bound");
      const writeLayer = (v: string) => {
        rmSync(layer, { recursive: true, force: true });
        mkdirSync(join(layer, "etc"), { recursive: true });
        writeFileSync(join(layer, "etc", "v"), `${v}\n`);
      };
      const writeBound = (v: string) => {
        rmSync(bound, { recursive: true, force: true });
        mkdirSync(bound);
        writeFileSync(join(bound, "w"), `${v}\n`);
      };
      // Each jail reads the layer's file, reports what an earlier jail left, leaves marks, and
      // lists its mount points (the maker pivoted into the root: the host's must all be gone).
      const script =
        "read v < /etc/v; echo $v; read w < /m/w; echo $w; for f in /etc/mark /tmp/mark /dev/mark; do test -e $f && echo seen $f; done; " +
        "echo x > /etc/mark; echo x > /tmp/mark; echo x > /dev/mark; " +
        "while read id parent dev sub point rest; do echo mount $point; done < /proc/self/mountinfo";
      // At least 8 jails, and more (up to 40) until two have taken a root the pool built: on a
      // loaded machine a maker can take longer than a jail, so the first few may find none.
      const round = async () => {
        const outs: string[] = [];
        let pooled = 0;
        while (outs.length < 8 || (pooled < 2 && outs.length < 40)) {
          const r = await runJail({
            layers: [mini, layer],
            mounts: [{ src: bound, dst: "/m", readonly: true }],
            argv: ["/bin/sh", "-c", script],
            trace: true,
          });
          expect(r.status).toBe(0);
          const points = lines(r.stdout).filter((l) => l.startsWith("mount "));
          expect(points[0]).toBe("mount /");
          expect(points.filter((p) => p === "mount /")).toHaveLength(1);
          for (const p of points) expect(p).toMatch(/^mount \/(proc|dev|tmp|m)?(\/|$)/);
          outs.push(r.stdout.replace(/^mount .*\n/gm, ""));
          if (r.trace?.some((s) => s.step === "root from the namespace pool")) pooled += 1;
        }
        return { outs, pooled };
      };
      writeLayer("one");
      writeBound("a");
      const first = await round();
      expect(first.outs).toEqual(Array(first.outs.length).fill("one\na\n"));
      expect(first.pooled).toBeGreaterThanOrEqual(2); // later jails took roots the pool had built
      // The same paths, new directories: roots over the old ones must go (each on its own).
      writeLayer("two");
      const second = await round();
      expect(second.outs).toEqual(Array(second.outs.length).fill("two\na\n"));
      expect(second.pooled).toBeGreaterThanOrEqual(2);
      writeBound("b");
      const third = await round();
      expect(third.outs).toEqual(Array(third.outs.length).fill("two\nb\n"));
      expect(third.pooled).toBeGreaterThanOrEqual(2);
    },
  );
});
