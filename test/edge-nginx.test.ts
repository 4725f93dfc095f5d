/**
 * The nginx edge (src/server/edge/nginx.ts): a real nginx master run and configured from the
 * tables a test hands it, in front of real HTTP backends. Routing by Host, the router's pages,
 * the forwarding headers with forwarding.ts's semantics, WebSockets, requests that are not for
 * an app reaching the owning process (bodies streamed, WebSockets), the body limit refused and
 * logged, reloads confirmed by the served generation (and batched), a bad configuration never
 * applied, the master restarted when it dies, the leftovers of a dead owner ended, 1,500
 * concurrent connections without a 5xx or a timeout while another app stays fast, and the
 * per-instance bound: requests beyond it queued in lj serve (the overflow listener) and served
 * as direct ones are, on a socket only nginx's workers and root can open.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Server, Subprocess } from "bun";
import { startServe } from "../scripts/serve-process.ts";
import { edgeKind } from "../src/cli/serve.ts";
import { LjError } from "../src/errors.ts";
import { procStat } from "../src/jail/owner.ts";
import { CertManager } from "../src/server/edge/certs.ts";
import { findNginx, NginxEdge, type NginxEdgeOptions } from "../src/server/edge/nginx.ts";
import { workerUser } from "../src/server/edge/overflow.ts";
import { freePort } from "../src/server/edge/private.ts";
import type { Target, WsData } from "../src/server/edge/router.ts";
import { EDGE_NICE } from "../src/server/edge/scheduling.ts";
import { expectBodyLimit } from "./helpers/body-limit.ts";
import { median, timedRequests } from "./helpers/calm.ts";
import {
  expectOwnForwarding,
  expectTrustedChainKept,
  firstWsMessage,
  type Headers,
  SPOOF,
  TRUSTED_CHAIN,
} from "./helpers/forwarding.ts";
import { rootTest } from "./helpers/root.ts";
import { SCHED_BATCH, SCHED_OTHER, schedOf } from "./helpers/sched.ts";
import { selfSigned } from "./helpers/tls.ts";

const dir = mkdtempSync(join(tmpdir(), "lj-edge-nginx-"));
let backend: Server<Headers>;
const edges: NginxEdge[] = [];
const appLines: string[] = [];
let n = 0;

beforeAll(() => {
  backend = Bun.serve<Headers>({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, srv) {
      const seen = Object.fromEntries(req.headers) as Headers;
      if (req.headers.get("upgrade")?.toLowerCase() === "websocket")
        return srv.upgrade(req, { data: seen }) ? undefined : new Response("no upgrade", { status: 400 });
      if (req.method === "POST")
        return req.arrayBuffer().then((b) => new Response(`got ${b.byteLength} bytes\n`));
      return Response.json({ path: new URL(req.url).pathname, ...seen });
    },
    websocket: {
      open(ws) {
        ws.send(JSON.stringify(ws.data));
      },
      message(ws, m) {
        ws.send(`echo ${m}`);
      },
    },
  });
});

afterAll(async () => {
  for (const e of edges) await e.stop();
  backend?.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

interface Front {
  edge: NginxEdge;
  url: string;
  routes: Record<string, Target[]>;
  domains: Record<string, string>;
  prefix: string;
  accessLog: string;
}

/** An nginx edge for APP.n.test in front of the echo backend (app "echo"). */
async function front(o: Partial<NginxEdgeOptions> = {}): Promise<Front> {
  const id = ++n;
  const f = {
    routes: { echo: [{ address: "127.0.0.1", port: backend.port! }] } as Record<string, Target[]>,
    domains: {} as Record<string, string>,
    prefix: join(dir, `prefix-${id}`),
    accessLog: join(dir, `access-${id}.log`),
  };
  const edge = await NginxEdge.start({
    nginx: findNginx()!,
    prefix: f.prefix,
    hostname: "127.0.0.1",
    port: 0,
    domain: "n.test",
    maxBodyBytes: 64 * 1024,
    maxRequestBodySize: 1 << 30,
    workers: "2",
    routes: () => f.routes,
    domains: () => f.domains,
    other: (req, srv) => {
      if (req.headers.get("upgrade") === "websocket")
        return srv.upgrade(req, { data: {} as WsData })
          ? (undefined as unknown as Response)
          : new Response("no", { status: 400 });
      if (req.method === "POST")
        return req.arrayBuffer().then((b) => new Response(`api got ${b.byteLength} bytes\n`));
      return new Response(`api: ${new URL(req.url).pathname} host ${req.headers.get("host")}\n`);
    },
    websocket: {
      open(ws) {
        ws.send("hello from lj serve");
      },
      message(ws, m) {
        ws.send(`echo ${m}`);
      },
    },
    accessLog: f.accessLog,
    appLog: (app, line) => appLines.push(`${app} ${line}`),
    log: (line) => appLines.push(`LOG ${line}`),
    ...o,
  });
  edges.push(edge);
  const h = (o.hostname ?? "127.0.0.1").includes(":") ? `[${o.hostname}]` : (o.hostname ?? "127.0.0.1");
  return { ...f, edge, url: `http://${h}:${edge.port}` };
}

