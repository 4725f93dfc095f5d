/**
 * Run-time limits, with real jails: the defaults a bare jail gets (its writable layers' sizes,
 * its descriptor limit, the same from `lj spawn` and the native `ljspawn`), and what the
 * supervisor tells, in `lj ps` and the app's log, about a process that runs into its pids, CPU
 * or descriptor limit.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fdColumn, limitsColumn } from "../src/cli/ps.ts";
import { cgroupLayout } from "../src/jail/cgroup.ts";
import { parseLimitCounters } from "../src/jail/cgroup-usage.ts";
import { procStat } from "../src/jail/owner.ts";
import { runJail, spawnJail } from "../src/jail/spawn.ts";
import type { JailSpec } from "../src/jail/spec.ts";
import { type Instance, type LimitsSeen, ProcessSet } from "../src/paas/supervisor.ts";
import { buildProbe, cliPath, type JailEnv, makeJailEnv, projectDir } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

let env: JailEnv;
let fdhog: string;

beforeAll(async () => {
  if (!isRoot()) return;
  env = await makeJailEnv();
  fdhog = await buildProbe(env.root, "limits/fdhog.c", "fdhog");
});
afterAll(() => env?.cleanup());

const MiB = 1024 * 1024;
const sh = (script: string, extra: Partial<JailSpec> = {}) =>
  runJail({ ...env.base, argv: ["/bin/sh", "-c", script], ...extra });

async function until<T>(what: string, get: () => T | null | undefined | false, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = get();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}

describe("a bare jail's defaults", () => {
  rootTest(
    "without a memory limit / and /tmp are 256 MiB tmpfs: writing past that fails with ENOSPC",
    async () => {
      const r = await sh(
        "df -k / /tmp | tail -n 2; head -c 300000000 /dev/zero > /tmp/big; echo tmp=$?; rm -f /tmp/big; " +
          "head -c 300000000 /dev/zero > /big; echo root=$?",
      );
      expect(r.status).toBe(0);
      const sizes = r.stdout
        .split("\n")
        .slice(0, 2)
        .map((l) => Number(l.split(/\s+/)[1]));
      expect(sizes).toEqual([262144, 262144]);
      expect(r.stdout).toContain("tmp=1\n");
      expect(r.stdout).toContain("root=1\n");
      expect(r.stderr.match(/No space left on device/g)?.length).toBe(2);
      // With a memory limit each is as large as the limit; a spec's own sizes win.
      const limited = await sh("df -k / /tmp | tail -n 2", { limits: { memoryBytes: 64 * MiB } });
      expect(
        limited.stdout
          .split("\n")
          .slice(0, 2)
          .map((l) => Number(l.split(/\s+/)[1])),
      ).toEqual([65536, 65536]);
      const own = await sh("df -k / /tmp | tail -n 2", { upperBytes: 8 * MiB, tmpBytes: 4 * MiB });
      expect(
        own.stdout
          .split("\n")
          .slice(0, 2)
          .map((l) => Number(l.split(/\s+/)[1])),
      ).toEqual([8192, 4096]);
    },
  );

  rootTest("RLIMIT_NOFILE is 1024 soft and 4096 hard, not the owner's; a spec sets its own", async () => {
    expect((await sh("ulimit -Sn; ulimit -Hn")).stdout).toBe("1024\n4096\n");
    expect((await sh("ulimit -Sn; ulimit -Hn", { rlimits: { nofile: [100, 200] } })).stdout).toBe(
      "100\n200\n",
    );
    expect((await sh("ulimit -Sn; ulimit -Hn", { rlimits: { nofile: 300 } })).stdout).toBe("300\n300\n");
  });

  rootTest(
    "lj spawn and the native ljspawn give the same limits and sizes, with and without -m",
    async () => {
      const native = join(projectDir, "zig", "zig-out", "bin", "ljspawn");
      const script = "ulimit -Sn; ulimit -Hn; df -k / /tmp | tail -n 2 | awk '{print $2}'";
      const outputs: string[] = [];
      for (const extra of [[], ["-m", "96"]]) {
        for (const cmd of [[native], [process.execPath, cliPath, "spawn"]]) {
          const p = Bun.spawn([...cmd, "--world", "test", ...extra, "-p", script], {
            stdio: ["ignore", "pipe", "inherit"],
            env: { ...process.env, LIGHTJAIL_ROOT: env.root },
          });
          const out = await new Response(p.stdout).text();
          expect(await p.exited).toBe(0);
          outputs.push(out);
        }
      }
      expect(outputs).toEqual([
        "1024\n4096\n262144\n262144\n",
        "1024\n4096\n262144\n262144\n",
        "1024\n4096\n98304\n98304\n",
        "1024\n4096\n98304\n98304\n",
      ]);
    },
  );
});

describe("the CPU quota", () => {
  /** CPU time (µs) the cgroup's processes used: v2 counts it in cpu.stat, v1's cpu controller not. */
  function cpuUsedUs(dir: string): number {
    const stat = readFileSync(join(dir, "cpu.stat"), "utf8");
    const usage = /^usage_usec (\d+)$/m.exec(stat);
    if (usage) return Number(usage[1]);
    let ticks = 0;
    for (const pid of readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) {
      const st = procStat(Number(pid));
      if (st) ticks += st.utime + st.stime;
    }
    return (ticks * 1_000_000) / 100; // USER_HZ
  }

  rootTest("a spinning jail with cpus 0.5 gets about half a CPU, and is throttled", async () => {
    const layout = cgroupLayout()!;
    const jail = spawnJail({
      ...env.base,
      argv: ["/bin/sh", "-c", "while :; do :; done"],
      limits: { cpus: 0.5 },
      stdio: ["ignore", "ignore", "ignore"],
    });
    try {
      const base = layout.version === 2 ? layout.unified! : layout.cpu!;
      const dir = jail.cgroups.find((d) => d.startsWith(`${base}/`))!;
      // The jail's cgroup is made and joined off the event loop: wait for the jail in it.
      await until(
        "the jail in its cgroup",
        () => existsSync(dir) && readFileSync(join(dir, "cgroup.procs"), "utf8"),
      );
      const quota = readFileSync(join(dir, layout.version === 2 ? "cpu.max" : "cpu.cfs_quota_us"), "utf8");
      expect(quota.trim()).toBe(layout.version === 2 ? "50000 100000" : "50000");
      const [u0, t0] = [cpuUsedUs(dir), performance.now()];
      await Bun.sleep(4000);
      const [u1, t1] = [cpuUsedUs(dir), performance.now()];
      const share = (u1 - u0) / ((t1 - t0) * 1000);
      // The quota caps it at half (a little over, for the period in progress); a busy machine
      // may give it less, but it does run.
      expect(share).toBeLessThan(0.65);
      expect(share).toBeGreaterThan(0.1);
      const throttled = /^nr_throttled (\d+)$/m.exec(readFileSync(join(dir, "cpu.stat"), "utf8"));
      expect(Number(throttled?.[1])).toBeGreaterThan(5);
    } finally {
      jail.kill("SIGKILL");
      await jail.closed;
    }
    for (const d of jail.cgroups) expect(existsSync(d)).toBe(false);
  });
});

