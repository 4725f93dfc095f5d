/**
 * Operating `lj serve` (issue 16): nothing left behind after a crash (zombie owners, build
 * temporaries, unused slugs), nothing unbounded (log rotation, tails), one server per root,
 * a versioned database, confirmed destruction, the service unit and the listen address.
 * Real processes throughout: servers as child processes, owners that die (or linger as
 * zombies), the real CLI.
 */

import { Database } from "bun:sqlite";
import { afterAll, describe, expect, test } from "bun:test";
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { firstLine, startServe } from "../scripts/serve-process.ts";
import { detectLayout } from "../src/jail/cgroup.ts";
import { listLeases, netConfig } from "../src/jail/net-alloc.ts";
import { ownerId, ownerLive, processStartTime, processState } from "../src/jail/owner.ts";
import { PaasDb, SCHEMA_VERSION } from "../src/paas/db.ts";
import { LogHub } from "../src/paas/logs.ts";
import { readTail } from "../src/paas/rotate.ts";
import { Router } from "../src/server/edge/router.ts";
import { freebsdRcScript, serviceArgv, systemdUnit } from "../src/server/install.ts";
import { appCopy, createApp, deployDir, removeAppCopies, until } from "./fixtures/paas/helpers.ts";
import { cliPath, lj, runCommand } from "./helpers/jail-env.ts";
import { jailLeases } from "./helpers/leases.ts";
import { rootTest } from "./helpers/root.ts";

const roots: string[] = [];
const holders: { kill(sig?: number | string): void }[] = [];
/** Children of the holders: killed before their holders, while their pids cannot be reused. */
const children: number[] = [];
afterAll(() => {
  removeAppCopies();
  for (const pid of children) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  for (const h of holders) h.kill("SIGKILL");
  for (const r of roots) Bun.spawnSync(["rm", "-rf", r]);
});

function newRoot(tag: string): string {
  const r = mkdtempSync(join(tmpdir(), `lj-ops-${tag}-`));
  roots.push(r);
  return r;
}

const serveFake = join(import.meta.dir, "fixtures/paas/serve-fake.ts");

/** "<pid>.<start>" of a process that has exited and been reaped. */
async function deadOwner(): Promise<string> {
  const p = Bun.spawn(["sleep", "30"]);
  const id = `${p.pid}.${processStartTime(p.pid)}`;
  p.kill("SIGKILL");
  await p.exited;
  return id;
}

/**
 * Runs `cmd` as a child of a shell that then becomes `sleep` and never reaps it: once the child
 * dies it stays a zombie. Returns the child's pid (from the pid file) and the holder.
 */
async function underNonReapingParent(cmd: string, env: Record<string, string | undefined>) {
  const dir = newRoot("pid");
  const pidFile = join(dir, "pid");
  const holder = Bun.spawn(["sh", "-c", `${cmd} & echo $! > ${pidFile}; exec sleep 600`], {
    env,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
  });
  holders.push(holder);
  const pid = Number(
    await until(() => existsSync(pidFile) && readFileSync(pidFile, "utf8").trim(), 5000, "pid file"),
  );
  children.push(pid);
  return { pid, holder };
}

