/**
 * Tenants against the platform and against each other, with real builds (the node plugin over
 * a host world), real jails and a real server. An attacker app's build (`npm run build`) and
 * its running process try what a hostile tenant would (test/fixtures/tenant/attacker/attack.sh):
 * read the state root (token, database, other apps' slugs, caches, logs, service data), reach
 * the API, the host's listeners, another app and an unlinked service, leave a setuid binary and
 * a FIFO in its slug; other tests fill a build's disk, flood its log, and exhaust a per-user
 * kernel limit. A second app (the victim) and a service show that they were not touched.
 *
 * The state root is under /usr/local, as the default /usr/local/lj is: the host world binds the
 * host's /usr into every jail.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import type { Socket, TCPSocketListener } from "bun";
import { createWorld } from "../src/build/worlds.ts";
import { spawnJail } from "../src/jail/spawn.ts";
import { type RunningServer, startServer } from "../src/server/serve.ts";
import { type Identity, identityOf } from "../src/store/identities.ts";
import { worldMounts, worldPath } from "../src/store/worlds.ts";
import { api, createApp, deployDir, textVia } from "./fixtures/paas/helpers.ts";
import { projectDir } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

let root: string;
let s: RunningServer;
let hostListener: TCPSocketListener | undefined;
const work = mkdtempSync("/tmp/lj-tenant-apps-");
const PROBES = 15;

/** The host's first address that is not loopback nor one of a jail's veths. */
function hostAddress(): string {
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (name === "lo" || name.startsWith("lj")) continue;
    const a = addrs?.find((x) => x.family === "IPv4" && !x.internal);
    if (a) return a.address;
  }
  throw new Error("this machine has no non-loopback IPv4 address");
}

function app(name: string, fixture: string, extra: Record<string, string> = {}): string {
  const dir = join(work, name);
  cpSync(fixture, dir, { recursive: true });
  for (const [f, body] of Object.entries(extra)) writeFileSync(join(dir, f), body);
  return dir;
}

const attackerFixture = join(projectDir, "test/fixtures/tenant/attacker");
const nodeHello = join(projectDir, "test/fixtures/paas/apps/node-hello");

/** Every probe line of a report; all must say denied, and all must have run. */
function expectAllDenied(report: string): void {
  const lines = report.split("\n").filter((l) => l.startsWith("PROBE "));
  expect(lines.filter((l) => !l.endsWith(" denied"))).toEqual([]);
  expect(lines.length).toBe(PROBES);
  const controls = report.split("\n").filter((l) => l.startsWith("CONTROL "));
  expect(controls).toEqual(["CONTROL own-listener open", "CONTROL own-files open"]);
}

async function runOnce(appName: string, command: string): Promise<{ status: number; out: string }> {
  const jail = s.paas.runs.once(appName, command);
  const [out, err, r] = await Promise.all([
    new Response(jail.stdout).text(),
    new Response(jail.stderr).text(),
    jail.exited,
  ]);
  await jail.closed;
  return { status: r.status, out: out + err };
}

const slugDir = (appName: string) => {
  const rel = s.paas.releases.list(appName)[0];
  if (!rel) throw new Error(`${appName} has no release`);
  return rel.slug.path;
};

let victim: Identity;
let attacker: Identity;

