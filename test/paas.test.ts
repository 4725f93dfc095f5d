/**
 * The PaaS server end to end with real jails, real HTTP and the real git client, over a
 * test-only build (test/fixtures/paas/fake-build.ts: copies the source, reads the Procfile) so
 * that everything around builds is exercised without language plugins. test/paas-e2e.test.ts
 * does the same through the real buildApp.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { startServe } from "../scripts/serve-process.ts";
import { cgroupLayout } from "../src/jail/cgroup.ts";
import { type RunningServer, startServer } from "../src/server/serve.ts";
import { paths } from "../src/store/paths.ts";
import { fakeBuild } from "./fixtures/paas/fake-build.ts";
import {
  api,
  appCopy,
  auth,
  createApp,
  deployDir,
  deployTar,
  gitRemote,
  makeTar,
  removeAppCopies,
  tarGz,
  textVia,
  until,
  viaRouter,
} from "./fixtures/paas/helpers.ts";
import { type JailEnv, lj, makeJailEnv, runCommand } from "./helpers/jail-env.ts";
import { jailLeases } from "./helpers/leases.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

let env: JailEnv;
let s: RunningServer;

beforeAll(async () => {
  if (!isRoot()) return;
  process.env.LJ_SUBNET = "10.237.0.0/24";
  env = await makeJailEnv();
  s = await startServer({
    build: fakeBuild,
    healthTimeoutMs: 8000,
    keepReleases: 4,
    maxUploadBytes: 1024 * 1024,
    archiveLimits: { maxEntries: 200, maxTotalBytes: 4 * 1024 * 1024, maxPathBytes: 200 },
  });
});

afterAll(async () => {
  removeAppCopies();
  if (!isRoot()) return;
  await s?.stop();
  env?.cleanup();
});

const run = (argv: string[]) => runCommand(argv);

const cli = (args: string[]) =>
  lj([...args], { LJ_REMOTE: s.url, LJ_TOKEN: s.token, LIGHTJAIL_ROOT: env.root });

describe("auth and errors", () => {
  rootTest(
    "missing or wrong token: 401 on the API and on git; health needs none; the token file is 0600",
    async () => {
      expect((await fetch(`${s.url}/api/v1/health`)).status).toBe(200);
      const none = await fetch(`${s.url}/api/v1/apps`);
      expect(none.status).toBe(401);
      expect(((await none.json()) as { error: { code: string } }).error.code).toBe("auth-required");
      const wrong = await fetch(`${s.url}/api/v1/apps`, { headers: auth(s, "lj_wrong") });
      expect(wrong.status).toBe(401);
      expect(((await wrong.json()) as { error: { code: string } }).error.code).toBe("bad-token");
      await createApp(s, "authapp");
      const g = await fetch(`${s.url}/git/authapp.git/info/refs?service=git-receive-pack`);
      expect(g.status).toBe(401);
      expect(g.headers.get("www-authenticate")).toContain("Basic");
      const gw = await fetch(`${s.url}/git/authapp.git/info/refs?service=git-receive-pack`, {
        headers: { authorization: `Basic ${btoa("x:nope")}` },
      });
      expect(gw.status).toBe(401);
      // The real git client, with a wrong password and with none.
      const dir = appCopy("node-hello");
      await run(["git", "init", "-q", "-b", "main", dir]);
      await run(["git", "-C", dir, "add", "-A"]);
      await run(["git", "-C", dir, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]);
      const u = new URL(s.url);
      const push = await run(["git", "-C", dir, "push", `http://x:bad@${u.host}/git/authapp.git`, "main"]);
      expect(push.code).not.toBe(0);
      expect(push.stderr).toMatch(/Authentication failed|401/);
      const anon = await run(["git", "-C", dir, "push", `http://${u.host}/git/authapp.git`, "main"]);
      expect(anon.code).not.toBe(0);
      expect(anon.stderr).toMatch(/could not read Username|Authentication failed|401/);
      expect((statSync(paths.paasToken()).mode & 0o777).toString(8)).toBe("600");
    },
  );

  rootTest(
    "errors are {error:{code,message,hint}} with proper statuses; JSON bodies are size-limited",
    async () => {
      const r = await fetch(`${s.url}/api/v1/apps/nope`, { headers: auth(s) });
      expect(r.status).toBe(404);
      const j = (await r.json()) as { error: { code: string; message: string; hint: string } };
      expect(j.error.code).toBe("app-not-found");
      expect(j.error.hint).toContain("lj apps create");
      const bad = await fetch(`${s.url}/api/v1/apps`, {
        method: "POST",
        headers: { ...auth(s), "content-type": "application/json" },
        body: JSON.stringify({ name: "Bad_Name" }),
      });
      expect(bad.status).toBe(400);
      const big = await fetch(`${s.url}/api/v1/apps`, {
        method: "POST",
        headers: { ...auth(s), "content-type": "application/json" },
        body: JSON.stringify({ name: "x".repeat(100_000) }),
      });
      expect(big.status).toBe(413);
      await createApp(s, "dupe");
      const dupe = await fetch(`${s.url}/api/v1/apps`, {
        method: "POST",
        headers: { ...auth(s), "content-type": "application/json" },
        body: JSON.stringify({ name: "dupe" }),
      });
      expect(dupe.status).toBe(409);
    },
  );
});

describe("deploys", () => {
  rootTest(
    "a node app deployed by tarball answers through the router; python and a static site too",
    async () => {
      await createApp(s, "node1");
      const d = await deployDir(s, "node1", appCopy("node-hello"));
      expect(d.deploy?.status).toBe("succeeded");
      expect(d.log).toContain("Health check passed");
      expect(d.log).toContain("deploy 1 succeeded: release v1");
      expect(await textVia(s, "node1")).toEqual({ status: 200, text: "hello from node web.1 v1\n" });
      // A streamed request body goes through the router.
      const post = await viaRouter(s, "node1", "/", { method: "POST", body: "x".repeat(300_000) });
      expect(await post.text()).toBe("got 300000 bytes\n");
      await createApp(s, "py1");
      const py = await deployDir(s, "py1", appCopy("py-hello"));
      expect(
        `${py.log}${s.paas.logs
          .tail("py1", 20)
          .map((l) => `${l.source}: ${l.line}\n`)
          .join("")}`,
      ).toContain("succeeded");
      expect(await textVia(s, "py1")).toEqual({ status: 200, text: "hello from python web.1\n" });
      await createApp(s, "site1");
      expect((await deployDir(s, "site1", appCopy("static"))).deploy?.status).toBe("succeeded");
      const site = await textVia(s, "site1", "/index.html");
      expect(site.status).toBe(200);
      expect(site.text).toContain("<h1>static site</h1>");
      // Unknown apps: 404 page; the access log has the requests.
      expect((await textVia(s, "ghost")).status).toBe(404);
      s.paas.logs.flush();
      await s.flushAccessLog();
      const logs = await (
        await fetch(`${s.url}/api/v1/apps/node1/logs?lines=50`, { headers: auth(s) })
      ).text();
      expect(logs).not.toContain("router: GET / 200"); // only router errors reach the app's log
      const access = readFileSync(join(paths.paasLogs(), "access.log"), "utf8");
      expect(access).toMatch(/ node1 GET \/ 200 [\d.]+ms -> 10\.237\.0\.\d+:5000\n/);
      expect(access).toMatch(/ ghost GET \/ 404 /);
      expect(logs).toContain("web.1: listening on 5000");
    },
    60_000,
  );

  rootTest(
    "git push with the real git client: build log as remote: lines, a failed build rejects the push",
    async () => {
      await createApp(s, "gitapp");
      const dir = appCopy("node-hello");
      const git = await gitRemote(s, "gitapp", dir);
      const push = await git("push", "lj", "main");
      const err = push.stderr;
      expect(push.code).toBe(0);
      expect(err).toContain("remote: -----> Building gitapp from git:");
      expect(err).toContain("remote: =====> deploy");
      expect(await textVia(s, "gitapp")).toEqual({ status: 200, text: "hello from node web.1 v1\n" });
      // A broken build: the push is rejected, v1 keeps serving, the ref does not move.
      writeFileSync(join(dir, "FAIL_BUILD"), "");
      await git("add", "-A");
      await git("commit", "-qm", "broken");
      const bad = await git("push", "lj", "main");
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toContain("remote: -----> Deploy failed: the build script failed");
      expect(bad.stderr).toContain("pre-receive hook declined");
      expect(await textVia(s, "gitapp")).toEqual({ status: 200, text: "hello from node web.1 v1\n" });
      const refs = Bun.spawnSync([
        "git",
        "--git-dir",
        join(paths.paasGit(), "gitapp.git"),
        "rev-parse",
        "main",
      ]);
      expect(refs.stdout.toString().trim()).toBe((await git("rev-parse", "HEAD~1")).stdout.trim());
    },
    60_000,
  );

  /** An app serving v1, then a deploy of `files` over node-hello that must fail. */
  async function failedOver(app: string, files: Record<string, string>) {
    await createApp(s, app);
    expect((await deployDir(s, app, appCopy("node-hello"))).deploy?.status).toBe("succeeded");
    const d = await deployDir(s, app, appCopy("node-hello", files));
    expect(d.deploy?.status).toBe("failed");
    expect(d.log).toContain("Release v1 is still serving");
    expect(await textVia(s, app)).toEqual({ status: 200, text: "hello from node web.1 v1\n" });
    const rels = await api<{ releases: { version: number }[] }>(s, "GET", `/apps/${app}/releases`);
    expect(rels.releases.map((r) => r.version)).toEqual([1]);
    const ps = await api<{ processes: { release: number; state: string }[] }>(s, "GET", `/apps/${app}/ps`);
    expect(ps.processes).toEqual([expect.objectContaining({ release: 1, state: "up" })]);
    return d;
  }

  rootTest("a failed build keeps the release serving", async () => {
    await failedOver("keep-build", { FAIL_BUILD: "" });
  });

  rootTest(
    "a web process that never listens keeps the release serving",
    async () => {
      // Listens on the wrong port: never healthy.
      const d = await failedOver("keep-deaf", { Procfile: "web: PORT=6000 node server.js\n" });
      expect(d.deploy?.error).toContain("health check");
    },
    30_000,
  );

  rootTest(
    "a web process that crashes keeps the release serving",
    async () => {
      await failedOver("keep-crash", { Procfile: "web: exit 7\n" });
    },
    30_000,
  );

  rootTest(
    "two deploys of one app run one after the other; another app's deploy is not held up",
    async () => {
      await createApp(s, "serial");
      await createApp(s, "other");
      const slow = appCopy("node-hello", { SLOW_BUILD: "1500" });
      const [a, b, o] = await Promise.all([
        deployDir(s, "serial", slow),
        (async () => {
          await Bun.sleep(200);
          return deployDir(s, "serial", appCopy("node-hello"));
        })(),
        (async () => {
          await Bun.sleep(300);
          const t0 = performance.now();
          const r = await deployDir(s, "other", appCopy("node-hello"));
          return { ...r, ms: performance.now() - t0 };
        })(),
      ]);
      expect(a.deploy?.status).toBe("succeeded");
      expect(b.deploy?.status).toBe("succeeded");
      expect(b.log).toContain("Waiting for the deploy before this one to finish");
      expect([a.deploy?.release, b.deploy?.release]).toEqual([1, 2]);
      expect(o.deploy?.status).toBe("succeeded");
      expect(o.ms).toBeLessThan(1500);
      expect(await textVia(s, "serial")).toEqual({ status: 200, text: "hello from node web.1 v2\n" });
    },
    60_000,
  );
});

