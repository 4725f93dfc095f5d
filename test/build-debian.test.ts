/**
 * Overlays over a real Debian world (debootstrap, cached across runs in DEBIAN_CACHE): the
 * ruby runtime from apt plus a gem-less Ruby app answering HTTP, and the postgres and redis
 * service overlays, each started once in a jail and queried with a real client.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RedisClient, SQL } from "bun";
import { buildApp } from "../src/build/app.ts";
import { ensureOverlay } from "../src/build/overlays.ts";
import { runJail, spawnJail } from "../src/jail/spawn.ts";
import { BUILD_CAPS } from "../src/jail/spec.ts";
import { discover, findPlugin } from "../src/plugins/registry.ts";
import { worldPath } from "../src/store/worlds.ts";
import { debianWorld, freePort, runSlug, waitForHttp } from "./build-helpers.ts";
import { lj, projectDir } from "./helpers/jail-env.ts";
import { rootTest } from "./helpers/root.ts";

let root: string;
let world: string;

beforeAll(async () => {
  if (process.getuid?.() !== 0) return;
  root = mkdtempSync(join(tmpdir(), "lj-debian-"));
  process.env.LIGHTJAIL_ROOT = root;
  // One subnet of its own for the whole file: this process and the CLIs it starts are one root,
  // and every process of a root must use the same subnet.
  process.env.LJ_SUBNET = "10.243.0.0/24";
  world = await debianWorld(root);
}, 300_000);
afterAll(() => {
  delete process.env.LJ_SUBNET;
  if (root) rmSync(root, { recursive: true, force: true });
});

rootTest(
  "lj build --type language ruby installs Ruby from apt; a gem-less app builds offline and answers",
  async () => {
    const r = await lj(["build", "--type", "language", "ruby", "--world", world], { LIGHTJAIL_ROOT: root });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/\[ruby \d+:\d\d\] ruby 3\.\d/);
    const layer = r.stdout.trim();
    expect(layer).toBe(join(root, "languages", "_builtin", "ruby", `@${world}`, "1.0.0", "root"));
    const t0 = performance.now();
    const hit = await lj(["build", "--type", "language", "ruby", "--world", world], { LIGHTJAIL_ROOT: root });
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(hit.stderr).toContain("cache hit");

    const lines: string[] = [];
    const slug = await buildApp(join(projectDir, "test/fixtures/apps/ruby-plain"), {
      app: "ruby-plain",
      world,
      log: (l) => lines.push(l),
    });
    expect(lines.join("\n")).toContain("Gemfile lists no gems: nothing to install (offline build)");
    expect(slug.processes.web).toEqual({ command: "ruby app.rb" });
    const port = await freePort();
    const jail = runSlug(slug, "web", port);
    try {
      const res = await waitForHttp(`http://127.0.0.1:${port}/`);
      expect(await res.text()).toMatch(/^ruby 3\.\d+\.\d+ says hello/);
    } finally {
      jail.kill("SIGKILL");
      await jail.closed;
    }
  },
  300_000,
);

async function startService(name: string, password: string) {
  const d = discover();
  const plugin = findPlugin(d, { type: "service", name });
  const o = await ensureOverlay(plugin, { world, discovery: d });
  const svc = plugin.manifest.service!;
  const port = await freePort();
  const data = mkdtempSync(join(root, `${name}-data-`));
  const jail = spawnJail({
    argv: ["/bin/sh", "-c", svc.start],
    layers: [worldPath(world), o.path],
    mounts: [{ src: data, dst: svc.dataDir, readonly: false }],
    env: {
      PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
      PORT: String(port),
      DATA_DIR: svc.dataDir,
      PASSWORD: password,
    },
    net: "host",
    caps: [...BUILD_CAPS],
    stdio: ["ignore", "pipe", "pipe"],
    limits: { memoryBytes: 1024 * 1048576, pids: 256 },
  });
  const out: string[] = [];
  const drain = async (s: ReadableStream<Uint8Array> | null) => {
    if (s) for await (const c of s) out.push(new TextDecoder().decode(c));
  };
  void drain(jail.stdout);
  void drain(jail.stderr);
  return { jail, port, out, svc, o };
}

async function until<T>(f: () => Promise<T>, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (e) {
      if (Date.now() > end) throw e;
      await Bun.sleep(250);
    }
  }
}

rootTest(
  "postgres: overlay built, started once in a jail, queried with a real client",
  async () => {
    const s = await startService("postgres", "s3cret");
    expect(s.svc.env.DATABASE_URL).toBe("postgres://postgres:${PASSWORD}@${HOST}:${PORT}/postgres");
    try {
      const url = s.svc.env
        .DATABASE_URL!.replace("${PASSWORD}", "s3cret")
        .replace("${HOST}", "127.0.0.1")
        .replace("${PORT}", String(s.port));
      const rows = await until(async () => {
        const sql = new SQL(url);
        try {
          return await sql`select 40 + 2 as answer, current_setting('server_version') as v`;
        } finally {
          await sql.close();
        }
      }, 60_000).catch((e) => {
        throw new Error(`${e}\n${s.out.join("")}`);
      });
      expect(rows[0].answer).toBe(42);
      expect(rows[0].v).toMatch(/^15\./);
    } finally {
      s.jail.kill("SIGKILL");
      await s.jail.closed;
    }
  },
  300_000,
);

rootTest(
  "redis: overlay built, started once in a jail, queried with a real client",
  async () => {
    const s = await startService("redis", "pw");
    try {
      const url = s.svc.env
        .REDIS_URL!.replace("${PASSWORD}", "pw")
        .replace("${HOST}", "127.0.0.1")
        .replace("${PORT}", String(s.port));
      const v = await until(async () => {
        const c = new RedisClient(url);
        try {
          await c.set("lj", "works");
          return await c.get("lj");
        } finally {
          c.close();
        }
      }, 30_000).catch((e) => {
        throw new Error(`${e}\n${s.out.join("")}`);
      });
      expect(v).toBe("works");
    } finally {
      s.jail.kill("SIGKILL");
      await s.jail.closed;
    }
  },
  300_000,
);

rootTest(
  "the PaaS runs a redis service from its plugin's overlay over a Debian world",
  async () => {
    const { setDefaultWorld } = await import("../src/store/worlds.ts");
    const { startServer } = await import("../src/server/serve.ts");
    await setDefaultWorld(world);
    const s = await startServer({ hostname: "127.0.0.1", port: 0, healthTimeoutMs: 60_000 });
    try {
      const call = async (method: string, path: string, body?: unknown) => {
        const r = await fetch(`${s.url}/api/v1${path}`, {
          method,
          headers: { authorization: `Bearer ${s.token}`, "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return (await r.json()) as {
          service: { runtime: string; state: string; env: Record<string, string> };
        };
      };
      const created = await call("POST", "/services", { type: "redis", name: "cache" });
      expect(created.service).toMatchObject({ runtime: "overlay", state: "up" });
      const url = created.service.env.REDIS_URL!;
      expect(url).toMatch(/^redis:\/\/default:[\w-]+@10\.243\.0\.\d+:6379\/0$/);
      // The host reaches the service's address; the client is the host's redis-cli.
      const ping = Bun.spawnSync(["redis-cli", "--no-auth-warning", "-u", url, "ping"]);
      expect(ping.stdout.toString()).toBe("PONG\n");
      await call("DELETE", "/services/cache");
    } finally {
      await s.stop();
    }
  },
  300_000,
);

rootTest(
  "a build reaches HTTPS registries through the host's CA bundle (a minbase world has none), and not without it",
  async () => {
    const dir = join(root, "src", "https-probe");
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, "Jailfile"),
      [
        "name https-probe",
        "version 1.0.0",
        "type tool",
        "#!/bin/sh",
        "set -e",
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends curl >/dev/null",
        // minbase has no CA certificates: only the bundle lightjail binds can make this work.
        "test ! -e /etc/ssl/certs/ca-certificates.crt",
        "curl -sS -o /dev/null https://registry.npmjs.org/ms && echo 'https via the host CA: ok'",
        "",
      ].join("\n"),
    );
    const ok = await lj(["build", join(dir, "Jailfile"), "--world", world], { LIGHTJAIL_ROOT: root });
    expect(ok.stderr).toContain("https via the host CA: ok");
    expect(ok.code).toBe(0);
    const without = await lj(["build", join(dir, "Jailfile"), "--world", world, "--force"], {
      LIGHTJAIL_ROOT: root,
      LJ_BUILD_PROXY: "0",
    });
    expect(without.code).toBe(70);
    expect(without.stderr).not.toContain("https via the host CA: ok");
    expect(without.stderr).toMatch(/curl: \(77\)|certificate/i);
  },
  300_000,
);

rootTest(
  "node, python and static overlays build over a Debian world and run their runtimes",
  async () => {
    const d = discover();
    for (const [name, probe, want] of [
      ["node", "node --version && npm --version", /^v\d+\.\d+\.\d+\n\d+\.\d+\.\d+$/],
      ["python", "python3 --version", /^Python 3\.\d+\.\d+$/],
      ["static", "test -x /opt/lj/bin/lj-static-server && perl -e 'print qq(perl ok)'", /^perl ok$/],
    ] as const) {
      const top = await ensureOverlay(findPlugin(d, { type: "language", name }), { world });
      const r = await runJail({
        layers: [worldPath(world), top.path],
        argv: ["/bin/sh", "-c", probe],
        env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" },
      });
      expect({ name, out: r.stdout.trim(), ok: want.test(r.stdout.trim()) }).toEqual({
        name,
        out: r.stdout.trim(),
        ok: true,
      });
    }
  },
  600_000,
);