beforeAll(async () => {
  if (!isRoot()) return;
  root = mkdtempSync("/usr/local/lj-tenant-");
  process.env.LIGHTJAIL_ROOT = root;
  process.env.LJ_SUBNET = "10.244.0.0/24";
  await createWorld("test", "host");
  // Served on every address, as an operator exposing it would: a jail must still not reach it.
  s = await startServer({ hostname: "0.0.0.0", healthTimeoutMs: 20_000 });
  const listener = Bun.listen({
    hostname: "0.0.0.0",
    port: 0,
    socket: {
      data() {},
      open(sock: Socket) {
        sock.end("host secret\n");
      },
    },
  });
  hostListener = listener;
  await createApp(s, "victim");
  await api(s, "POST", "/apps/victim/config", { VICTIM_SECRET: "s3cr3t" }).catch(async () =>
    api(s, "PATCH", "/apps/victim/config", { VICTIM_SECRET: "s3cr3t" }),
  );
  const v = await deployDir(s, "victim", app("victim", nodeHello));
  if (v.deploy?.status !== "succeeded") throw new Error(`victim deploy failed:\n${v.log}`);
  await api(s, "POST", "/services", { type: "redis", name: "vault" });
  const svc = await api<{ service: { address: string } }>(s, "GET", "/services/vault");
  const victimAddr = s.paas.formation.ps("victim")[0]?.address;
  const targets = [
    `LJ_STATE='${root}'`,
    `API_PORT=${s.port}`,
    `HOST_ADDR=${hostAddress()}`,
    `HOST_PORT=${listener.port}`,
    `VICTIM_ADDR=${victimAddr}`,
    `SERVICE_ADDR=${svc.service.address}`,
  ].join("\n");
  await createApp(s, "attacker");
  const a = await deployDir(
    s,
    "attacker",
    app("attacker", attackerFixture, { "targets.env": `${targets}\n` }),
  );
  if (a.deploy?.status !== "succeeded") throw new Error(`attacker deploy failed:\n${a.log}`);
  victim = identityOf("app", "victim");
  attacker = identityOf("app", "attacker");
}, 600_000);

afterAll(async () => {
  rmSync(work, { recursive: true, force: true });
  if (!isRoot()) return;
  hostListener?.stop(true);
  await s?.stop();
  rmSync(root, { recursive: true, force: true });
});

describe("the state root", () => {
  rootTest("no jail sees it, not even root with DAC override over a host world that binds /usr", async () => {
    const token = join(root, "paas", "token");
    expect(existsSync(token)).toBe(true);
    const jail = spawnJail({
      layers: [worldPath("test")],
      mounts: await worldMounts("test"),
      argv: [
        "/bin/sh",
        "-c",
        `ls -A '${root}'; cat '${token}' && echo READ; ls /usr/local >/dev/null && echo USR-OK`,
      ],
      caps: ["DAC_OVERRIDE", "DAC_READ_SEARCH"],
      stdio: ["ignore", "pipe", "pipe"],
    });
    const [out, err] = await Promise.all([
      new Response(jail.stdout).text(),
      new Response(jail.stderr).text(),
    ]);
    await jail.exited;
    expect(out).not.toContain("READ");
    // The root is there (the mount point), empty: nothing of it shows.
    expect(out.trim().split("\n")).toEqual(["USR-OK"]);
    expect(err).toContain("No such file or directory");
  });

  rootTest("slugs, caches, logs, repositories and the database are root's alone on the host", () => {
    for (const d of ["paas", "slugs", "slugs/victim", "cache/apps", "ids", "tmp"]) {
      expect({ d, mode: lstatSync(join(root, d)).mode & 0o777 }).toEqual({ d, mode: 0o700 });
    }
    expect(lstatSync(join(root, "paas/token")).mode & 0o077).toBe(0);
    // The service's data is its own identity's, 0700, under a directory others may only cross.
    const data = lstatSync(join(root, "service-data/vault"));
    expect(data.mode & 0o777).toBe(0o700);
    expect(data.uid).toBe(identityOf("service", "vault").uid);
  });
});

describe("an attacker's build", () => {
  rootTest("reaches none of the platform's state or network, nor other tenants", () => {
    expectAllDenied(readFileSync(join(slugDir("attacker"), "app/build-report.txt"), "utf8"));
  });

  rootTest("runs as root of its own namespace, and what it wrote belongs to its app on the host", () => {
    const slug = join(slugDir("attacker"), "app");
    expect(readFileSync(join(slug, "build-uid.txt"), "utf8").trim()).toBe("0");
    for (const f of ["build-uid.txt", "server.js", "build-report.txt"]) {
      const st = lstatSync(join(slug, f));
      expect({ f, uid: st.uid, gid: st.gid }).toEqual({ f, uid: attacker.uid, gid: attacker.gid });
    }
    expect(attacker.uid).not.toBe(victim.uid);
    expect(attacker.uid).toBeGreaterThan(65535);
  });

  rootTest("its setuid binary and its FIFO do not survive publication", () => {
    const slug = join(slugDir("attacker"), "app");
    const suid = lstatSync(join(slug, "suid-node"));
    expect(suid.isFile()).toBe(true);
    expect(suid.mode & 0o7000).toBe(0);
    expect(suid.uid).toBe(attacker.uid);
    expect(existsSync(join(slug, "fifo"))).toBe(false);
    const log = readFileSync(`${slugDir("attacker")}.log`, "utf8");
    expect(log).toContain("PROBE read-token denied");
  });
});