describe("deploy logs", () => {
  rootTest(
    "the deploy log streams while the deploy runs, and is stored",
    async () => {
      await createApp(s, "streamy");
      const body = await tarGz(appCopy("node-hello", { SLOW_BUILD: "1500" }));
      const r = await fetch(`${s.url}/api/v1/apps/streamy/source`, { method: "PUT", headers: auth(s), body });
      const id = r.headers.get("x-deploy-id");
      const reader = r.body!.getReader();
      let early = "";
      while (!early.includes("SLOW_BUILD present"))
        early += new TextDecoder().decode((await reader.read()).value);
      const mid = await api<{ status: string }>(s, "GET", `/deploys/${id}`);
      expect(mid.status).toBe("running");
      // A second reader follows the same deploy live.
      const follow = await fetch(`${s.url}/api/v1/deploys/${id}/log?follow=1`, { headers: auth(s) });
      let rest = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        rest += new TextDecoder().decode(value);
      }
      expect(rest).toContain(`=====> deploy ${id} succeeded: release v1 is serving`);
      expect(await follow.text()).toContain(`=====> deploy ${id} succeeded`);
      const stored = await api<{ status: string; log: string[] }>(s, "GET", `/deploys/${id}`);
      expect(stored.status).toBe("succeeded");
      expect(stored.log.join("\n")).toBe((early + rest).trimEnd());
    },
    30_000,
  );
});