describe("owners", () => {
  test("an owner that is a zombie is dead", async () => {
    const { pid } = await underNonReapingParent("sleep 600", process.env);
    const start = processStartTime(pid)!;
    expect(ownerLive(pid, start)).toBe(true);
    process.kill(pid, "SIGKILL");
    await until(() => processState(pid) === "Z", 5000, "a zombie");
    // Its pid and start time still match: only the state tells it is dead.
    expect(processStartTime(pid)).toBe(start);
    expect(ownerLive(pid, start)).toBe(false);
    expect(ownerLive(process.pid, processStartTime(process.pid)!)).toBe(true);
  });

  rootTest(
    "restart right after a crash, the dead server still a zombie: none of its cgroups, leases or nftables entries stay; a second lj serve on the root is refused",
    async () => {
      const root = newRoot("crash");
      const envs = { ...process.env, LIGHTJAIL_ROOT: root, LJ_SUBNET: "10.246.1.0/24" };
      expect((await lj(["world", "create", "test", "--from", "host"], { LIGHTJAIL_ROOT: root })).code).toBe(
        0,
      );
      const out = join(root, "first.json");
      const { pid: dead, holder } = await underNonReapingParent(
        `"${process.execPath}" "${serveFake}" > ${out}`,
        envs,
      );
      const a = JSON.parse(
        await until(
          () => existsSync(out) && readFileSync(out, "utf8").split("\n")[0],
          30_000,
          "first server",
        ),
      ) as { url: string; token: string };
      await createApp(a, "phoenix");
      await createApp(a, "ember");
      for (const app of ["phoenix", "ember"]) {
        const d = await deployDir(a, app, appCopy("node-hello"));
        expect(d.deploy?.status, d.log).toBe("succeeded");
      }
      const layout = detectLayout();
      const bases = [layout?.unified, layout?.memory, layout?.pids, layout?.cpu].filter(
        (b): b is string => !!b && existsSync(b),
      );
      const cgroupsOf = (pid: number) =>
        bases.flatMap((b) =>
          readdirSync(b)
            .filter((n) => n.startsWith(`${pid}.`))
            .map((n) => join(b, n)),
        );
      const leases = () => jailLeases(root);
      expect(cgroupsOf(dead).length).toBeGreaterThanOrEqual(2);
      expect(leases().length).toBe(2);

      process.kill(dead, "SIGKILL");
      await until(() => processState(dead) === "Z", 10_000, "the dead server a zombie");
      const b = await startServe([process.execPath, serveFake], envs);
      try {
        expect(processState(dead)).toBe("Z"); // still unreaped while the new server started
        const ownersOf = () =>
          leases().map(
            (f) =>
              (JSON.parse(readFileSync(join(root, "run", "net", "leases", f), "utf8")) as { owner: string })
                .owner,
          );
        await until(
          () => ownersOf().length === 2 && ownersOf().every((o) => o.startsWith(`${b.proc.pid}.`)),
          30_000,
          "the new server's two jails",
        );
        expect(cgroupsOf(dead)).toEqual([]);
        expect(cgroupsOf(b.proc.pid).length).toBeGreaterThanOrEqual(2);
        // nftables: the jails set holds exactly the live leases' addresses of this subnet.
        // This root's own table (src/jail/net-alloc.ts names it after the root).
        const [family, table] = netConfig(envs).table.split(" ") as [string, string];
        // (A process's first jails are leased before its table exists: their elements follow.)
        const inSet = () => {
          const nft = Bun.spawnSync(["nft", "-j", "list", "set", family, table, "jails"]).stdout.toString();
          return [...new Set([...nft.matchAll(/10\.246\.1\.\d+/g)].map((m) => m[0]))].sort();
        };
        // Every lease counts here, the new server's pool's too (their elements are in as well,
        // a moment after their leases); none is the dead server's any more, its pool's included.
        const all = () => listLeases(join(root, "run", "net"));
        const leased = () =>
          all()
            .map((l) => l.address)
            .sort();
        for (const { owner } of all()) expect(owner.startsWith(`${dead}.`)).toBe(false);
        await until(() => inSet().join() === leased().join(), 5_000, "the jails' set elements").catch(
          () => {},
        );
        expect(inSet()).toEqual(leased());

        // One server per root: a second one is refused, naming the first.
        const second = await runCommand([process.execPath, cliPath, "serve", "--port", "0"], {
          LIGHTJAIL_ROOT: root,
        });
        expect(second.code).toBe(73);
        expect(second.stderr).toContain(`lj serve (pid ${b.proc.pid}) already runs on this root`);
      } finally {
        b.proc.kill("SIGTERM");
        await b.proc.exited;
        holder.kill("SIGKILL");
      }
      expect(leases()).toEqual([]);
    },
    120_000,
  );
});