describe("the supervisor tells when a process hits its limits", () => {
  /** One instance of a process type "worker" (no port: up once started) running `spec`. */
  function supervise(spec: Partial<JailSpec>, sampleMs = 100) {
    const log: string[] = [];
    const set = new ProcessSet(
      "limits",
      1,
      () => ({ ...env.base, stdio: ["ignore", "pipe", "pipe"], argv: ["/bin/true"], ...spec }),
      { log: (source, line) => log.push(`${source}: ${line}`), changed: () => {}, sampleMs },
      10_000,
    );
    return { set, log, said: (text: string) => log.find((l) => l.includes(text)) };
  }
  const limitsOf = (inst: Instance): LimitsSeen => inst.info().limits!;

  rootTest("a process that forks past its pids limit shows it in ps info and the app's log", async () => {
    const { set, said } = supervise({
      argv: ["/bin/sh", "-c", "i=0; while [ $i -lt 100 ]; do sleep 60 & i=$((i+1)); done; sleep 60"],
      limits: { pids: 16 },
    });
    try {
      const [inst] = await set.scale({ worker: 1 });
      await until("the log line", () => said("lj: worker.1 (v1) hit its pids limit (16)"));
      expect(limitsOf(inst!).pidsRefused).toBeGreaterThan(0);
      expect(limitsOf(inst!).cpuThrottled).toBe(0);
      expect(limitsColumn(limitsOf(inst!))).toMatch(/^pids \(\d+ forks refused\)$/);
    } finally {
      await set.stop();
    }
  });

  rootTest("refused forks are seen at the end of a run shorter than a sample", async () => {
    const { set, said } = supervise(
      {
        argv: ["/bin/sh", "-c", "i=0; while [ $i -lt 60 ]; do sleep 60 & i=$((i+1)); done"],
        limits: { pids: 12 },
      },
      600_000,
    );
    try {
      const [inst] = await set.scale({ worker: 1 });
      await until("the log line", () => said("worker.1 (v1) hit its pids limit (12)"));
      // The shell gives up when its fork is refused, and ends the run.
      await until("the exit", () => said("worker.1 (v1) exited with status"));
      expect(limitsOf(inst!).pidsRefused).toBeGreaterThan(0);
    } finally {
      await set.stop();
    }
  });

  rootTest("a CPU-bound process with a small quota shows as throttled", async () => {
    const { set, said } = supervise({
      argv: ["/bin/sh", "-c", "while :; do :; done"],
      limits: { cpus: 0.05, pids: 8 },
    });
    try {
      const [inst] = await set.scale({ worker: 1 });
      const line = await until("the log line", () => said("worker.1 (v1) was CPU-throttled"));
      expect(line).toMatch(/was CPU-throttled \d+ times \(its quota: 0\.05 CPU\)$/);
      await until("more throttling", () => limitsOf(inst!).cpuThrottled > 2);
      expect(limitsOf(inst!).cpuThrottledMs).toBeGreaterThan(0);
      expect(limitsOf(inst!).pidsRefused).toBe(0);
      expect(limitsColumn(limitsOf(inst!))).toMatch(/^cpu \(throttled \d+x, \d+\.\d s\)$/);
    } finally {
      await set.stop();
    }
  });

  rootTest("a process that opens files up to its RLIMIT_NOFILE shows fd exhaustion", async () => {
    const hog = { src: fdhog, dst: "/fdhog", readonly: true };
    const { set, log, said } = supervise({
      argv: ["/fdhog"],
      mounts: [...(env.base.mounts ?? []), hog],
      limits: { pids: 8 },
      rlimits: { nofile: 64 },
    });
    const calm = supervise({
      argv: ["/bin/sh", "-c", "exec sleep 60"],
      limits: { pids: 8 },
      rlimits: { nofile: 64 },
    });
    try {
      const [inst] = await set.scale({ worker: 1 });
      const [quiet] = await calm.set.scale({ worker: 1 });
      // 0, 1 and 2 are open already: the program itself opens the other 61.
      await until("its output", () => said("worker.1: opened 61, then EMFILE")).catch((e) => {
        throw new Error(`${e.message}: ${log.join("\n")}`);
      });
      await until("the log line", () => said("lj: worker.1 (v1) used all 64 file descriptors"));
      expect(limitsOf(inst!)).toMatchObject({ fds: 64, fdLimit: 64, fdsExhausted: true });
      expect(fdColumn(limitsOf(inst!))).toBe("64/64");
      expect(limitsColumn(limitsOf(inst!))).toBe("fds (all used)");
      expect(log.filter((l) => l.includes("file descriptors"))).toHaveLength(1); // said once
      // A process well below its limit: its use shows, nothing is said.
      await until("a sample", () => limitsOf(quiet!).fds !== null);
      expect(limitsOf(quiet!)).toMatchObject({ fdLimit: 64, fdsExhausted: false });
      expect(limitsOf(quiet!).fds).toBeLessThan(10);
      expect(calm.log.filter((l) => l.startsWith("lj: "))).toEqual([]);
    } finally {
      await Promise.all([set.stop(), calm.set.stop()]);
    }
  });
});