describe("archive safety", () => {
  const cases: [string, () => Promise<Buffer>, RegExp][] = [
    ["absolute path", () => makeTar([{ name: "/etc/evil", body: "x" }]), /absolute-path/],
    ["dot-dot", () => makeTar([{ name: "a/../../evil", body: "x" }]), /dot-dot/],
    [
      "symlink escaping the tree",
      () => makeTar([{ name: "l", type: "symlink", linkname: "../../etc" }]),
      /symlink-escape/,
    ],
    [
      "absolute symlink",
      () => makeTar([{ name: "l", type: "symlink", linkname: "/etc/passwd" }]),
      /symlink-escape/,
    ],
    [
      "write through a symlink",
      () =>
        makeTar([
          { name: "d", type: "symlink", linkname: "." },
          { name: "d/x", body: "x" },
        ]),
      /through-symlink|symlink/,
    ],
    [
      "hardlink out",
      () => makeTar([{ name: "h", type: "link", linkname: "/etc/passwd" }]),
      /hardlink|absolute/,
    ],
    ["device node", () => makeTar([{ name: "dev", type: "character-device" }]), /entry-type/],
    ["fifo", () => makeTar([{ name: "fifo", type: "fifo" }]), /entry-type/],
    [
      "too many entries",
      () => makeTar(Array.from({ length: 250 }, (_, i) => ({ name: `f${i}`, body: "x" }))),
      /too-many-entries/,
    ],
    ["path too long", () => makeTar([{ name: `${"a/".repeat(120)}f`, body: "x" }]), /path-too-long|too-deep/],
    [
      "too many bytes",
      async () => gzipSync(await makeTar([{ name: "big", body: Buffer.alloc(5 * 1024 * 1024, 1) }])),
      /too-many-bytes|file-too-large|compression-ratio/,
    ],
    [
      "gzip bomb",
      async () => gzipSync(await makeTar([{ name: "zeros", body: Buffer.alloc(3 * 1024 * 1024) }])),
      /compression-ratio/,
    ],
    [
      "duplicate names",
      () =>
        makeTar([
          { name: "a", body: "1" },
          { name: "a", body: "2" },
        ]),
      /duplicate/,
    ],
    ["backslash", () => makeTar([{ name: "a\\..\\..\\x", body: "1" }]), /bad-name/],
    [
      "truncated archive",
      async () => (await makeTar([{ name: "a", body: "x".repeat(5000) }])).subarray(0, 1000),
      /malformed/,
    ],
  ];

  rootTest(
    "every malicious tarball is rejected with its entry and rule, nothing is written, the release keeps serving",
    async () => {
      await createApp(s, "safe");
      expect((await deployDir(s, "safe", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      for (const [what, make, rule] of cases) {
        const r = await deployTar(s, "safe", await make());
        expect({ what, status: r.status }).toEqual({ what, status: 422 });
        expect({ what, code: r.error?.code }).toEqual({ what, code: expect.stringMatching(rule) });
        expect(r.error?.message).toContain("rejected");
        expect(readdirSync(paths.paasIncoming())).toEqual([]);
      }
      expect(await textVia(s, "safe")).toEqual({ status: 200, text: "hello from node web.1 v1\n" });
      const deploys = await api<{ deploys: unknown[] }>(s, "GET", "/apps/safe/deploys");
      expect(deploys.deploys.length).toBe(1);
    },
    60_000,
  );

  rootTest(
    "setuid/setgid bits and ownership are stripped; an inside symlink is kept",
    async () => {
      await createApp(s, "modes");
      const server = readFileSync(join(import.meta.dir, "fixtures/paas/apps/node-hello/server.js"), "utf8");
      const t = await makeTar([
        { name: "Procfile", body: "web: node server.js\n" },
        { name: "server.js", body: server },
        { name: "suid", body: "#!/bin/sh\n", mode: 0o6755 },
        { name: "link", type: "symlink", linkname: "server.js" },
      ]);
      const d = await deployTar(s, "modes", t);
      expect(d.deploy?.status).toBe("succeeded");
      const r = await fetch(`${s.url}/api/v1/apps/modes/run`, {
        method: "POST",
        headers: { ...auth(s), "content-type": "application/json" },
        body: JSON.stringify({ command: "stat -c '%a %u' suid; readlink link" }),
      });
      const frames = (await r.text())
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
      expect(frames.map((f) => f.out ?? "").join("")).toBe("755 0\nserver.js\n");
      expect(frames.at(-1)).toEqual(expect.objectContaining({ exit: 0 }));
    },
    30_000,
  );

  rootTest("an upload over the size cap is refused with 413", async () => {
    await createApp(s, "huge");
    // Random bytes do not compress: the compressed stream passes the 1 MiB cap first.
    const t = gzipSync(
      await makeTar([
        { name: "noise", body: Buffer.from(crypto.getRandomValues(new Uint8Array(3 * 1024 * 1024)).buffer) },
      ]),
    );
    // Refused before the body is read to its end, with a length and chunked (counted as it
    // streams); the client's next request, on whatever connection it picks, is answered as
    // usual. A few rounds: a connection kept open after such a refusal failed only sometimes.
    for (let round = 0; round < 20; round++) {
      const declared = await deployTar(s, "huge", t);
      expect(declared.status).toBe(413);
      expect(declared.error?.code).toBe("upload-too-large");
      const chunked = await fetch(`${s.url}/api/v1/apps/huge/source`, {
        method: "PUT",
        headers: auth(s),
        body: new Blob([t]).stream(),
      });
      expect(chunked.status).toBe(413);
      expect(((await chunked.json()) as { error: { code: string } }).error.code).toBe("upload-too-large");
      await createApp(s, `after-huge-${round}`);
    }
    expect(existsSync(paths.paasIncoming()) ? readdirSync(paths.paasIncoming()) : []).toEqual([]);
  });
});

describe("release phase", () => {
  rootTest(
    "a Procfile's release command runs once per release before its processes; a failing one keeps the old release",
    async () => {
      await createApp(s, "rel");
      const ok = await deployDir(
        s,
        "rel",
        appCopy("node-hello", { Procfile: "web: node server.js\nrelease: echo migrating $LJ_RELEASE\n" }),
      );
      expect(ok.deploy?.status).toBe("succeeded");
      expect(ok.log).toContain("Running the release command of v1: echo migrating $LJ_RELEASE");
      expect(ok.log).toContain("migrating v1");
      // Not a process type: nothing runs it after the release phase.
      expect(s.paas.formation.ps("rel").map((p) => p.name)).toEqual(["web.1"]);
      const bad = await deployDir(
        s,
        "rel",
        appCopy("node-hello", { Procfile: "web: node server.js\nrelease: echo broken >&2; exit 4\n" }),
      );
      expect(bad.deploy?.status).toBe("failed");
      expect(bad.log).toContain("broken");
      expect(bad.log).toContain("the release command of v2 exited with status 4");
      expect(await textVia(s, "rel")).toEqual({ status: 200, text: "hello from node web.1 v1\n" });
      // A config change is a new release: the release command runs again.
      await api(s, "PATCH", "/apps/rel/config", { GREETING: "hi" });
      const log = await (await fetch(`${s.url}/api/v1/apps/rel/logs?lines=200`, { headers: auth(s) })).text();
      expect(log).toContain("migrating v2");
      const scaled = await fetch(`${s.url}/api/v1/apps/rel/formation`, {
        method: "PATCH",
        headers: { ...auth(s), "content-type": "application/json" },
        body: JSON.stringify({ release: 1 }),
      });
      expect(scaled.status).toBe(400);
    },
    60_000,
  );
});

describe("running apps", () => {
  rootTest(
    "config change makes a release with the new env; rollback brings back the old one at once",
    async () => {
      await createApp(s, "cfg");
      expect((await deployDir(s, "cfg", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      const c = await cli(["config", "set", "cfg", "GREETING=hi there", "--json"]);
      expect(c.stderr).toBe("");
      expect(c.code).toBe(0);
      expect(JSON.parse(c.stdout).release).toBe(2);
      expect(JSON.parse((await textVia(s, "cfg", "/env")).text)).toEqual(
        expect.objectContaining({ GREETING: "hi there", release: "v2" }),
      );
      const get = await cli(["config", "get", "cfg", "GREETING"]);
      expect(get).toEqual({ code: 0, stdout: "hi there\n", stderr: "" });
      const rb = await cli(["rollback", "cfg", "v1"]);
      expect(rb).toEqual({ code: 0, stdout: "rolled back cfg to v1: now release v3\n", stderr: "" });
      expect(JSON.parse((await textVia(s, "cfg", "/env")).text)).toEqual(
        expect.objectContaining({ GREETING: null, release: "v3" }),
      );
      const rels = await cli(["releases", "cfg"]);
      expect(rels.code).toBe(0);
      expect(rels.stdout).toContain("rollback to v1");
      expect(rels.stdout).toContain("config change: GREETING");
      // Releases beyond the kept count (4 here) are pruned.
      for (let i = 0; i < 3; i++) await api(s, "PATCH", "/apps/cfg/config", { N: String(i) });
      const kept = await api<{ releases: { version: number }[] }>(s, "GET", "/apps/cfg/releases");
      expect(kept.releases.map((r) => r.version)).toEqual([6, 5, 4, 3]);
      const gone = await cli(["rollback", "cfg", "v1"]);
      expect(gone.code).toBe(66);
      expect(gone.stderr).toContain("has no release v1");
    },
    60_000,
  );

  rootTest(
    "scale to 2: both instances serve; scale to 0: 503 page; lj ps shows them",
    async () => {
      await createApp(s, "scaled");
      expect((await deployDir(s, "scaled", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      const sc = await cli(["scale", "scaled", "web=2"]);
      expect(sc.code).toBe(0);
      expect(sc.stdout).toContain("web.2 up");
      const seen = new Set<string>();
      for (let i = 0; i < 10; i++) seen.add((await textVia(s, "scaled")).text);
      expect([...seen].sort()).toEqual(["hello from node web.1 v1\n", "hello from node web.2 v1\n"]);
      const ps = await cli(["ps", "scaled"]);
      expect(ps.code).toBe(0);
      // Its descriptors against the limit app processes get by default.
      expect(ps.stdout).toMatch(/web\.1\s+v1\s+up\s+0\s+\d+\.\d MB\s+\d+\/16384\s/);
      expect(ps.stdout).toMatch(/web\.2\s+v1\s+up/);
      await cli(["scale", "scaled", "web=0"]);
      const down = await textVia(s, "scaled");
      expect(down.status).toBe(503);
      expect(down.text).toContain("No instance of <b>scaled</b> is up");
      await cli(["scale", "scaled", "web=1"]);
      expect((await textVia(s, "scaled")).status).toBe(200);
    },
    60_000,
  );

  rootTest(
    "a killed instance is restarted by the supervisor",
    async () => {
      await createApp(s, "phoenix");
      expect((await deployDir(s, "phoenix", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      expect((await textVia(s, "phoenix", "/crash")).text).toBe("bye\n");
      const ps = await until(async () => {
        const r = await api<{ processes: { restarts: number; state: string; lastExit: string }[] }>(
          s,
          "GET",
          "/apps/phoenix/ps",
        );
        return r.processes[0]?.restarts === 1 && r.processes[0].state === "up" ? r : null;
      });
      expect(ps.processes[0]!.lastExit).toBe("exited with status 3");
      expect(await textVia(s, "phoenix")).toEqual({ status: 200, text: "hello from node web.1 v1\n" });
      // SIGKILL from outside to the app's own process, as the OOM killer would: the command
      // runs without a shell in between, so its end is its own.
      const jail = (
        s.paas.formation as unknown as {
          p: { scheduler: { sets: Map<string, { instances: { jail: { pid: number } }[] }> } };
        }
      ).p.scheduler.sets.get("phoenix")!.instances[0]!.jail;
      const payload = Number(readFileSync(`/proc/${jail.pid}/task/${jail.pid}/children`, "utf8").trim());
      expect(readFileSync(`/proc/${payload}/comm`, "utf8").trim()).toBe("node");
      process.kill(payload, "SIGKILL");
      const killed = await until(async () => {
        const r = await api<{ processes: { restarts: number; state: string; lastExit: string }[] }>(
          s,
          "GET",
          "/apps/phoenix/ps",
        );
        return r.processes[0]?.restarts === 2 && r.processes[0].state === "up" ? r : null;
      });
      expect(killed.processes[0]!.lastExit).toBe("was killed by SIGKILL");
      expect((await textVia(s, "phoenix")).status).toBe(200);
    },
    60_000,
  );

  rootTest(
    "per-type limits: lj scale web:memory=96 web:pids=32 restarts web with them",
    async () => {
      await createApp(s, "limits");
      expect((await deployDir(s, "limits", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      const r = await cli(["scale", "limits", "web:memory=96", "web:pids=32", "--json"]);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout).formation.web).toEqual({ count: 1, memoryMb: 96, pids: 32 });
      const jail = (
        s.paas.formation as unknown as {
          p: { scheduler: { sets: Map<string, { instances: { jail: { cgroups: string[] } }[] }> } };
        }
      ).p.scheduler.sets.get("limits")!.instances[0]!.jail;
      const read = (f: string) =>
        jail.cgroups.map((d) => {
          try {
            return readFileSync(join(d, f), "utf8").trim();
          } catch {
            return null;
          }
        });
      const mem = [...read("memory.max"), ...read("memory.limit_in_bytes")].filter(Boolean);
      const pids = read("pids.max").filter(Boolean);
      expect(mem).toContain(String(96 * 1024 * 1024));
      expect(pids).toContain("32");
      expect((await textVia(s, "limits")).status).toBe(200);
    },
    30_000,
  );

  rootTest(
    "lj logs -f follows new lines as they come",
    async () => {
      await createApp(s, "follow");
      expect((await deployDir(s, "follow", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      const p = Bun.spawn(
        [process.execPath, join(import.meta.dir, "..", "src/cli/lj.ts"), "logs", "follow", "-f", "-n", "1"],
        {
          env: { ...process.env, LJ_REMOTE: s.url, LJ_TOKEN: s.token },
          stdout: "pipe",
          stderr: "pipe",
        },
      );
      const reader = p.stdout.getReader();
      let out = "";
      const readUntil = async (text: string) => {
        while (!out.includes(text)) out += new TextDecoder().decode((await reader.read()).value);
      };
      await readUntil("\n"); // the one line of history
      await cli(["config", "set", "follow", "X=1"]);
      await readUntil("Released v2: config change: X");
      p.kill();
      await p.exited;
      expect(out).toContain("lj: -----> Starting v2 processes: web=1");
    },
    30_000,
  );

  rootTest(
    "lj run runs a one-off command in a fresh jail of the release and streams its output",
    async () => {
      await createApp(s, "oneoff");
      expect((await deployDir(s, "oneoff", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      const r = await cli([
        "run",
        "oneoff",
        "--",
        "sh",
        "-c",
        "echo out $LJ_PROCESS; echo err >&2; head -c 1 package.json; exit 4",
      ]);
      expect(r).toEqual({ code: 4, stdout: "out run.1\n{", stderr: "err\n" });
      const logs = await cli(["logs", "oneoff", "-n", "200"]);
      expect(logs.code).toBe(0);
      expect(logs.stdout).toMatch(/lj: deploy \d+ succeeded: v1/);
    },
    30_000,
  );

  rootTest("lj deploy leaves out what .gitignore names", async () => {
    const dir = appCopy("node-hello", {
      ".gitignore": "secret.txt\nbuild/\n",
      "secret.txt": "do not ship",
    });
    expect((await cli(["apps", "create", "cliapp"])).stdout).toContain("created cliapp");
    const d = await cli(["deploy", dir, "--app", "cliapp"]);
    expect(d.stderr).toContain("uploaded 4 files");
    expect(d.stdout).toContain("deployed cliapp v1");
    expect(d.code).toBe(0);
    const ls = await lj(["run", "cliapp", "--", "ls -a"], { LJ_REMOTE: s.url, LJ_TOKEN: s.token });
    expect(ls.stdout.split("\n").filter(Boolean).sort()).toEqual([
      ".",
      "..",
      ".gitignore",
      "Procfile",
      "package.json",
      "server.js",
    ]);
  });

  rootTest("a failed lj deploy exits 65", async () => {
    await createApp(s, "clifail");
    const failed = await cli(["deploy", appCopy("node-hello", { FAIL_BUILD: "" }), "--app", "clifail"]);
    expect(failed.code).toBe(65);
    expect(failed.stderr).toContain("failed: the build script failed");
  });

  rootTest("lj apps list, info and destroy", async () => {
    const c = await cli(["apps", "create", "cliapps"]);
    expect(c.code).toBe(0);
    expect((await deployDir(s, "cliapps", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
    const list = await cli(["apps", "list", "--json"]);
    expect(JSON.parse(list.stdout).apps.map((a: { name: string }) => a.name)).toContain("cliapps");
    const info = await cli(["apps", "info", "cliapps"]);
    expect(info.stdout).toContain("release:   v1");
    const gone = await cli(["apps", "destroy", "cliapps", "--confirm", "cliapps"]);
    expect(gone.code).toBe(0);
    expect((await textVia(s, "cliapps")).status).toBe(404);
    expect((await cli(["apps", "info", "cliapps"])).code).toBe(66);
  });
});

describe("router", () => {
  rootTest(
    "responses stream through without the app's hop-by-hop headers",
    async () => {
      await createApp(s, "hops");
      expect((await deployDir(s, "hops", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      // The app (node's http server) answers with Connection and Keep-Alive of its own.
      const r = await viaRouter(s, "hops", "/");
      expect(r.status).toBe(200);
      expect(await r.text()).toMatch(/^hello from node web\.1 /);
      expect(r.headers.get("keep-alive")).toBeNull();
    },
    30_000,
  );

  rootTest(
    "WebSocket upgrades are bridged to the app",
    async () => {
      await createApp(s, "ws");
      expect((await deployDir(s, "ws", appCopy("node-ws"))).deploy?.status).toBe("succeeded");
      const u = new URL(s.url);
      // Bun's WebSocket client sends the Host header we give it.
      const ws = new WebSocket(`ws://${u.host}/chat`, {
        headers: { host: "ws.localhost" },
      } as unknown as string[]);
      const got = await new Promise<string>((resolve, reject) => {
        ws.onopen = () => ws.send("ping");
        ws.onmessage = (e) => resolve(String(e.data));
        ws.onerror = () => reject(new Error("websocket error"));
      });
      ws.close();
      expect(got).toBe("echo ping via ws.localhost");
    },
    30_000,
  );

  rootTest(
    "a crash-looping instance is reported as such",
    async () => {
      await createApp(s, "loop");
      const dir = appCopy("node-hello", {
        Procfile:
          "web: node -e \"require('http').createServer().listen(process.env.PORT); setTimeout(() => process.exit(1), 600)\"\n",
      });
      expect((await deployDir(s, "loop", dir)).deploy?.status).toBe("succeeded");
      const ps = await until(
        async () => {
          const r = await api<{ processes: { state: string; restarts: number }[] }>(
            s,
            "GET",
            "/apps/loop/ps",
          );
          return r.processes[0]?.state === "crash-loop" ? r : null;
        },
        30_000,
        "crash-loop",
      );
      expect(ps.processes[0]!.restarts).toBeGreaterThanOrEqual(4);
      const logs = await cli(["logs", "loop", "-n", "100"]);
      expect(logs.stdout).toMatch(/lj: web\.1 is crash-looping: \d+ crashes in a minute/);
      expect(logs.stdout).toContain("lj: web.1 (v1) exited with status 1");
      await cli(["scale", "loop", "web=0"]);
    },
    60_000,
  );
});

describe("services", () => {
  rootTest(
    "postgres: create, link (DATABASE_URL, app restarted, reachable), survives a redeploy, unlink, destroy; an unknown type is refused",
    async () => {
      await createApp(s, "dbapp");
      expect((await deployDir(s, "dbapp", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      const c = await cli(["services", "create", "postgres", "pg1"]);
      expect(c.stderr).toBe("");
      expect(c.stdout).toMatch(/^created postgres service pg1 \(up at 10\.237\.0\.\d+:5432\)\n$/);
      expect(c.code).toBe(0);
      const l = await cli(["services", "link", "pg1", "dbapp"]);
      expect(l).toEqual({ code: 0, stdout: "linked pg1 to dbapp\n", stderr: "" });
      const env = JSON.parse((await textVia(s, "dbapp", "/env")).text);
      expect(env.DATABASE_URL).toMatch(/^postgres:\/\/postgres:[\w-]+@10\.237\.0\.\d+:5432\/postgres$/);
      const psql = (sql: string) =>
        cli(["run", "dbapp", "--", `${"/usr/lib/postgresql/15/bin/psql"} "$DATABASE_URL" -tAc "${sql}"`]);
      expect(await psql("create table t(x int); insert into t values (42)")).toEqual({
        code: 0,
        stdout: "CREATE TABLE\nINSERT 0 1\n",
        stderr: "",
      });
      // Another app, not linked, cannot reach it.
      await createApp(s, "nodb");
      expect((await deployDir(s, "nodb", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      const addr = /@([\d.]+):/.exec(env.DATABASE_URL)![1];
      const probe = await cli([
        "run",
        "nodb",
        "--",
        `python3 -c "import socket; socket.create_connection(('${addr}', 5432), timeout=1.5)"`,
      ]);
      expect(probe.code).not.toBe(0);
      // A redeploy keeps the data and the link.
      expect((await deployDir(s, "dbapp", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      expect(await psql("select x from t")).toEqual({ code: 0, stdout: "42\n", stderr: "" });
      const info = await cli(["services", "info", "pg1", "--json"]);
      expect(JSON.parse(info.stdout).service).toEqual(
        expect.objectContaining({ links: ["dbapp"], state: "up", type: "postgres" }),
      );
      expect(JSON.stringify(JSON.parse(info.stdout).service.credentials)).not.toContain("password");
      expect((await cli(["services", "unlink", "pg1", "dbapp"])).code).toBe(0);
      expect(JSON.parse((await textVia(s, "dbapp", "/env")).text).DATABASE_URL).toBeNull();
      expect((await cli(["services", "destroy", "pg1", "--confirm", "pg1"])).code).toBe(0);
      expect((await cli(["services", "list"])).stdout).toBe("no services\n");
      expect(existsSync(join(paths.paasServices(), "pg1"))).toBe(false);
      const bad = await cli(["services", "create", "mysql", "x"]);
      expect(bad.code).toBe(64);
      expect(bad.stderr).toContain("unknown service type mysql");
    },
    120_000,
  );
});

describe("services: redis", () => {
  rootTest(
    "redis: create, link (REDIS_URL), data written through the app survives a redeploy",
    async () => {
      await createApp(s, "cacheapp");
      expect((await deployDir(s, "cacheapp", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      const c = await cli(["services", "create", "redis", "r1"]);
      expect(c.stderr).toBe("");
      expect(c.stdout).toMatch(/^created redis service r1 \(up at 10\.237\.0\.\d+:6379\)\n$/);
      expect((await cli(["services", "link", "r1", "cacheapp"])).code).toBe(0);
      const env = JSON.parse((await textVia(s, "cacheapp", "/env")).text);
      expect(env.REDIS_URL).toMatch(/^redis:\/\/default:[\w-]+@10\.237\.0\.\d+:6379\/0$/);
      const redis = (args: string) =>
        cli(["run", "cacheapp", "--", `redis-cli --no-auth-warning -u "$REDIS_URL" ${args}`]);
      expect(await redis("set greeting durable")).toEqual({ code: 0, stdout: "OK\n", stderr: "" });
      // Without the password the service refuses.
      const anon = await cli(["run", "cacheapp", "--", 'redis-cli -h "${REDIS_URL##*@}" get greeting']);
      expect(anon.stdout + anon.stderr).not.toContain("durable");
      expect((await deployDir(s, "cacheapp", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      expect(await redis("get greeting")).toEqual({ code: 0, stdout: "durable\n", stderr: "" });
      // Still linked to cacheapp: refused, unless --force.
      expect((await cli(["services", "destroy", "r1", "--confirm", "r1"])).code).toBe(73);
      expect((await cli(["services", "destroy", "r1", "--confirm", "r1", "--force"])).code).toBe(0);
    },
    120_000,
  );
});

describe("services: readiness", () => {
  // A user plugin (test/fixtures/plugins/gate): its server accepts connections at once and
  // answers 503 (failing its health command) while it holds.
  const installGate = () =>
    cpSync(join(import.meta.dir, "fixtures", "plugins", "gate"), join(paths.plugins(), "services", "gate"), {
      recursive: true,
    });
  const state = async (name: string) =>
    JSON.parse((await cli(["services", "info", name, "--json"])).stdout).service;
  const leases = () => jailLeases(env.root).length;

  rootTest(
    "a service whose port opens but whose health check fails is refused, and leaves nothing behind",
    async () => {
      installGate();
      const before = leases();
      const c = await cli(["services", "create", "gate", "stuck1"]);
      expect(c.code).not.toBe(0);
      expect(c.stderr).toContain("stuck1 did not become ready");
      expect(c.stderr).toContain("503");
      expect((await cli(["services", "list"])).stdout).toBe("no services\n");
      expect(existsSync(join(paths.paasServices(), "stuck1"))).toBe(false);
      await until(() => leases() === before, 5000, "the service's and its checks' leases released");
    },
    60_000,
  );

  rootTest(
    "a service restarted after a crash is up again only once its health check passes",
    async () => {
      installGate();
      const c = await cli(["services", "create", "gate", "g1"]);
      expect(c.stderr).toBe("");
      expect(c.code).toBe(0);
      expect((await state("g1")).state).toBe("up");
      // Hold, then crash the server: it restarts, its port opens, and it must not be up.
      writeFileSync(join(paths.serviceData(), "g1", "hold"), "");
      const running = (
        s.paas.services as unknown as { running: Map<string, { jail: { kill(): void } | null }> }
      ).running;
      running.get("g1")!.jail!.kill();
      await until(async () => (await state("g1")).restarts >= 1, 5000, "a restart");
      const seen = new Set<string>();
      for (let i = 0; i < 8; i++) {
        seen.add((await state("g1")).state);
        await Bun.sleep(150);
      }
      expect(seen.has("up")).toBe(false);
      expect(seen.has("starting")).toBe(true);
      // Still unready when its check gives up (timeout_s 3): it is ended and started again.
      const again = await until(
        async () => {
          const i = await state("g1");
          return i.restarts >= 2 && i;
        },
        15_000,
        "a restart after the failed health check",
      );
      expect(again.lastExit).toBe("killed: it failed its health check");
      rmSync(join(paths.serviceData(), "g1", "hold"));
      await until(async () => (await state("g1")).state === "up", 10_000, "up after the hold");
      expect((await cli(["services", "destroy", "g1", "--confirm", "g1"])).code).toBe(0);
    },
    60_000,
  );
});

describe("server restarts", () => {
  rootTest(
    "after SIGKILL of the server, a new server brings every app back with no leftovers",
    async () => {
      // A server of its own (its own root), run as a separate process.
      const root = mkdtempSync(join(tmpdir(), "lj-restart-"));
      const envs = { ...process.env, LIGHTJAIL_ROOT: root, LJ_SUBNET: "10.238.0.0/24" };
      const mk = Bun.spawnSync(
        [
          process.execPath,
          join(import.meta.dir, "..", "src/cli/lj.ts"),
          "world",
          "create",
          "test",
          "--from",
          "host",
        ],
        {
          env: envs,
        },
      );
      expect(mk.exitCode).toBe(0);
      const start = async () => {
        const { proc, url, token } = await startServe(
          [process.execPath, join(import.meta.dir, "fixtures/paas/serve-fake.ts")],
          envs,
        );
        return { p: proc, srv: { url, token } };
      };
      const a = await start();
      await createApp(a.srv, "lazarus");
      expect((await deployDir(a.srv, "lazarus", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      await api(a.srv, "PATCH", "/apps/lazarus/formation", { web: 2 });
      await api(a.srv, "PATCH", "/apps/lazarus/config", { GREETING: "still here" });
      expect(JSON.parse((await textVia(a.srv, "lazarus", "/env")).text).GREETING).toBe("still here");
      await api(a.srv, "POST", "/services", { type: "postgres", name: "keep" });
      await api(a.srv, "POST", "/services/keep/links", { app: "lazarus" });
      await api(a.srv, "POST", "/services", { type: "redis", name: "fast" });
      await api(a.srv, "POST", "/services/fast/links", { app: "lazarus" });
      const runIn = async (srv: { url: string; token: string }, command: string) => {
        const r = await fetch(`${srv.url}/api/v1/apps/lazarus/run`, {
          method: "POST",
          headers: { ...auth(srv), "content-type": "application/json" },
          body: JSON.stringify({ command }),
        });
        const frames = (await r.text())
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as { out?: string; err?: string });
        return frames.map((f) => f.out ?? f.err ?? "").join("");
      };
      const sql = (srv: { url: string; token: string }, q: string) =>
        runIn(srv, `/usr/lib/postgresql/15/bin/psql "$DATABASE_URL" -tAc "${q}"`);
      const redis = (srv: { url: string; token: string }, args: string) =>
        runIn(srv, `redis-cli --no-auth-warning -u "$REDIS_URL" ${args}`);
      expect(await redis(a.srv, "set survivor yes")).toBe("OK\n");
      expect(await sql(a.srv, "create table t(x text); insert into t values ('durable')")).toBe(
        "CREATE TABLE\nINSERT 0 1\n",
      );
      // The cgroups of a server's jails: under the lightjail base of each v1 hierarchy, or v2's.
      const cgroupsOf = (pid: number) => {
        const l = cgroupLayout();
        return [l?.unified, l?.memory, l?.pids, l?.cpu]
          .filter((d): d is string => !!d && existsSync(d))
          .flatMap((d) => readdirSync(d).filter((n) => n.startsWith(`${pid}.`)));
      };
      expect(cgroupsOf(a.p.pid).length).toBeGreaterThan(0);
      a.p.kill("SIGKILL");
      await a.p.exited;
      const b = await start();
      const ps = await until(async () => {
        const r = await api<{ processes: { state: string; release: number }[] }>(
          b.srv,
          "GET",
          "/apps/lazarus/ps",
        );
        return r.processes.length === 2 && r.processes.every((x) => x.state === "up") ? r : null;
      });
      expect(ps.processes.map((x) => x.release)).toEqual([2, 2]);
      expect(JSON.parse((await textVia(b.srv, "lazarus", "/env")).text).GREETING).toBe("still here");
      expect(JSON.parse((await textVia(b.srv, "lazarus", "/env")).text).DATABASE_URL).toContain(
        "postgres://",
      );
      expect(await sql(b.srv, "select x from t")).toBe("durable\n");
      expect(await redis(b.srv, "get survivor")).toBe("yes\n");
      // Only the new server's jails hold addresses; the dead one's are gone.
      // (the one-off jail's lease goes a moment after its output ends)
      await until(() => jailLeases(root).length === 4, 5000, "four leases"); // two web instances and the two services
      // Nor cgroups (the dead server's processes had some: see before the SIGKILL).
      expect(cgroupsOf(a.p.pid)).toEqual([]);
      b.p.kill("SIGTERM");
      await b.p.exited;
      expect(readdirSync(join(root, "run", "net", "leases"))).toEqual([]);
      Bun.spawnSync(["rm", "-rf", root]);
    },
    90_000,
  );
});
