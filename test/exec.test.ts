/**
 * execInJail (src/jail/exec.ts, zig/src/ljexec.zig): a command run in a running jail is as
 * confined as the jail's payload: its namespaces and root, its cgroups and rlimits, the given
 * ids without capabilities, no_new_privs and the seccomp filter. Real jails, as root.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { chmodSync, readdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { type ExecOptions, execInJail, ljexecPath } from "../src/jail/exec.ts";
import { type Jail, spawnJail } from "../src/jail/spawn.ts";
import { type JailEnv, makeJailEnv } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

let env: JailEnv;
let jail: Jail;

const PATH = "/usr/local/bin:/usr/bin:/bin";
const opts = (o: Partial<ExecOptions> = {}): ExecOptions => ({
  uid: 1234,
  gid: 2345,
  env: { PATH },
  timeoutMs: 10_000,
  ...o,
});
const inJail = (script: string, o: Partial<ExecOptions> = {}) =>
  execInJail(jail, ["/bin/sh", "-c", script], opts(o));

/** The value of one field of /proc/self/status as a command in the jail sees it. */
function field(status: string, name: string): string {
  const line = status.split("\n").find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no ${name} in ${status}`);
  return line.slice(name.length + 1).trim();
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
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

const procsIn = (dir: string) => readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean);

beforeAll(async () => {
  if (!isRoot()) return;
  env = await makeJailEnv();
  // The payload leaves what it sees of its cgroup and pid where a command run in the jail
  // (and only there) can read it.
  jail = spawnJail({
    ...env.base,
    argv: [
      "/bin/sh",
      "-c",
      "mkdir -m 700 /tmp/private; cat /proc/self/cgroup > /tmp/payload-cgroup; echo $$ > /tmp/payload-pid; exec sleep 119.75",
    ],
    hostname: "execbox",
    uid: 1000,
    gid: 1000,
    limits: { pids: 64, memoryBytes: 128 * 1024 * 1024 },
    rlimits: { nofile: [123, 456] },
    stdio: ["ignore", "ignore", "ignore"],
  });
  await until(
    "the payload's files",
    async () => (await inJail("test -s /tmp/payload-pid")).code === 0,
    10_000,
  );
}, 60_000);

afterAll(async () => {
  if (jail) {
    jail.kill("SIGKILL");
    await jail.closed;
  }
  env?.cleanup();
});

describe("a command in a running jail", () => {
  rootTest("sees the jail's hostname, root and pid namespace", async () => {
    expect(jail.cgroups.length).toBeGreaterThan(0);
    const r = await inJail(
      "hostname; cat /proc/1/comm; cat /tmp/payload-pid; echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '",
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const [name, comm, payload, self, visible] = r.stdout.split("\n");
    expect(name).toBe("execbox");
    expect(hostname()).not.toBe("execbox");
    // pid 1 is the jail's keeper, not the host's init; the payload's file is the jail's own.
    expect(comm).toBe(readFileSync(`/proc/${jail.pid}/comm`, "utf8").trim());
    expect(comm).not.toBe(readFileSync("/proc/1/comm", "utf8").trim());
    expect(Number(payload)).toBeLessThan(10);
    expect(Number(self)).toBeLessThan(20);
    const pids = visible!.trim().split(" ").map(Number);
    expect(pids[0]).toBe(1);
    expect(pids).not.toContain(process.pid);
    expect(pids.every((p) => p < 50)).toBe(true);
  });

  rootTest("runs as the given ids with no capabilities, no_new_privs and the seccomp filter", async () => {
    const r = await inJail("cat /proc/self/status");
    expect(r.code).toBe(0);
    const s = r.stdout;
    expect(field(s, "Uid").split(/\s+/)).toEqual(["1234", "1234", "1234", "1234"]);
    expect(field(s, "Gid").split(/\s+/)).toEqual(["2345", "2345", "2345", "2345"]);
    expect(field(s, "Groups")).toBe("2345");
    for (const caps of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
      expect(field(s, caps)).toBe("0000000000000000");
    expect(field(s, "NoNewPrivs")).toBe("1");
    expect(field(s, "Seccomp")).toBe("2");
    // Even as uid 0 in the jail, nothing of root's power comes along.
    const root = await inJail("cat /proc/self/status", { uid: 0, gid: 0 });
    expect(field(root.stdout, "Uid").split(/\s+/)[0]).toBe("0");
    expect(field(root.stdout, "CapEff")).toBe("0000000000000000");
    expect(field(root.stdout, "CapBnd")).toBe("0000000000000000");
  });

  rootTest("is refused what the jail's filter refuses", async () => {
    // New user and mount namespaces: denied by the filter (unprivileged user namespaces are
    // allowed on the host, so only the filter stops the first).
    for (const args of [["-U"], ["-m"], ["-Ur"]]) {
      const r = await execInJail(jail, ["unshare", ...args, "true"], opts());
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain("unshare");
    }
    const host = Bun.spawnSync([
      "setpriv",
      "--reuid=1234",
      "--regid=2345",
      "--clear-groups",
      "unshare",
      "-U",
      "true",
    ]);
    expect(host.exitCode).toBe(0);
  });

  rootTest("is in the jail's cgroups and has its rlimits", async () => {
    const r = await inJail(
      "cat /proc/self/cgroup; echo --; cat /tmp/payload-cgroup; grep 'Max open files' /proc/self/limits",
    );
    expect(r.code).toBe(0);
    const [own, rest] = r.stdout.split("--\n");
    const [payload, limits] = [rest!.slice(0, own!.length), rest!.slice(own!.length)];
    expect(own).toBe(payload);
    expect(limits.trim().split(/\s+/).slice(3, 5)).toEqual(["123", "456"]);
    // As the host sees it: the command's process is in each of the jail's cgroups.
    const before = jail.cgroups.map(procsIn);
    const running = inJail("exec sleep 2.5");
    await until("the command in the jail's cgroups", () =>
      jail.cgroups.every((dir, i) => procsIn(dir).length > before[i]!.length),
    );
    expect((await running).code).toBe(0);
  });

  rootTest("gives back the command's status and output, its environment and cwd exactly", async () => {
    const r = await inJail("echo out; echo err >&2; exit 7");
    expect(r).toEqual({ code: 7, stdout: "out\n", stderr: "err\n", timedOut: false });
    expect((await inJail("kill -TERM $$")).code).toBe(128 + 15);
    const e = await execInJail(jail, ["env"], opts({ env: { PATH, GREETING: "hello world" }, cwd: "/tmp" }));
    expect(e.stdout.split("\n").filter(Boolean).sort()).toEqual(["GREETING=hello world", `PATH=${PATH}`]);
    expect((await execInJail(jail, ["pwd"], opts({ cwd: "/tmp" }))).stdout).toBe("/tmp\n");
    // The working directory is entered as the command's ids.
    expect(
      (await execInJail(jail, ["pwd"], opts({ uid: 1000, gid: 1000, cwd: "/tmp/private" }))).stdout,
    ).toBe("/tmp/private\n");
    expect(await execInJail(jail, ["pwd"], opts({ cwd: "/tmp/private" }))).toMatchObject({
      code: 125,
      stdout: "",
      stderr: "ljexec: chdir /tmp/private: EACCES\n",
    });
    // A command not found, or not executable, is the command's failure (127, 126), not ljexec's.
    const missing = await execInJail(jail, ["no-such-command"], opts());
    expect(missing.code).toBe(127);
    expect(missing.stderr).toContain("exec no-such-command: ENOENT");
    expect((await execInJail(jail, ["/etc/hostname"], opts())).code).toBe(126);
  });

  rootTest("a timeout kills the command", async () => {
    const t0 = performance.now();
    const r = await execInJail(jail, ["sleep", "31.25"], opts({ timeoutMs: 300 }));
    expect(r.timedOut).toBe(true);
    expect(r.code).toBe(128 + 9);
    expect(performance.now() - t0).toBeLessThan(3000);
    await until("the timed-out command's end", () => hostPidsWith("31.25").length === 0);
  });

  rootTest("a background process left holding the output does not hold up the result", async () => {
    const t0 = performance.now();
    const r = await inJail("sleep 3.75 & echo started");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("started\n");
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

const ljexec = (args: string[]) => {
  const p = Bun.spawnSync([ljexecPath(), ...args], { env: { PATH } });
  return { code: p.exitCode, stderr: p.stderr.toString() };
};

describe("ljexec", () => {
  rootTest("forwards TERM, INT and HUP to the command", async () => {
    for (const sig of ["TERM", "INT", "HUP"] as const) {
      const script = `trap 'echo got ${sig}; exit 3' ${sig}; echo ready; while :; do sleep 0.05; done`;
      const p = Bun.spawn(
        [
          ljexecPath(),
          "--pid",
          String(jail.pid),
          "--uid",
          "1234",
          "--gid",
          "2345",
          "--",
          "/bin/sh",
          "-c",
          script,
        ],
        { env: { PATH }, stdio: ["ignore", "pipe", "pipe"] },
      );
      const reader = p.stdout.getReader();
      const first = await reader.read();
      expect(new TextDecoder().decode(first.value)).toBe("ready\n");
      p.kill(`SIG${sig}`);
      expect(await p.exited).toBe(3);
      const rest = await reader.read();
      expect(new TextDecoder().decode(rest.value)).toBe(`got ${sig}\n`);
    }
  });

  rootTest("enters a user-namespaced jail's user namespace: its root is the range's first id", async () => {
    const base = 420000;
    chmodSync(env.root, 0o755); // its stage is reached as the range's ids
    const uj = spawnJail({
      layers: env.base.layers,
      mounts: (env.base.mounts ?? []).map((m) => ({ ...m, idmap: true })),
      userns: { uidBase: base, count: 65536 },
      env: { PATH },
      argv: ["sleep", "60"],
      stdio: ["ignore", "ignore", "ignore"],
    });
    try {
      await until(
        "the user-namespaced jail",
        async () => (await execInJail(uj, ["true"], opts({ uid: 0, gid: 0 }))).code === 0,
      );
      const r = await execInJail(
        uj,
        ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map; cat /proc/self/status"],
        opts({ uid: 0, gid: 0 }),
      );
      expect(r.code).toBe(0);
      const [uid, map] = r.stdout.split("\n");
      expect(uid).toBe("0");
      expect(map!.trim().split(/\s+/)).toEqual(["0", String(base), "65536"]);
      expect(field(r.stdout, "CapEff")).toBe("0000000000000000");
      expect(field(r.stdout, "Seccomp")).toBe("2");
    } finally {
      uj.kill("SIGKILL");
      await uj.closed;
    }
  });
});

describe("ljexec refuses", () => {
  rootTest("a pid that does not exist, or is not a jail's first process, with 125", async () => {
    const none = await execInJail({ pid: 4_000_000, cgroups: [] }, ["true"], opts());
    expect(none.code).toBe(125);
    expect(none.stderr).toBe("ljexec: no process 4000000: ESRCH\n");
    for (const pid of [process.pid, 1]) {
      const r = await execInJail({ pid, cgroups: [] }, ["true"], opts());
      expect(r.code).toBe(125);
      expect(r.stderr).toContain(`process ${pid} is not a jail's first process`);
    }
    // The payload is in the jail, but not its first process.
    const payload = hostPidsWith("sleep\u0000119.75")[0]!;
    expect(ljexec(["--pid", String(payload), "--uid", "1", "--gid", "1", "--", "true"]).stderr).toContain(
      "is not a jail's first process",
    );
  });

  rootTest("bad arguments and a cgroup it cannot join, with 125 and nothing run", async () => {
    const pid = String(jail.pid);
    expect(ljexec(["--pid", pid, "--uid", "4294967295", "--gid", "1", "--", "true"])).toEqual({
      code: 125,
      stderr: "ljexec: --uid takes a user id (0 to 4294967294)\n",
    });
    expect(ljexec(["--pid", pid, "--uid", "1", "--gid", "1"]).code).toBe(125);
    const r = ljexec([
      "--pid",
      pid,
      "--uid",
      "1",
      "--gid",
      "1",
      "--cgroup",
      "/nonexistent",
      "--",
      "touch",
      "/tmp/x",
    ]);
    expect(r).toEqual({ code: 125, stderr: "ljexec: join cgroup /nonexistent: ENOENT\n" });
    expect((await inJail("test -e /tmp/x")).code).toBe(1);
  });
});