async function echoed(url: string, headers: Headers, host = "echo.n.test"): Promise<Headers> {
  const r = await fetch(`${url}/`, { headers: { host, ...headers } });
  expect(r.status).toBe(200);
  return (await r.json()) as Headers;
}

describe("choosing the edge", () => {
  test("--edge, else [router] edge in config.toml, else auto; bad values are errors", () => {
    const file = join(dir, "config.toml");
    expect(edgeKind(undefined, file)).toBe("auto");
    expect(edgeKind("nginx", file)).toBe("nginx");
    writeFileSync(file, '[router]\nedge = "auto"\n');
    expect(edgeKind(undefined, file)).toBe("auto");
    expect(edgeKind("builtin", file)).toBe("builtin");
    expect(() => edgeKind("apache", file)).toThrow(LjError);
    writeFileSync(file, '[router]\nedge = "caddy"\n');
    expect(() => edgeKind(undefined, file)).toThrow(/\[router\] edge/);
    rmSync(file);
    expect(findNginx()).not.toBeNull();
  });
});

describe("the nginx edge", () => {
  rootTest("routes by Host; the router's 404 and 503 pages; the rest reaches lj serve", async () => {
    const f = await front();
    f.routes.idle = [];
    f.edge.publish();
    await f.edge.synced();
    const ok = await fetch(`${f.url}/some/path?q=1`, { headers: { host: "Echo.N.Test" } });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as Headers).path).toBe("/some/path");
    const none = await fetch(`${f.url}/`, { headers: { host: "ghost.n.test" } });
    expect(none.status).toBe(404);
    expect(await none.text()).toContain("There is no app called <b>ghost</b> here.");
    const idle = await fetch(`${f.url}/`, { headers: { host: "idle.n.test" } });
    expect(idle.status).toBe(503);
    expect(idle.headers.get("retry-after")).toBe("2");
    expect(await idle.text()).toContain("No instance of <b>idle</b> is up right now");
    const api = await fetch(`${f.url}/api/v1/apps`, { headers: { host: "127.0.0.1" } });
    expect(await api.text()).toBe("api: /api/v1/apps host 127.0.0.1\n");
    // A large body streamed to lj serve (git pushes): no limit of the edge's own.
    const big = await fetch(`${f.url}/git/x.git/git-receive-pack`, {
      method: "POST",
      headers: { host: "127.0.0.1" },
      body: new Uint8Array(3 * 1024 * 1024),
    });
    expect(await big.text()).toBe(`api got ${3 * 1024 * 1024} bytes\n`);
    // The ACME challenge path of any Host goes to lj serve (which answers it from its map).
    const ch = await fetch(`${f.url}/.well-known/acme-challenge/tok`, { headers: { host: "echo.n.test" } });
    expect(await ch.text()).toBe("api: /.well-known/acme-challenge/tok host echo.n.test\n");
    // A WebSocket to lj serve (`lj run` sessions) and one to an app.
    for (const [host, first] of [
      ["127.0.0.1", "hello from lj serve"],
      ["echo.n.test", "x-forwarded-for"],
    ] as const) {
      const ws = new WebSocket(`${f.url.replace("http", "ws")}/`, {
        headers: { host },
      } as unknown as string[]);
      const got: string[] = [];
      await new Promise<void>((resolve, reject) => {
        ws.onmessage = (e) => {
          got.push(String(e.data));
          if (got.length === 1) ws.send("ping");
          else resolve();
        };
        ws.onerror = () => reject(new Error("websocket error"));
      });
      ws.close();
      expect(got[0]).toContain(first);
      expect(got[1]).toBe("echo ping");
    }
    // The access log: the router's line format, written by nginx.
    await f.edge.flush();
    const access = readFileSync(f.accessLog, "utf8");
    expect(access).toMatch(
      new RegExp(
        `^\\d{4}-\\d\\d-\\d\\dT\\S+ echo GET /some/path\\?q=1 200 [\\d.]+ms -> 127\\.0\\.0\\.1:${backend.port}$`,
        "m",
      ),
    );
    expect(access).toMatch(/ ghost GET \/ 404 [\d.]+ms -> -$/m);
    expect(access).toMatch(/ idle GET \/ 503 /);
    expect((statSync(f.accessLog).mode & 0o777).toString(8)).toBe("600");
    expect((statSync(f.prefix).mode & 0o777).toString(8)).toBe("700");
    // 5xx lines reach the app's log.
    expect(appLines.some((l) => l.startsWith("idle GET / 503 "))).toBe(true);
  });

  rootTest(
    "hundreds of apps and domains of the longest names: nginx takes them all and routes each",
    async () => {
      const f = await front();
      // DNS labels of 63 characters: a name of 253, the longest there is.
      const label = (c: string) => c.repeat(63);
      const longest = `${["a", "b", "c"].map(label).join(".")}.${"d".repeat(61)}`;
      f.domains[longest] = "echo";
      for (let i = 0; i < 400; i++) {
        const app = `app-${String(i).padStart(3, "0")}-${"x".repeat(23)}`;
        f.routes[app] = [{ address: "127.0.0.1", port: backend.port! }];
        f.domains[`www.${app}.${label("e")}.example`] = app;
      }
      f.edge.publish();
      await f.edge.synced();
      for (const host of [
        longest,
        `app-399-${"x".repeat(23)}.n.test`,
        `www.app-007-${"x".repeat(23)}.${label("e")}.example`,
      ]) {
        const r = await fetch(`${f.url}/`, { headers: { host } });
        const app = r.headers.get("content-type")?.startsWith("application/json") ? "app" : "lj serve";
        expect({ host, status: r.status, app }).toEqual({ host, status: 200, app: "app" });
        expect(((await r.json()) as Headers).forwarded).toBe(`for=127.0.0.1;proto=http;host=${host}`);
      }
    },
  );

  rootTest(
    "forwarding headers: the client's dropped, the edge's own set (IPv4, IPv6, WebSocket)",
    async () => {
      const f = await front();
      const seen = await echoed(f.url, SPOOF);
      expectOwnForwarding(seen, "echo.n.test");
      // A name the edge serves is found by exact lookup, any other host by the quoting rules;
      // the client's spelling is passed on either way.
      const port = new URL(f.url).port;
      for (const [host, quoted] of [
        [`echo.n.test:${port}`, `"echo.n.test:${port}"`],
        ["Echo.N.Test", "Echo.N.Test"],
        [`Echo.N.Test:${port}`, `"Echo.N.Test:${port}"`],
        ["echo.n.test:1", '"echo.n.test:1"'],
      ]) {
        expect((await echoed(f.url, {}, host)).forwarded).toBe(`for=127.0.0.1;proto=http;host=${quoted}`);
      }
      const v6 = await front({ hostname: "::1" });
      const six = await echoed(v6.url, { ...SPOOF }, "echo.n.test:8080");
      expect(six["x-forwarded-for"]).toBe("::1");
      expect(six["x-real-ip"]).toBe("::1");
      expect(six.forwarded).toBe('for="[::1]";proto=http;host="echo.n.test:8080"');
      const wsSeen = JSON.parse(
        await firstWsMessage(`${f.url.replace("http", "ws")}/`, { host: "echo.n.test", ...SPOOF }),
      ) as Headers;
      expect(wsSeen["x-forwarded-for"]).toBe("127.0.0.1");
      expect(wsSeen.forwarded).toBe("for=127.0.0.1;proto=http;host=echo.n.test");
    },
  );

  rootTest(
    "a trusted proxy's chain is kept and the peer appended; X-Real-IP is the client behind it",
    async () => {
      const untrusted = await front({ trustedProxies: ["10.0.0.0/8", "::1"] });
      const u = await echoed(untrusted.url, SPOOF);
      expect(u["x-forwarded-for"]).toBe("127.0.0.1");
      expect(u.forwarded).toBe("for=127.0.0.1;proto=http;host=echo.n.test");
      const f = await front({ trustedProxies: ["127.0.0.0/8", "10.1.0.0/16"] });
      expectTrustedChainKept(await echoed(f.url, TRUSTED_CHAIN), "echo.n.test");
      const bare = await echoed(f.url, {});
      expect(bare["x-forwarded-for"]).toBe("127.0.0.1");
      expect(bare["x-real-ip"]).toBe("127.0.0.1");
      expect(bare.forwarded).toBe("for=127.0.0.1;proto=http;host=echo.n.test");
    },
  );

  rootTest(
    "bodies over the limit: 413 with the router's page, in the access log and the app's log",
    async () => {
      const f = await front();
      await expectBodyLimit(f.url, "echo.n.test");
      await f.edge.flush();
      const access = readFileSync(f.accessLog, "utf8");
      expect(access.match(/ echo POST \/ 413 .*--max-body/g)?.length).toBe(2);
      expect(appLines.filter((l) => /^echo POST \/ 413 .*--max-body/.test(l)).length).toBeGreaterThanOrEqual(
        2,
      );
    },
  );

  rootTest("the access log is rotated by size while nginx keeps writing to it", async () => {
    const f = await front({ accessLogRotation: { maxBytes: 4096, keep: 2 } });
    const hit = async (n: number, path: string) => {
      for (let i = 0; i < n; i++)
        await (await fetch(`${f.url}${path}`, { headers: { host: "echo.n.test" } })).text();
      await f.edge.flush();
    };
    await hit(80, "/first");
    // The next tick (once a second) finds it full: copied to .1, emptied in place.
    await until(() => existsSync(`${f.accessLog}.1`), 5000, "access.log.1");
    expect(readFileSync(`${f.accessLog}.1`, "utf8")).toContain(" echo GET /first 200 ");
    expect((statSync(`${f.accessLog}.1`).mode & 0o777).toString(8)).toBe("600");
    await hit(3, "/after");
    const now = readFileSync(f.accessLog, "utf8");
    expect(now).toContain(" echo GET /after 200 ");
    expect(now).not.toContain("\0");
    expect(now.length).toBeLessThan(4096);
  });

  rootTest("a change is served once synced() resolves; rapid changes share one reload", async () => {
    const f = await front();
    const second = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("second\n") });
    try {
      const conf = join(f.prefix, "nginx.conf");
      const before = statSync(conf).mtimeMs;
      // Ten changes in one go (instances coming up one after another): one reload.
      for (let i = 0; i < 10; i++) {
        f.routes[`app${i}`] = [{ address: "127.0.0.1", port: second.port! }];
        f.edge.publish();
      }
      await f.edge.synced();
      expect(statSync(conf).mtimeMs).toBeGreaterThan(before);
      expect(readFileSync(conf, "utf8")).toContain('return 200 "2";');
      for (let i = 0; i < 10; i++) {
        const r = await fetch(`${f.url}/`, { headers: { host: `app${i}.n.test` } });
        expect(await r.text()).toBe("second\n");
      }
      // A switch: once synced, no new request reaches the old target.
      f.routes.echo = [{ address: "127.0.0.1", port: second.port! }];
      f.edge.publish();
      await f.edge.synced();
      for (let i = 0; i < 20; i++) {
        const r = await fetch(`${f.url}/`, { headers: { host: "echo.n.test", connection: "close" } });
        expect(await r.text()).toBe("second\n");
      }
    } finally {
      second.stop(true);
    }
  });

  rootTest("a configuration nginx refuses is never applied: the old one keeps serving", async () => {
    const wanted: string[] = [];
    const certs = new CertManager({
      dir: join(dir, "certs-bad"),
      wanted: () => wanted,
      log: () => {},
      onChange: () => {},
    });
    const f = await front({ httpsPort: 0, certs });
    expect(f.edge.httpsPort).toBeUndefined();
    const pair = selfSigned(dir, "bad.example");
    certs.put("bad.example", pair.cert, pair.key);
    // The file on disk goes bad after lj serve read it (nginx reads the files themselves).
    const crt = certs.files("bad.example").cert;
    writeFileSync(crt, "not a certificate\n");
    const conf = readFileSync(join(f.prefix, "nginx.conf"), "utf8");
    wanted.push("bad.example");
    f.domains["bad.example"] = "echo";
    f.edge.publish();
    await f.edge.synced();
    expect(appLines.some((l) => l.startsWith("LOG edge: nginx refused the new configuration"))).toBe(true);
    expect(readFileSync(join(f.prefix, "nginx.conf"), "utf8")).toBe(conf);
    expect(existsSync(join(f.prefix, "nginx.conf.new"))).toBe(false);
    // Still serving, with the old tables.
    expect((await echoed(f.url, {}))["x-forwarded-for"]).toBe("127.0.0.1");
    const missing = await fetch(`${f.url}/`, { headers: { host: "bad.example" } });
    expect(await missing.text()).toContain("api: /");
    // The file repaired: the next change applies, HTTPS serves the name by SNI.
    writeFileSync(crt, pair.cert);
    f.edge.publish();
    await f.edge.synced();
    expect(f.edge.httpsPort).toBeNumber();
    const r = await fetch(`https://127.0.0.1:${f.edge.httpsPort}/`, {
      headers: { host: "bad.example" },
      tls: { ca: pair.cert, serverName: "bad.example" },
    } as RequestInit);
    expect(r.status).toBe(200);
    expect(((await r.json()) as Headers)["x-forwarded-proto"]).toBe("https");
    const redirect = await fetch(`${f.url}/x?y=1`, { headers: { host: "bad.example" }, redirect: "manual" });
    expect(redirect.status).toBe(308);
    expect(redirect.headers.get("location")).toBe(`https://bad.example:${f.edge.httpsPort}/x?y=1`);
    const challenge = await fetch(`${f.url}/.well-known/acme-challenge/t`, {
      headers: { host: "bad.example" },
      redirect: "manual",
    });
    expect(challenge.status).toBe(404);
    expect(await challenge.text()).toBe("no such challenge\n");
  });

  rootTest(
    "the workers run at nice -5 under SCHED_BATCH, past reloads; --edge-nice 0 --edge-policy normal leaves them as lj serve",
    async () => {
      const f = await front();
      const mine = schedOf(process.pid);
      const workers = () => nginxIn(f.prefix).filter((p) => p.ppid === f.edge.pid);
      expect(workers().length).toBe(2);
      for (const w of workers()) expect(schedOf(w.pid)).toEqual({ nice: EDGE_NICE, policy: SCHED_BATCH });
      // The master keeps lj serve's nice (worker_priority is the workers'), under the policy.
      expect(schedOf(f.edge.pid!)).toEqual({ nice: mine.nice, policy: SCHED_BATCH });
      // A reload's new workers are scheduled the same way.
      const before = workers().map((w) => w.pid);
      f.routes.other = [{ address: "127.0.0.1", port: backend.port! }];
      f.edge.publish();
      await f.edge.synced();
      await until(
        () => workers().every((w) => !before.includes(w.pid)) && workers().length === 2,
        10_000,
        "new workers",
      );
      for (const w of workers()) expect(schedOf(w.pid)).toEqual({ nice: EDGE_NICE, policy: SCHED_BATCH });
      expect((await fetch(`${f.url}/`, { headers: { host: "other.n.test" } })).status).toBe(200);

      const plain = await front({ scheduling: { nice: 0, batch: false } });
      const plainWorkers = nginxIn(plain.prefix).filter((p) => p.ppid === plain.edge.pid);
      expect(plainWorkers.length).toBe(2);
      for (const w of plainWorkers) expect(schedOf(w.pid)).toEqual({ nice: mine.nice, policy: SCHED_OTHER });
      expect((await fetch(`${plain.url}/`, { headers: { host: "echo.n.test" } })).status).toBe(200);
    },
    30_000,
  );

  rootTest("a master that dies is started again; a new owner ends what a dead one left", async () => {
    const f = await front();
    const first = f.edge.pid!;
    process.kill(first, "SIGKILL");
    await until(() => f.edge.pid !== null && f.edge.pid !== first, 10_000, "a new master");
    await until(
      async () =>
        (await fetch(`${f.url}/`, { headers: { host: "echo.n.test" } }).catch(() => null))?.status === 200,
      10_000,
      "serving again",
    );
    // The orphaned workers of the killed master were ended too: only the new master's remain.
    const inPrefix = nginxIn(f.prefix);
    expect(inPrefix.filter((p) => p.ppid === f.edge.pid).length).toBe(inPrefix.length - 1);
    // An owner that died without stopping nginx (kill -9): the next start on the prefix ends it.
    const again = await NginxEdge.start({
      nginx: findNginx()!,
      prefix: f.prefix,
      hostname: "127.0.0.1",
      port: 0,
      domain: "n.test",
      maxBodyBytes: 1024,
      maxRequestBodySize: 1 << 20,
      workers: "1",
      routes: () => ({}),
      domains: () => ({}),
      other: () => new Response("new owner\n"),
      accessLog: join(dir, "again.log"),
      log: () => {},
    });
    edges.push(again);
    expect(nginxIn(f.prefix).map((p) => p.pid)).toContain(again.pid!);
    expect(nginxIn(f.prefix).every((p) => p.pid === again.pid || p.ppid === again.pid)).toBe(true);
    expect(await (await fetch(`http://127.0.0.1:${again.port}/`)).text()).toBe("new owner\n");
  });

  rootTest(
    "1,500 concurrent connections for 10 s: no 5xx and no timeouts, upstream sockets reused, another app stays fast",
    async () => {
      const node = (port: number) =>
        Bun.spawn(
          ["node", "-e", `require("http").createServer((q,s)=>s.end("ok\\n")).listen(${port},"127.0.0.1")`],
          {
            stdout: "ignore",
            stderr: "ignore",
          },
        );
      const [pa, pb] = [freePort("127.0.0.1"), freePort("127.0.0.1")];
      const apps: Subprocess[] = [node(pa), node(pb)];
      try {
        await waitPort(pa);
        await waitPort(pb);
        const f = await front();
        f.routes.hot = [{ address: "127.0.0.1", port: pa }];
        f.routes.calm = [{ address: "127.0.0.1", port: pb }];
        f.edge.publish();
        await f.edge.synced();
        const wrk = Bun.spawn(["wrk", "-t2", "-c1500", "-d10s", "-H", "Host: hot.n.test", `${f.url}/`], {
          stdout: "pipe",
          stderr: "pipe",
        });
        await Bun.sleep(1500);
        const times = await timedRequests(`${f.url}/`, "calm.n.test", 3000, 50);
        const out = await new Response(wrk.stdout).text();
        const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
        expect(total).toBeGreaterThan(1500);
        expect(out).not.toContain("Non-2xx");
        // No request waited 2 s (wrk's timeout): the hammered app's listen queue never overflows.
        expect(out).not.toContain("Socket errors");
        const p50 = median(times);
        const ss = Bun.spawnSync(["ss", "-Htan", "state", "time-wait", "dst", `127.0.0.1:${pa}`]);
        const tw = ss.stdout.toString().split("\n").filter(Boolean).length;
        console.log(
          `nginx churn: ${total} requests at c=1500, calm p50 ${p50.toFixed(1)} ms, ${tw} upstream sockets in TIME_WAIT`,
        );
        expect(p50).toBeLessThan(10 * (process.env.CI ? 3 : 1));
        expect(tw).toBeLessThan(total / 10);
        await f.edge.flush();
        expect(readFileSync(f.accessLog, "utf8")).not.toMatch(/ hot GET \/ 5\d\d /);
      } finally {
        for (const p of apps) p.kill();
      }
    },
    60_000,
  );
});