test("lj ps columns for what a run's limits held back", () => {
  const none: LimitsSeen = {
    pidsRefused: 0,
    cpuThrottled: 0,
    cpuThrottledMs: 0,
    fds: null,
    fdLimit: null,
    fdsExhausted: false,
  };
  expect(limitsColumn(null)).toBe("-");
  expect(limitsColumn(none)).toBe("-");
  expect(fdColumn(none)).toBe("-");
  expect(fdColumn({ ...none, fds: 12, fdLimit: 16384 })).toBe("12/16384");
  expect(
    limitsColumn({ ...none, pidsRefused: 3, cpuThrottled: 40, cpuThrottledMs: 1234, fdsExhausted: true }),
  ).toBe("pids (3 forks refused), cpu (throttled 40x, 1.2 s), fds (all used)");
});

test("limit counters read the same from cgroup v1 and v2 files", () => {
  const v2 =
    "usage_usec 9000\nuser_usec 8000\nsystem_usec 1000\nnr_periods 50\nnr_throttled 12\nthrottled_usec 345678\nnr_bursts 0\nburst_usec 0\n";
  expect(parseLimitCounters(2, "max 3\n", v2)).toEqual({
    pidsRefused: 3,
    throttled: 12,
    throttledUs: 345678,
  });
  const v1 = "nr_periods 50\nnr_throttled 7\nthrottled_time 2500000\nnr_bursts 0\nburst_time 0\n";
  expect(parseLimitCounters(1, "max 0\n", v1)).toEqual({ pidsRefused: 0, throttled: 7, throttledUs: 2500 });
  // Files not there (no such controller, the cgroup gone) count nothing.
  expect(parseLimitCounters(2, "", "")).toEqual({ pidsRefused: 0, throttled: 0, throttledUs: 0 });
});