describe("lj serve", () => {
  rootTest(
    "shows the address it really listens on and warns about the token over plain HTTP off loopback",
    async () => {
      const root = newRoot("listen");
      const p = Bun.spawn([process.execPath, cliPath, "serve", "--host", "0.0.0.0", "--port", "0"], {
        env: { ...process.env, LIGHTJAIL_ROOT: root, LJ_SUBNET: "10.246.2.0/24" },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      try {
        const line = await firstLine(p.stdout, "lj serve");
        const m = /^lightjail server listening on http:\/\/0\.0\.0\.0:(\d+) \(every IPv4 address\)$/.exec(
          line,
        );
        expect(m).not.toBeNull();
        const warning = await firstLine(p.stderr, "lj serve's warning");
        expect(warning).toContain("warning: lj serve listens on 0.0.0.0 over plain HTTP");
        // It really listens there: the port answers on loopback too.
        expect((await fetch(`http://127.0.0.1:${m![1]}/api/v1/apps`)).status).toBe(401);
      } finally {
        p.kill("SIGTERM");
        await p.exited;
      }
      const local = Bun.spawn([process.execPath, cliPath, "serve", "--port", "0", "--json"], {
        env: { ...process.env, LIGHTJAIL_ROOT: root, LJ_SUBNET: "10.246.2.0/24" },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      const j = JSON.parse(await firstLine(local.stdout, "lj serve")) as { listen: { hostname: string } };
      expect(j.listen.hostname).toBe("127.0.0.1");
      local.kill("SIGTERM");
      expect(await new Response(local.stderr).text()).not.toContain("warning");
      await local.exited;
    },
    60_000,
  );

  test("--install writes a systemd unit with the ordering and restart policy; an rc.d script for FreeBSD", async () => {
    const dir = newRoot("install");
    const file = join(dir, "lightjail.service");
    const r = await runCommand(
      [
        process.execPath,
        cliPath,
        "serve",
        "--port",
        "8080",
        "--domain",
        "apps.example",
        "--install",
        "--service-file",
        file,
      ],
      { LIGHTJAIL_ROOT: "/srv/lj root" },
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("systemctl enable --now lightjail");
    const unit = readFileSync(file, "utf8");
    expect(unit).toContain("After=network-online.target nftables.service");
    expect(unit).toContain("Wants=network-online.target");
    expect(unit).toContain("Restart=on-failure");
    expect(unit).toContain("RestartPreventExitStatus=73 78 64");
    expect(unit).toContain("KillMode=mixed");
    expect(unit).toContain('Environment="LIGHTJAIL_ROOT=/srv/lj root"');
    expect(unit).toContain(
      `ExecStart=${process.execPath} ${cliPath} serve --port 8080 --domain apps.example\n`,
    );
    expect(unit).toContain("WantedBy=multi-user.target");
    expect(existsSync("/etc/systemd/system/lightjail.service")).toBe(false); // nothing enabled here

    const o = { argv: ["/usr/local/bin/lj", "serve", "--host", "0.0.0.0"], root: "/usr/local/lj" };
    const rc = freebsdRcScript(o);
    expect(rc).toContain("# REQUIRE: LOGIN NETWORKING");
    expect(rc).toContain("# KEYWORD: shutdown");
    expect(rc).toContain("-r -R 2 -P ${pidfile}");
    expect(rc).toContain("/usr/bin/env LIGHTJAIL_ROOT=/usr/local/lj /usr/local/bin/lj serve --host 0.0.0.0");
    expect(systemdUnit({ argv: ["/x/lj", "serve", "--domain", "50%$off"], root: "/r" })).toContain(
      'ExecStart=/x/lj serve --domain "50%%$$off"',
    );
    expect(
      serviceArgv(["--install", "--service-file", "/f", "--port", "1"], ["/b/bun", "/p/lj.ts"], "/b/bun"),
    ).toEqual(["/b/bun", "/p/lj.ts", "serve", "--port", "1"]);
  });
});

describe("the database", () => {
  /** The first schema, as lightjail before schema versions wrote it (user_version 0). */
  const V1 = `
CREATE TABLE apps (name TEXT PRIMARY KEY, created_at TEXT NOT NULL, config TEXT NOT NULL DEFAULT '{}',
  formation TEXT NOT NULL DEFAULT '{}', current_release INTEGER);
CREATE TABLE releases (app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE, version INTEGER NOT NULL,
  slug TEXT NOT NULL, config TEXT NOT NULL, formation TEXT NOT NULL, description TEXT NOT NULL,
  created_at TEXT NOT NULL, PRIMARY KEY (app, version));
CREATE TABLE deploys (id INTEGER PRIMARY KEY AUTOINCREMENT, app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
  source TEXT NOT NULL, status TEXT NOT NULL, release INTEGER, error TEXT, created_at TEXT NOT NULL, finished_at TEXT);
CREATE TABLE deploy_logs (deploy INTEGER NOT NULL REFERENCES deploys(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
  line TEXT NOT NULL, PRIMARY KEY (deploy, seq));
CREATE TABLE services (name TEXT PRIMARY KEY, type TEXT NOT NULL, credentials TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE links (service TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
  app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE, PRIMARY KEY (service, app));
INSERT INTO apps (name, created_at, formation, current_release) VALUES ('old', '2026-01-01', '{"web":{"count":2}}', NULL);
INSERT INTO deploys (app, source, status, created_at) VALUES ('old', 'tarball', 'succeeded', '2026-01-01');
`;

  test("a database written by the previous schema opens, migrated, with its data; a newer one is refused; 0600", () => {
    const dir = newRoot("db");
    const file = join(dir, "state.db");
    const old = new Database(file, { create: true });
    old.exec("PRAGMA journal_mode = WAL;");
    old.exec(V1);
    old.close();
    const db = new PaasDb(file);
    expect(db.schemaVersion()).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBeGreaterThanOrEqual(2);
    expect(db.app("old").formation).toEqual({ web: { count: 2 } });
    const [d] = db.deploys("old");
    expect(d?.slug).toBeNull();
    db.setDeploySlug(d!.id, "20260101-000000-abcdef");
    expect(db.deploy(d!.id).slug).toBe("20260101-000000-abcdef");
    for (const f of [file, `${file}-wal`, `${file}-shm`]) expect(statSync(f).mode & 0o777).toBe(0o600);
    db.close();
    // Opening again runs nothing twice.
    const again = new PaasDb(file);
    expect(again.schemaVersion()).toBe(SCHEMA_VERSION);
    again.db.exec("PRAGMA user_version = 99");
    again.close();
    expect(() => new PaasDb(file)).toThrow(/schema version 99/);
    // A new database is 0600 from the start.
    const fresh = new PaasDb(join(dir, "new.db"));
    fresh.createApp("x");
    for (const f of ["new.db", "new.db-wal", "new.db-shm"])
      expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600);
    fresh.close();
  });
});

describe("logs", () => {
  test("app logs rotate by size and keep the configured count", () => {
    const dir = newRoot("logs");
    const hub = new LogHub(dir, { maxBytes: 4096, keep: 2 });
    for (let i = 0; i < 1000; i++) hub.write("chatty", "web.1", `line ${i} ${"x".repeat(40)}`);
    hub.flush();
    for (let i = 0; i < 300; i++) hub.write("chatty", "web.1", `late ${i} ${"y".repeat(40)}`);
    hub.flush();
    const files = readdirSync(dir).sort();
    expect(files).toEqual(["chatty.log", "chatty.log.1", "chatty.log.2"]);
    for (const f of files) expect(statSync(join(dir, f)).size).toBeLessThanOrEqual(4096);
    // Whole lines only, the newest last; the oldest rotated away.
    const current = readFileSync(join(dir, "chatty.log"), "utf8");
    expect(current.endsWith("\n")).toBe(true);
    expect(current.trimEnd().split("\n").at(-1)).toContain("late 299");
    expect(readFileSync(join(dir, "chatty.log.2"), "utf8").split("\n")[0]).toMatch(/web\.1: late \d+ y+$/);
    hub.forget("chatty");
    expect(readdirSync(dir)).toEqual([]);
  });

  test("settings: LJ_LOG_MAX_MB / LJ_LOG_KEEP over [logs] in config.toml over the defaults", async () => {
    const { logRotation, LOG_DEFAULTS } = await import("../src/paas/rotate.ts");
    const dir = newRoot("logcfg");
    const cfg = join(dir, "config.toml");
    expect(logRotation({}, cfg)).toEqual({ maxBytes: LOG_DEFAULTS.maxMb * 1048576, keep: LOG_DEFAULTS.keep });
    writeFileSync(cfg, "[logs]\nmax_mb = 2\nkeep = 3\n");
    expect(logRotation({}, cfg)).toEqual({ maxBytes: 2 * 1048576, keep: 3 });
    expect(logRotation({ LJ_LOG_KEEP: "0" }, cfg)).toEqual({ maxBytes: 2 * 1048576, keep: 0 });
    expect(() => logRotation({ LJ_LOG_MAX_MB: "lots" }, cfg)).toThrow(/max_mb/);
  });

  test("a log's tail is read from its end: a 6 GiB log (sparse) answers its last lines", () => {
    const dir = newRoot("tail");
    const file = join(dir, "big.log");
    const fd = openSync(file, "w");
    ftruncateSync(fd, 6 * 1024 ** 3); // a hole: no disk used, and far more than a string can hold
    closeSync(fd);
    const lines = Array.from({ length: 50 }, (_, i) => `2026-01-01T00:00:00.000Z web.1: tail line ${i}`);
    writeFileSync(file, `\n${lines.join("\n")}\n`, { flag: "a" });
    const t0 = performance.now();
    expect(readTail(file, 3)).toEqual(lines.slice(-3));
    const hub = new LogHub(dir, { maxBytes: 1 << 30, keep: 1 });
    expect(hub.tail("big", 50).map((l) => l.line)).toEqual(lines.map((_, i) => `tail line ${i}`));
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  test("the router's access log rotates too", async () => {
    const dir = newRoot("access");
    const file = join(dir, "access.log");
    const router = new Router({
      domain: "localhost",
      targets: () => null,
      accessLog: file,
      accessLogRotation: { maxBytes: 2048, keep: 1 },
    });
    for (let i = 0; i < 200; i++) {
      await router.fetch(new Request(`http://nope.localhost/${i}`), {} as never, "nope");
      if (i % 20 === 19) router.flush();
    }
    router.flush();
    expect(readdirSync(dir).sort()).toEqual(["access.log", "access.log.1"]);
    expect(statSync(file).size).toBeLessThanOrEqual(2048);
    expect(readFileSync(file, "utf8")).toContain("GET /199 404");
  });
});

describe("build leftovers and unused slugs", () => {
  /**
   * A slug store as crashes leave it: a dead builder's temporaries (dir, .log, .json, an
   * overlayfs .work), a live builder's (this process), a release's slug, an unused slug.
   */
  async function litter(root: string): Promise<{ live: string }> {
    const db = new PaasDb(join(root, "paas", "state.db"));
    db.createApp("keep");
    db.db
      .query(
        "INSERT INTO releases (app, version, slug, config, formation, description, created_at) VALUES ('keep', 1, ?, '{}', '{}', 'v1', 'now')",
      )
      .run(JSON.stringify({ id: "s1", path: join(root, "slugs", "keep", "s1") }));
    db.close();
    const dir = join(root, "slugs", "keep");
    mkdirSync(dir, { recursive: true });
    const dead = await deadOwner();
    for (const id of ["s1", "s2"]) {
      mkdirSync(join(dir, id, "app"), { recursive: true });
      writeFileSync(join(dir, `${id}.log`), "built\n");
    }
    writeFileSync(join(dir, "s1.json"), JSON.stringify({ id: "s1", builder: dead }));
    writeFileSync(join(dir, "s2.json"), JSON.stringify({ id: "s2", builder: dead }));
    mkdirSync(join(dir, "s3", "app"), { recursive: true }); // this process built it: kept
    writeFileSync(join(dir, "s3.json"), JSON.stringify({ id: "s3", builder: ownerId() }));
    mkdirSync(join(dir, `.tmp-${dead}-x`, "app"), { recursive: true });
    writeFileSync(join(dir, `.tmp-${dead}-x.log`), "half a build\n");
    writeFileSync(join(dir, `.tmp-${dead}-x.json`), "{}");
    mkdirSync(join(dir, `..tmp-${dead}-x.work`, "work"), { recursive: true });
    mkdirSync(join(dir, ".tmp-20250101-000000-abcdef")); // an older lightjail's: no builder recorded
    const live = `.tmp-${ownerId()}-y`;
    mkdirSync(join(dir, live));
    writeFileSync(join(dir, `${live}.log`), "building\n");
    return { live };
  }

  const kept = (live: string) => [live, `${live}.log`, "s1", "s1.json", "s1.log", "s3", "s3.json"].sort();

  rootTest("lj gc collects dead builders' temporaries and unused slugs, never a live build's", async () => {
    const root = newRoot("gc");
    const { live } = await litter(root);
    const r = await lj(["gc", "--json"], { LIGHTJAIL_ROOT: root, LJ_SUBNET: "10.246.4.0/24" });
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as { removed: { kind: string; what: string }[] };
    expect(report.removed.filter((x) => x.kind === "build-temp").length).toBe(5);
    expect(report.removed.filter((x) => x.kind === "slug").map((x) => x.what.split("/").at(-1))).toEqual([
      "s2",
      "s2.json",
      "s2.log",
    ]);
    expect(readdirSync(join(root, "slugs", "keep")).sort()).toEqual(kept(live));
  });

  rootTest(
    "a server start collects them too",
    async () => {
      const root = newRoot("prepare");
      const { live } = await litter(root);
      const s = await startServe([process.execPath, serveFake], {
        ...process.env,
        LIGHTJAIL_ROOT: root,
        LJ_SUBNET: "10.246.5.0/24",
      });
      try {
        expect(readdirSync(join(root, "slugs", "keep")).sort()).toEqual(kept(live));
      } finally {
        s.proc.kill("SIGTERM");
        await s.proc.exited;
      }
    },
    60_000,
  );
});

describe("confirmations", () => {
  /** Runs the CLI on a terminal (script(1) gives it a pty) and types `answer` at its prompt. */
  async function onTerminal(args: string[], answer: string, env: Record<string, string>) {
    const cmd = [process.execPath, cliPath, ...args].map((a) => `'${a}'`).join(" ");
    const p = Bun.spawn(["script", "-qec", cmd, "/dev/null"], {
      env: { ...process.env, ...env },
      stdin: Buffer.from(`${answer}\n`),
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    return { out, code };
  }

  rootTest("on a terminal the name is asked for, and a wrong answer destroys nothing", async () => {
    const root = newRoot("prompt");
    const env = { LIGHTJAIL_ROOT: root };
    expect((await lj(["world", "create", "spare", "--from", "host"], env)).code).toBe(0);
    const wrong = await onTerminal(["world", "rm", "spare"], "sparex", env);
    expect(wrong.out).toContain("This destroys world spare");
    expect(wrong.out).toContain("To proceed, type spare:");
    expect(wrong.out).toContain("did not match");
    expect(wrong.code).toBe(64);
    expect(existsSync(join(root, "worlds", "spare"))).toBe(true);
    const right = await onTerminal(["world", "rm", "spare"], "spare", env);
    expect(right.code).toBe(0);
    expect(existsSync(join(root, "worlds", "spare"))).toBe(false);
  });

  rootTest(
    "destroying an app, a service or a world needs the name; a linked service and a used world are refused; a failed deploy's slug goes",
    async () => {
      const root = newRoot("confirm");
      const envs = { ...process.env, LIGHTJAIL_ROOT: root, LJ_SUBNET: "10.246.6.0/24" };
      expect((await lj(["world", "create", "test", "--from", "host"], { LIGHTJAIL_ROOT: root })).code).toBe(
        0,
      );
      const s = await startServe(
        [process.execPath, join(import.meta.dir, "fixtures/paas/serve-slugs.ts")],
        envs,
      );
      const cli = (args: string[]) => lj(args, { LJ_REMOTE: s.url, LJ_TOKEN: s.token, LIGHTJAIL_ROOT: root });
      try {
        await createApp(s, "doomed");
        // A deploy whose build publishes a slug but whose web never answers: the slug goes.
        const bad = await deployDir(s, "doomed", appCopy("node-hello", { Procfile: "web: sleep 600\n" }));
        expect(bad.deploy?.status).toBe("failed");
        expect(readdirSync(join(root, "slugs", "doomed")).filter((n) => !n.startsWith("."))).toEqual([]);
        expect((await deployDir(s, "doomed", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
        expect(readdirSync(join(root, "slugs", "doomed")).filter((n) => !n.endsWith(".log")).length).toBe(2);

        // world rm: refused while the app's slug uses it, listing the users.
        const w = await lj(["world", "rm", "test", "--confirm", "test"], { LIGHTJAIL_ROOT: root });
        expect(w.code).toBe(73);
        expect(w.stderr).toContain("world test is used by app doomed");
        expect(existsSync(join(root, "worlds", "test"))).toBe(true);

        // services destroy: the name, then refused while linked, then --force unlinks (the app's log says so).
        await fetch(`${s.url}/api/v1/services`, { method: "GET" }); // the server is up
        const seed = await runCommand(
          [
            process.execPath,
            "-e",
            `
            const { PaasDb } = await import("${join(import.meta.dir, "..", "src/paas/db.ts")}");
            const db = new PaasDb("${join(root, "paas", "state.db")}");
            db.createService("pg", "postgres", {});
            db.link("pg", "doomed");
            db.close();`,
          ],
          { LIGHTJAIL_ROOT: root },
        );
        expect(seed.code).toBe(0);
        const noName = await cli(["services", "destroy", "pg"]);
        expect(noName.code).toBe(64);
        expect(noName.stderr).toContain("--confirm pg");
        const wrong = await cli(["services", "destroy", "pg", "--confirm", "pgx"]);
        expect(wrong.code).toBe(64);
        const linked = await cli(["services", "destroy", "pg", "--confirm", "pg"]);
        expect(linked.code).toBe(73);
        expect(linked.stderr).toContain("service pg is linked to doomed");
        const forced = await cli(["services", "destroy", "pg", "--confirm", "pg", "--force"]);
        expect(forced.code).toBe(0);
        const logs = await cli(["logs", "doomed"]);
        expect(logs.stdout).toContain("service pg unlinked: the service was destroyed");

        // apps destroy: the name, then gone.
        const unconfirmed = await cli(["apps", "destroy", "doomed"]);
        expect(unconfirmed.code).toBe(64);
        expect((await cli(["apps", "info", "doomed"])).code).toBe(0);
        expect((await cli(["apps", "destroy", "doomed", "--confirm", "doomed"])).code).toBe(0);
        expect((await cli(["apps", "info", "doomed"])).code).toBe(66);
        expect(existsSync(join(root, "slugs", "doomed"))).toBe(false);
      } finally {
        s.proc.kill("SIGTERM");
        await s.proc.exited;
      }
      // Nothing uses the world now: it goes, once named.
      expect((await lj(["world", "rm", "test"], { LIGHTJAIL_ROOT: root })).code).toBe(64);
      expect((await lj(["world", "rm", "test", "--confirm", "test"], { LIGHTJAIL_ROOT: root })).code).toBe(0);
    },
    120_000,
  );
});