/**
 * An app behind the bound: it counts the requests it has in flight at once (the most it saw in
 * `peak`), holds /hold until the test lets go, answers /slow after 100 ms and /fail with a 500,
 * and otherwise echoes the headers it got (on HTTP and on a WebSocket).
 */
const counted = { busy: 0, peak: 0, held: [] as (() => void)[] };
let counter: Server<Headers>;

beforeAll(() => {
  counter = Bun.serve<Headers>({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 60,
    async fetch(req, srv) {
      const seen = Object.fromEntries(req.headers) as Headers;
      if (req.headers.get("upgrade")?.toLowerCase() === "websocket")
        return srv.upgrade(req, { data: seen }) ? undefined : new Response("no upgrade", { status: 400 });
      counted.busy++;
      counted.peak = Math.max(counted.peak, counted.busy);
      try {
        const path = new URL(req.url).pathname;
        if (path === "/hold") await new Promise<void>((r) => counted.held.push(r));
        if (path === "/slow") await Bun.sleep(100);
        if (path === "/fail") return new Response("failed\n", { status: 500 });
        if (req.method === "POST") return new Response(`got ${(await req.arrayBuffer()).byteLength} bytes\n`);
        return Response.json({ path, ...seen });
      } finally {
        counted.busy--;
      }
    },
    websocket: {
      open(ws) {
        ws.send(JSON.stringify(ws.data));
      },
      message(ws, m) {
        ws.send(`echo ${m}`);
      },
    },
  });
});