describe("an attacker's running process", () => {
  rootTest("reaches none of the platform's state or network, nor other tenants", async () => {
    const r = await runOnce("attacker", "sh attack.sh run");
    expect(r.out).toContain("attack done (run)");
    expectAllDenied(r.out);
  });

  rootTest("runs as its app's own host uid, and the victim's as another", async () => {
    const a = await runOnce("attacker", "id -u; id -un");
    expect(a.out.trim().split("\n")).toEqual([String(attacker.uid), "app"]);
    const v = await runOnce("victim", "id -u");
    expect(v.out.trim()).toBe(String(victim.uid));
    expect(await textVia(s, "victim", "/")).toEqual({ status: 200, text: "hello from node web.1 v1\n" });
  });

  rootTest(
    "exhausting a per-user kernel limit (inotify instances) leaves other tenants unaffected",
    async () => {
      const grab =
        "import ctypes,sys,time\nlibc=ctypes.CDLL(None)\nn=0\nwhile libc.inotify_init()>=0: n+=1\nprint('held',n,flush=True)\ntime.sleep(60)";
      const one =
        "import ctypes\nlibc=ctypes.CDLL(None)\nprint('ok' if libc.inotify_init()>=0 else 'refused')";
      const holder = s.paas.runs.once("attacker", `python3 -c "${grab}"`);
      try {
        const reader = holder.stdout!.getReader();
        const first = new TextDecoder().decode((await reader.read()).value);
        expect(first).toMatch(/^held \d+/);
        // The attacker itself is at its limit (so the limit was reached, not some other one)...
        expect((await runOnce("attacker", `python3 -c "${one}"`)).out.trim()).toBe("refused");
        // ...and the victim is not.
        expect((await runOnce("victim", `python3 -c "${one}"`)).out.trim()).toBe("ok");
      } finally {
        holder.kill("SIGKILL");
        await holder.closed;
      }
    },
  );
});

describe("builds are bounded", () => {
  rootTest(
    "a build that fills its disk fails clearly, publishes nothing and leaves no disk behind",
    async () => {
      process.env.LJ_BUILD_DISK_MB = "96";
      try {
        await createApp(s, "filler");
        const dir = app("filler", nodeHello, {
          "package.json": JSON.stringify({
            name: "filler",
            version: "1.0.0",
            scripts: { build: "dd if=/dev/zero of=/app/big bs=1M count=400" },
          }),
        });
        const r = await deployDir(s, "filler", dir);
        expect(r.deploy?.status).toBe("failed");
        expect(r.log).toContain("No space left on device");
        expect(r.log).toContain("its disk of 96 MB may be full");
        expect(readdirSync(join(root, "slugs", "filler")).filter((n) => !n.startsWith("."))).toEqual([]);
        expect(readdirSync(join(root, "run", "builds"))).toEqual([]);
      } finally {
        delete process.env.LJ_BUILD_DISK_MB;
      }
    },
  );

  rootTest("a build's flood of output keeps the log, the deploy record and the server bounded", async () => {
    await createApp(s, "flood");
    const dir = app("flood", nodeHello, {
      "package.json": JSON.stringify({
        name: "flood",
        version: "1.0.0",
        scripts: { build: "yes 'flooding the log with a line of output' | head -c 80000000; echo LAST-LINE" },
      }),
    });
    const rss = process.memoryUsage.rss();
    const r = await deployDir(s, "flood", dir);
    expect(r.deploy?.status).toBe("succeeded");
    // The head, a line saying what was left out, and the tail with the build's last line.
    expect(r.log).toMatch(/lj: \d+ lines \(\d+ bytes\) of output left out/);
    expect(r.log).toContain("LAST-LINE");
    expect(r.log.length).toBeLessThan(4 * 1024 * 1024);
    const id = r.deploy?.id;
    const stored = await api<{ log: string[] }>(s, "GET", `/deploys/${id}`);
    expect(stored.log.length).toBeGreaterThan(100);
    expect(stored.log.join("\n").length).toBeLessThan(4 * 1024 * 1024);
    const logFile = readFileSync(`${slugDir("flood")}.log`);
    expect(logFile.length).toBeLessThan(2 * 1024 * 1024);
    // 80 MB went through; the server kept far less of it.
    expect(process.memoryUsage.rss() - rss).toBeLessThan(200 * 1024 * 1024);
  });

  rootTest("a build whose output links out of its tree publishes nothing", async () => {
    await createApp(s, "linker");
    const dir = app("linker", nodeHello, {
      "package.json": JSON.stringify({
        name: "linker",
        version: "1.0.0",
        scripts: { build: "ln -s ../../../../etc/shadow /app/escape" },
      }),
    });
    const r = await deployDir(s, "linker", dir);
    expect(r.deploy?.status).toBe("failed");
    expect(r.log).toContain('has a symlink that leaves its tree: "escape" -> "../../../../etc/shadow"');
    expect(readdirSync(join(root, "slugs", "linker")).filter((n) => !n.startsWith("."))).toEqual([]);
  });
});

