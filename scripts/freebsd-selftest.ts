/**
 * The first run of lightjail on a FreeBSD machine (run through scripts/freebsd-selftest.sh).
 * Spawns real jails and checks, from inside and from the host: isolation, the state-root
 * mask, RCTL limits, address aliases, signals, kill and timeout teardown, pooled jails, owner
 * identity and gc, file mounts, and what a SIGKILLed supervisor leaves (FreeBSD 14) or not
 * (FreeBSD 15's owning descriptors). Prints one line per check and a summary; exits 1 when a
 * check failed. Everything it makes lives under LIGHTJAIL_ROOT (set by the wrapper) and uses
 * jail names starting with "ljst".
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { shimCleanup, shimUnmount } from "../src/jail/ffi.ts";
import { gc } from "../src/jail/gc.ts";
import { processStartTime } from "../src/jail/owner.ts";
import { JailPool } from "../src/jail/pool.ts";
import { mountTable } from "../src/jail/scratch.ts";
import { type JailResult, runJail, spawnJail } from "../src/jail/spawn.ts";
import type { JailSpec } from "../src/jail/spec.ts";
import { paths } from "../src/store/paths.ts";

type Outcome = "ok" | "FAIL" | "info";
const results: { name: string; outcome: Outcome; detail: string }[] = [];

function report(name: string, outcome: Outcome, detail = ""): void {
  results.push({ name, outcome, detail });
  console.log(`${outcome.padEnd(4)} ${name}${detail ? `: ${detail}` : ""}`);
}

async function check(name: string, fn: () => Promise<string | undefined>): Promise<void> {
  try {
    const detail = await fn();
    report(name, "ok", detail ?? "");
  } catch (e) {
    report(name, "FAIL", (e as Error).message);
  }
}

function expect(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

function sh(cmd: string[]): { code: number; out: string } {
  const r = Bun.spawnSync(cmd, { stderr: "pipe" });
  return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}

const tag = `ljst${process.pid}`;
let seq = 0;
const jailName = () => `${tag}x${++seq}`;
const root = process.env.LJ_SELFTEST_ROOT ?? "/";
const base = (extra: Partial<JailSpec>): JailSpec => ({
  argv: ["/bin/sh", "-c", "true"],
  root,
  rootReadonly: true,
  env: { PATH: "/bin:/sbin:/usr/bin:/usr/sbin" },
  name: jailName(),
  ...extra,
});

const jailExists = (name: string) => sh(["jls", "-j", name, "jid"]).code === 0;
const mountsUnder = (dir: string) =>
  mountTable("freebsd").filter((m) => m === dir || m.startsWith(`${dir}/`));
const stages = () => (existsSync(paths.stage()) ? readdirSync(paths.stage()) : []);
const rctlRules = (name: string) =>
  sh(["rctl"])
    .out.split("\n")
    .filter((l) => l.startsWith(`jail:${name}:`));

/** Nothing of the jail is left: no jail, no RCTL rules, no mounts, no stage. */
function assertGone(name: string): void {
  expect(!jailExists(name), `jail ${name} still exists`);
  expect(rctlRules(name).length === 0, `RCTL rules of ${name} left: ${rctlRules(name).join(", ")}`);
  const left = mountsUnder(paths.stage());
  expect(left.length === 0, `mounts left under the stage: ${left.join(", ")}`);
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  for (let t = 0; t < ms; t += 50) {
    if (cond()) return true;
    await Bun.sleep(50);
  }
  return cond();
}