afterAll(() => {
  for (const r of counted.held.splice(0)) r();
  counter?.stop(true);
});

/** An edge whose app "counted" is the counting app, bounded at `perInstance` per worker. */
async function bounded(
  workers: string,
  perInstance: number,
  o: Partial<NginxEdgeOptions> = {},
): Promise<Front> {
  const f = await front({ workers, perInstance, ...o });
  f.routes.counted = [{ address: "127.0.0.1", port: counter.port! }];
  f.edge.publish();
  await f.edge.synced();
  counted.peak = 0;
  return f;
}

/** Starts a request to /hold and waits until the app holds it; `release` lets every held one go. */
async function hold(f: Front): Promise<{ answer: Promise<Response> }> {
  const before = counted.held.length;
  const answer = fetch(`${f.url}/hold`, { headers: { host: "counted.n.test" } });
  await until(() => counted.held.length > before, 5000, "the held request");
  return { answer };
}

const release = () => {
  for (const r of counted.held.splice(0)) r();
};

describe("the nginx edge's per-instance bound", () => {
  rootTest(
    "requests beyond the bound queue in lj serve: all answered, never more in flight than the bound",
    async () => {
      // 2 workers x 2 (max_conns) and lj serve's router 2: at most 6 at once toward the instance.
      const f = await bounded("2", 2);
      const gets = Array.from({ length: 40 }, (_, i) =>
        fetch(`${f.url}/slow?n=${i}`, { headers: { host: "counted.n.test" } }).then((r) => r.status),
      );
      const posts = Array.from({ length: 4 }, () =>
        fetch(`${f.url}/upload`, {
          method: "POST",
          headers: { host: "counted.n.test" },
          body: new Uint8Array(48 * 1024),
        }).then((r) => r.text()),
      );
      expect(await Promise.all(gets)).toEqual(new Array(40).fill(200));
      expect(await Promise.all(posts)).toEqual(new Array(4).fill(`got ${48 * 1024} bytes\n`));
      expect(counted.peak).toBeLessThanOrEqual(6);
      expect(counted.peak).toBeGreaterThanOrEqual(3);
      expect(f.edge.overflow.taken).toBeGreaterThan(0);
      await f.edge.flush();
      const lines = readFileSync(f.accessLog, "utf8")
        .split("\n")
        .filter((l) => l.includes(" counted "));
      expect(lines.length).toBe(44);
      expect(lines.every((l) => l.endsWith(` -> 127.0.0.1:${counter.port}`))).toBe(true);
    },
  );

  rootTest(
    "an overflowed request: the edge's forwarding headers (a client's forged ones dropped), one log line, bodies and WebSockets",
    async () => {
      // One worker holding one request toward the instance: every other one overflows.
      const f = await bounded("1", 1);
      const held = await hold(f);
      const taken = f.edge.overflow.taken;
      const seen = await echoed(f.url, SPOOF, "counted.n.test");
      expectOwnForwarding(seen, "counted.n.test");
      expect(f.edge.overflow.taken).toBe(taken + 1);
      const big = await fetch(`${f.url}/upload`, {
        method: "POST",
        headers: { host: "counted.n.test" },
        body: new Uint8Array(48 * 1024),
      });
      expect(await big.text()).toBe(`got ${48 * 1024} bytes\n`);
      const ws = JSON.parse(
        await firstWsMessage(`${f.url.replace("http", "ws")}/`, { host: "counted.n.test", ...SPOOF }),
      ) as Headers;
      expect(ws["x-forwarded-for"]).toBe("127.0.0.1");
      expect(ws.forwarded).toBe("for=127.0.0.1;proto=http;host=counted.n.test");
      const failed = await fetch(`${f.url}/fail`, { headers: { host: "counted.n.test" } });
      expect(failed.status).toBe(500);
      expect(failed.headers.get("x-lj-instance")).toBeNull();
      expect(f.edge.overflow.taken).toBe(taken + 4);
      release();
      expect((await held.answer).status).toBe(200);
      await f.edge.flush();
      const access = readFileSync(f.accessLog, "utf8");
      for (const [method, path, status] of [
        ["GET", "/", 200],
        ["POST", "/upload", 200],
        ["GET", "/", 101],
        ["GET", "/fail", 500],
        ["GET", "/hold", 200],
      ] as const)
        expect(
          access.match(
            new RegExp(
              ` counted ${method} ${path} ${status} \\d+ms -> 127\\.0\\.0\\.1:${counter.port}$`,
              "gm",
            ),
          )?.length,
        ).toBe(1);
      expect(appLines.filter((l) => l.startsWith("counted GET /fail 500 ")).length).toBe(1);
      // A trusted proxy's chain is kept through the overflow as well.
      const t = await bounded("1", 1, { trustedProxies: ["127.0.0.0/8", "10.1.0.0/16"] });
      const held2 = await hold(t);
      expectTrustedChainKept(await echoed(t.url, TRUSTED_CHAIN, "counted.n.test"), "counted.n.test");
      expect(t.edge.overflow.taken).toBe(1);
      release();
      await held2.answer;
    },
  );

  rootTest("only root and nginx's workers can connect to the overflow socket", async () => {
    const f = await bounded("1", 1);
    const sock = f.edge.overflow.socket;
    const st = statSync(sock);
    expect((st.mode & 0o777).toString(8)).toBe("600");
    expect(st.uid).toBe(workerUser()!.uid);
    expect((statSync(join(sock, "..")).mode & 0o777).toString(8)).toBe("711");
    const curl = ["curl", "-sS", "--unix-socket", sock, "-H", "Host: counted.n.test", "http://x/as"];
    // The overflow listener runs in this process: the clients run beside it, not blocking it.
    const run = async (argv: string[]) => {
      const p = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([
        new Response(p.stdout).text(),
        new Response(p.stderr).text(),
        p.exited,
      ]);
      return { out, err, code };
    };
    const root = await run(curl);
    expect(root.code).toBe(0);
    expect((JSON.parse(root.out) as Headers).path).toBe("/as");
    const as = (uid: number) =>
      run(["setpriv", "--reuid", String(uid), "--regid", String(uid), "--clear-groups", ...curl]);
    // The workers' user connects; any other uid is refused.
    expect((await as(workerUser()!.uid)).code).toBe(0);
    const other = await as(12345);
    expect(other.code).toBe(7);
    expect(other.out).toBe("");
    expect(other.err).toContain("Couldn't connect");
  });
});