describe("corporate set-ups and builds without a network", () => {
  rootTest(
    "a build gets the host's proxy settings and CA bundle; net = none leaves it no network",
    async () => {
      const hostCa = "/etc/ssl/certs/ca-certificates.crt";
      process.env.HTTPS_PROXY = "http://proxy.corp.invalid:3128";
      process.env.no_proxy = "internal.corp.invalid";
      try {
        await createApp(s, "corp");
        const script = [
          "env | grep -i -E '^(https_proxy|no_proxy|ssl_cert_file|node_extra_ca_certs)=' | sort > /app/build-env.txt",
          'cmp -s /tmp/lj/ca-certificates.crt "$SSL_CERT_FILE" && sha256sum < "$SSL_CERT_FILE" | cut -c1-64 > /app/ca.txt',
          "awk -F: 'NR > 2 { gsub(/ /, \"\", $1); print $1 }' /proc/net/dev > /app/links.txt",
        ].join(" && ");
        const dir = app("corp", nodeHello, {
          "lj.toml": '[build]\nnet = "none"\n',
          "package.json": JSON.stringify({ name: "corp", version: "1.0.0", scripts: { build: script } }),
        });
        const r = await deployDir(s, "corp", dir);
        if (r.deploy?.status !== "succeeded") throw new Error(r.log);
        const slug = join(slugDir("corp"), "app");
        expect(readFileSync(join(slug, "build-env.txt"), "utf8").split("\n").filter(Boolean)).toEqual([
          "HTTPS_PROXY=http://proxy.corp.invalid:3128",
          "NODE_EXTRA_CA_CERTS=/tmp/lj/ca-certificates.crt",
          "NO_PROXY=internal.corp.invalid",
          "SSL_CERT_FILE=/tmp/lj/ca-certificates.crt",
          "https_proxy=http://proxy.corp.invalid:3128",
          "no_proxy=internal.corp.invalid",
        ]);
        const want = new Bun.CryptoHasher("sha256").update(readFileSync(hostCa)).digest("hex");
        expect(readFileSync(join(slug, "ca.txt"), "utf8").trim()).toBe(want);
        // No network but its own loopback.
        expect(readFileSync(join(slug, "links.txt"), "utf8").trim()).toBe("lo");

        process.env.LJ_BUILD_PROXY = "0";
        const again = await deployDir(
          s,
          "corp",
          app("corp-2", dir, {
            "package.json": JSON.stringify({
              name: "corp",
              version: "1.0.0",
              scripts: { build: "env > /app/build-env.txt" },
            }),
          }),
        );
        if (again.deploy?.status !== "succeeded") throw new Error(again.log);
        const env2 = readFileSync(join(slugDir("corp"), "app", "build-env.txt"), "utf8");
        expect(env2).not.toMatch(/^(https?_proxy|no_proxy|ssl_cert_file|node_extra_ca_certs)=/im);
      } finally {
        delete process.env.HTTPS_PROXY;
        delete process.env.no_proxy;
        delete process.env.LJ_BUILD_PROXY;
      }
    },
  );
});