async function main(): Promise<void> {
  const release = sh(["uname", "-r"]).out.trim();
  report("platform", "info", `FreeBSD ${release}, ${process.arch}, Bun ${Bun.version}`);

  await check("owner identity (kern.proc.pid through the shim)", async () => {
    const a = processStartTime(process.pid);
    const b = processStartTime(process.pid);
    expect(a !== null && /^\d+$/.test(a), `start time of this process is ${a}`);
    expect(a === b, "the start time changed between two reads");
    expect(processStartTime(99999999) === null, "a missing process has a start time");
    return `this process started ${a} us after boot`;
  });

  await check("spawn, exit code, jail parameters", async () => {
    const name = jailName();
    const r = await runJail(
      base({
        name,
        hostname: "selftest",
        argv: [
          "/bin/sh",
          "-c",
          "sysctl -n security.jail.jailed; hostname; sysctl -n kern.securelevel; exit 3",
        ],
      }),
    );
    expect(r.exitCode === 3, `exit code ${r.exitCode} (${r.error ?? r.stderr})`);
    const [jailed, host, level] = r.stdout.trim().split("\n");
    expect(jailed === "1", `security.jail.jailed is ${jailed}`);
    expect(host === "selftest", `hostname is ${host}`);
    expect(level === "3", `securelevel is ${level}`);
    assertGone(name);
    expect(stages().length === 0, `stage directories left: ${stages().join(", ")}`);
    return undefined;
  });

  await check("isolation: devices, processes, mounts, raw sockets, uid", async () => {
    const r = await runJail(
      base({
        uid: 65534,
        gid: 65534,
        argv: [
          "/bin/sh",
          "-c",
          "ls /dev | tr '\\n' ' '; echo; ps ax -o pid= | wc -l; id -u; " +
            "mount -t tmpfs tmpfs /tmp 2>/dev/null && echo MOUNTED; ping -c1 -t1 127.0.0.1 >/dev/null 2>&1 && echo PINGED; true",
        ],
      }),
    );
    const [devs, nprocs, uid] = r.stdout.split("\n");
    for (const bad of ["mem", "kmem", "io", "bpf", "pf", "fuse"]) {
      expect(!` ${devs} `.includes(` ${bad} `), `/dev/${bad} is visible: ${devs}`);
    }
    expect(` ${devs} `.includes(" null "), `/dev/null missing: ${devs}`);
    expect(Number(nprocs) <= 6, `${nprocs?.trim()} processes visible in the jail`);
    expect(uid === "65534", `uid ${uid}`);
    expect(!r.stdout.includes("MOUNTED"), "the jail could mount a tmpfs");
    expect(!r.stdout.includes("PINGED"), "the jail could ping (raw sockets or networking)");
    return `/dev: ${devs?.trim()}`;
  });

  await check("lightjail's state root is masked, a sibling is visible", async () => {
    // The state root sits in /var/tmp (the wrapper's choice); the jail sees /var/tmp at /mnt
    // (an existing directory: the root is read-only).
    const state = paths.root();
    const sibling = `${state}-sibling`;
    mkdirSync(sibling, { recursive: true });
    writeFileSync(join(sibling, "visible"), "yes");
    const parent = state.slice(0, state.lastIndexOf("/"));
    const leaf = state.slice(state.lastIndexOf("/") + 1);
    const sib = sibling.slice(sibling.lastIndexOf("/") + 1);
    const r = await runJail(
      base({
        mounts: [{ src: parent, dst: "/mnt", readonly: true }],
        argv: ["/bin/sh", "-c", `ls -A /mnt/${leaf} | wc -l; cat /mnt/${sib}/visible`],
      }),
    );
    const [count, visible] = r.stdout.trim().split("\n");
    expect(r.exitCode === 0, `exit ${r.exitCode}: ${r.error ?? r.stderr}`);
    expect(count?.trim() === "0", `the state root shows ${count?.trim()} entries in the jail`);
    expect(visible === "yes", `the sibling directory is not visible: ${visible}`);
    return undefined;
  });

  await check("RCTL limits: rules while running, none after", async () => {
    const name = jailName();
    const jail = spawnJail(
      base({ name, argv: ["/bin/sleep", "30"], limits: { memoryBytes: 64 << 20, pids: 16, cpus: 0.5 } }),
    );
    const seen = await waitFor(() => rctlRules(name).length === 3, 5000);
    const rules = rctlRules(name);
    jail.kill();
    const r = await jail.exited;
    await jail.closed;
    expect(seen, `rules while running: ${rules.join(", ") || "none"} (${r.error ?? ""})`);
    assertGone(name);
    return rules.join(" ");
  });

  await check("process limit is enforced", async () => {
    const r = await runJail(
      base({
        limits: { pids: 6 },
        argv: [
          "/bin/sh",
          "-c",
          "n=0; for i in 1 2 3 4 5 6 7 8 9 10; do /bin/sleep 2 & n=$((n+1)); done; wait",
        ],
      }),
    );
    expect(/fork|resource|again/i.test(r.stderr), `10 sleeps started under maxproc 6 (stderr: ${r.stderr})`);
    return undefined;
  });

  await check("address alias: added for the jail, removed after; a host address is left alone", async () => {
    const name = jailName();
    const jail = spawnJail(
      base({ name, argv: ["/bin/sleep", "30"], addresses: ["127.0.0.77"], iface: "lo0" }),
    );
    const added = await waitFor(() => sh(["ifconfig", "lo0"]).out.includes("inet 127.0.0.77 "), 5000);
    jail.kill();
    await jail.exited;
    await jail.closed;
    expect(added, "127.0.0.77 never appeared on lo0");
    expect(!sh(["ifconfig", "lo0"]).out.includes("inet 127.0.0.77 "), "127.0.0.77 is still on lo0");
    const r = await runJail(
      base({ addresses: ["127.0.0.1"], iface: "lo0", argv: ["/bin/sh", "-c", "true"] }),
    );
    expect(r.exitCode === 0, `a jail on 127.0.0.1: ${r.error ?? r.stderr}`);
    expect(sh(["ifconfig", "lo0"]).out.includes("inet 127.0.0.1 "), "the host's 127.0.0.1 was removed");
    assertGone(name);
    return undefined;
  });

  await check("kill(): the supervisor tears the jail down (S 9)", async () => {
    const name = jailName();
    const jail = spawnJail(base({ name, argv: ["/bin/sleep", "60"] }));
    await waitFor(() => jailExists(name), 5000);
    jail.kill();
    const r: JailResult = await jail.exited;
    await jail.closed;
    expect(r.signal === 9 && r.reason === "signal", `result ${JSON.stringify(r)}`);
    assertGone(name);
    expect(stages().length === 0, `stage directories left: ${stages().join(", ")}`);
    return undefined;
  });

  await check("timeout: the same teardown", async () => {
    const name = jailName();
    const jail = spawnJail(base({ name, argv: ["/bin/sleep", "60"], timeoutMs: 500 }));
    const r = await jail.exited;
    await jail.closed;
    expect(r.reason === "timeout", `result ${JSON.stringify(r)}`);
    assertGone(name);
    return undefined;
  });

  await check("signals reach the payload with FreeBSD's numbers (USR1, TERM)", async () => {
    const jail = spawnJail(
      base({
        stdio: ["ignore", "pipe", "pipe"],
        argv: [
          "/bin/sh",
          "-c",
          'trap "echo usr1" USR1; trap "echo term; exit 7" TERM; echo ready; while :; do sleep 0.1; done',
        ],
      }),
    );
    const out = jail.stdout ? new Response(jail.stdout).text() : Promise.resolve("");
    await Bun.sleep(1000);
    jail.kill("SIGUSR1");
    await Bun.sleep(500);
    jail.kill("SIGTERM");
    const r = await jail.exited;
    const text = await out;
    expect(text.includes("usr1") && text.includes("term"), `payload saw: ${JSON.stringify(text)}`);
    expect(r.exitCode === 7, `result ${JSON.stringify(r)}`);
    return undefined;
  });

  await check("pooled jails start with their payload ('p' message)", async () => {
    const pool = new JailPool(base({ stdio: ["ignore", "pipe", "pipe"], argv: ["/bin/false"] }), { size: 1 });
    await Bun.sleep(500);
    const jail = pool.spawn({ argv: ["/bin/echo", "pooled"], env: { PATH: "/bin" } });
    const text = jail.stdout ? await new Response(jail.stdout).text() : "";
    const r = await jail.exited;
    await pool.close();
    expect(text.trim() === "pooled" && r.exitCode === 0, `output ${JSON.stringify(text)}, ${r.error ?? ""}`);
    return undefined;
  });

  await check("gc leaves a live jail alone", async () => {
    const name = jailName();
    const jail = spawnJail(base({ name, argv: ["/bin/sleep", "30"] }));
    await waitFor(() => jailExists(name), 5000);
    const before = mountsUnder(paths.stage()).length;
    const g = await gc();
    const after = mountsUnder(paths.stage()).length;
    const alive = jailExists(name);
    jail.kill();
    await jail.exited;
    await jail.closed;
    expect(alive && before === after && before > 0, `gc removed ${JSON.stringify(g.removed)}`);
    return undefined;
  });

  await check("file mount (nullfs of a regular file)", async () => {
    const file = join(paths.root(), "selftest-file");
    writeFileSync(file, "file mount works\n");
    // Over /COPYRIGHT, a file every FreeBSD root has: the read-only root cannot get a new one.
    const r = await runJail(
      base({ mounts: [{ src: file, dst: "/COPYRIGHT", readonly: true }], argv: ["/bin/cat", "/COPYRIGHT"] }),
    );
    expect(
      r.stdout === "file mount works\n",
      `${r.error ?? r.stderr} (this kernel's nullfs may not mount files)`,
    );
    return undefined;
  });

  await check("supervisor SIGKILLed: owning descriptor (15) or cleanup export (14)", async () => {
    const name = jailName();
    const jail = spawnJail(base({ name, argv: ["/bin/sleep", "60"] }));
    await waitFor(() => jailExists(name), 5000);
    process.kill(jail.pid, 9);
    await jail.exited;
    await jail.closed;
    const survived = await waitFor(() => !jailExists(name), 2000).then((gone) => !gone);
    shimCleanup(name);
    for (const m of mountsUnder(paths.stage()).sort((a, b) => b.length - a.length)) shimUnmount(m);
    assertGone(name);
    return survived
      ? "the jail outlived its supervisor (no JAIL_OWN_DESC): removed by lj_cleanup"
      : "the jail went with its supervisor (JAIL_OWN_DESC)";
  });

  const failed = results.filter((r) => r.outcome === "FAIL");
  console.log(
    `\n${results.length - failed.length} passed or informed, ${failed.length} failed on FreeBSD ${release}`,
  );
  for (const f of failed) console.log(`  FAIL ${f.name}: ${f.detail}`);
  process.exit(failed.length > 0 ? 1 : 0);
}

await main();