describe("lj serve --edge nginx as a process", () => {
  rootTest(
    "kill -9 of lj serve ends its nginx; a restart on the same port leaves exactly one master, serving",
    async () => {
      const root = mkdtempSync(join(tmpdir(), "lj-nginx-restart-"));
      const port = freePort("127.0.0.1");
      const envs = {
        ...process.env,
        LIGHTJAIL_ROOT: root,
        LJ_SUBNET: "10.238.41.0/24",
        LJ_TEST_EDGE: "nginx",
        LJ_TEST_PORT: String(port),
      };
      const prefix = join(root, "edge", "nginx");
      const serve = () =>
        startServe([process.execPath, join(import.meta.dir, "fixtures/paas/serve-fake.ts")], envs);
      const apps = async (x: { url: string; token: string }) =>
        (await fetch(`${x.url}/api/v1/apps`, { headers: { authorization: `Bearer ${x.token}` } })).status;
      try {
        const a = await serve();
        expect(a.url).toBe(`http://127.0.0.1:${port}`);
        expect(await apps(a)).toBe(200);
        const masters = () => nginxIn(prefix).filter((p) => !nginxIn(prefix).some((q) => q.pid === p.ppid));
        expect(masters().length).toBe(1);
        expect(nginxIn(prefix).length).toBeGreaterThan(1);
        // lj serve's workers are scheduled as scheduling.ts says (the master keeps its nice).
        for (const w of nginxIn(prefix).filter((p) => p.ppid === masters()[0]!.pid))
          expect(schedOf(w.pid)).toEqual({ nice: EDGE_NICE, policy: SCHED_BATCH });
        a.proc.kill("SIGKILL");
        await a.proc.exited;
        // The master got SIGTERM when its parent died and ended its workers.
        await until(() => nginxIn(prefix).length === 0, 5000, "nginx gone with lj serve");
        const b = await serve();
        expect(await apps(b)).toBe(200);
        expect(masters().length).toBe(1);
        // Again, with the dead server's nginx still there when the next one starts (stopped
        // until then): whichever ends it, one master is left.
        const before = masters()[0]!.pid;
        Bun.spawnSync(["kill", "-STOP", String(before)]);
        b.proc.kill("SIGKILL");
        await b.proc.exited;
        Bun.spawnSync(["kill", "-CONT", String(before)]);
        const c = await serve();
        expect(await apps(c)).toBe(200);
        expect(masters().length).toBe(1);
        expect(masters()[0]!.pid).not.toBe(before);
        c.proc.kill("SIGTERM");
        await c.proc.exited;
        expect(nginxIn(prefix)).toEqual([]);
      } finally {
        Bun.spawnSync(["rm", "-rf", root]);
      }
    },
    60_000,
  );
});

/** nginx processes whose working directory is `prefix`, with their parents. */
function nginxIn(prefix: string): { pid: number; ppid: number }[] {
  const out: { pid: number; ppid: number }[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readlinkSync(`/proc/${d}/cwd`) !== prefix) continue;
      const st = procStat(Number(d));
      if (st?.comm === "nginx") out.push({ pid: Number(d), ppid: st.ppid });
    } catch {}
  }
  return out;
}

async function until<T>(f: () => T | Promise<T>, ms: number, what: string): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(25);
  }
}

async function waitPort(port: number): Promise<void> {
  await until(
    async () => {
      try {
        (await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } })).end();
        return true;
      } catch {
        return false;
      }
    },
    10_000,
    `port ${port}`,
  );
}
