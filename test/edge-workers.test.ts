/**
 * The edge's worker processes (src/server/edge/workers.ts): real worker processes on shared
 * ports in front of a real HTTP backend. Requests are served by more than one worker, a killed
 * worker is replaced while the others keep answering, a route, a custom domain or a certificate
 * added after start reaches every worker, the rest (API, challenges, WebSockets) reaches the
 * owning process, and the workers end with it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "bun";
import { edgeArgs } from "../src/cli/serve.ts";
import { LjError } from "../src/errors.ts";
import { CertManager } from "../src/server/edge/certs.ts";
import type { Target, WsData } from "../src/server/edge/router.ts";
import { EDGE_NICE } from "../src/server/edge/scheduling.ts";
import { EdgeWorkers } from "../src/server/edge/workers.ts";
import { SCHED_BATCH, SCHED_OTHER, schedOf } from "./helpers/sched.ts";
import { selfSigned } from "./helpers/tls.ts";

const dir = mkdtempSync(join(tmpdir(), "lj-edge-workers-"));
let backend: Server<unknown>;
let routes: Record<string, Target[]> = {};
let domains: Record<string, string> = {};
let certs: CertManager;
let edge: EdgeWorkers;
const accessLines: string[] = [];
const appLines: string[] = [];

/** One request on a connection of its own (so the kernel picks a worker for each). */
async function get(host: string, path = "/", port = edge.port): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, {
    headers: { host, connection: "close" },
    keepalive: false,
  });
  return { status: r.status, body: await r.text() };
}

const served = () => edge.stats().filter((s) => s.requests > 0).length;

/** The access-log batches arrive within the workers' flush interval. */
async function until<T>(f: () => T | undefined | null | false, ms = 10_000, what = "condition"): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(25);
  }
}

beforeAll(async () => {
  backend = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) => new Response(`app saw ${new URL(req.url).pathname} for ${req.headers.get("host")}\n`),
  });
  certs = new CertManager({
    dir: join(dir, "certs"),
    wanted: () => Object.keys(domains),
    log: () => {},
    onChange: () => {},
  });
  edge = await EdgeWorkers.start({
    count: 2,
    hostname: "127.0.0.1",
    port: 0,
    httpsPort: 0,
    domain: "w.test",
    maxRequestBodySize: 1 << 20,
    routes: () => routes,
    domains: () => domains,
    certs,
    other: (req, srv) => {
      if (req.headers.get("upgrade") === "websocket")
        return srv.upgrade(req, { data: {} as WsData })
          ? (undefined as unknown as Response)
          : new Response("no", { status: 400 });
      const path = new URL(req.url).pathname;
      if (req.method === "POST")
        return req.arrayBuffer().then((b) => new Response(`api got ${b.byteLength} bytes\n`));
      if (path === "/api/v1/follow") {
        // A long answer in pieces, as deploy logs follow.
        return new Response(
          new ReadableStream({
            async start(c) {
              for (let i = 0; i < 5; i++) {
                c.enqueue(new TextEncoder().encode(`line ${i}\n`));
                await Bun.sleep(30);
              }
              c.close();
            },
          }),
        );
      }
      return new Response(`api: ${path}\n`, { status: 200 });
    },
    websocket: {
      open(ws) {
        ws.send("hello from lj serve");
      },
      message(ws, m) {
        ws.send(`echo ${m}`);
      },
    },
    access: (text) => accessLines.push(...text.trimEnd().split("\n")),
    appLog: (app, line) => appLines.push(`${app} ${line}`),
    log: () => {},
  });
}, 30_000);

afterAll(async () => {
  await edge?.stop();
  backend?.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

describe("edge workers", () => {
  test("a route added after start reaches every worker; more than one worker serves", async () => {
    expect((await get("web.w.test")).status).toBe(404);
    routes = { web: [{ address: "127.0.0.1", port: backend.port! }] };
    edge.publish();
    await edge.synced();
    const before = edge.stats().map((s) => s.requests);
    for (let i = 0; i < 60; i++) {
      const r = await get("web.w.test", `/n${i}`);
      expect(r).toEqual({ status: 200, body: `app saw /n${i} for web.w.test\n` });
    }
    // Every worker answered some of the 60 connections, each with the new route.
    await until(
      () => edge.stats().reduce((n, s) => n + s.requests, 0) >= before.reduce((n, x) => n + x, 0) + 60,
    );
    const after = edge.stats().map((s) => s.requests);
    expect(after.filter((n, i) => n > before[i]!).length).toBe(2);
    expect(served()).toBe(2);
    // The access log is written by the owning process, one line per request.
    expect(accessLines.filter((l) => / web GET \/n\d+ 200 /.test(l)).length).toBe(60);
  }, 30_000);

  test("a removed route is gone from every worker; errors reach the app's log", async () => {
    routes = { web: [] };
    edge.publish();
    await edge.synced();
    for (let i = 0; i < 20; i++) expect((await get("web.w.test")).status).toBe(503);
    await until(
      () => appLines.filter((l) => l.startsWith("web GET / 503")).length === 20,
      10_000,
      "20 app-log lines",
    );
    routes = { web: [{ address: "127.0.0.1", port: backend.port! }] };
    edge.publish();
    await edge.synced();
  });

  test("a custom domain and its certificate reach every worker (HTTPS by SNI)", async () => {
    expect(edge.httpsPort).toBeUndefined();
    domains = { "shop.test": "web" };
    const { cert, key } = selfSigned(dir, "shop.test");
    certs.put("shop.test", cert, key);
    edge.publish();
    await edge.synced();
    const port = await until(() => edge.httpsPort, 10_000, "the HTTPS port");
    const before = edge.stats().map((s) => s.requests);
    for (let i = 0; i < 40; i++) {
      const res = await fetch(`https://127.0.0.1:${port}/tls${i}`, {
        headers: { host: "shop.test", connection: "close" },
        keepalive: false,
        tls: { ca: cert, serverName: "shop.test" },
      } as RequestInit);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe(`app saw /tls${i} for shop.test\n`);
    }
    await until(() => edge.stats().every((s, i) => s.requests > before[i]!), 10_000, "both workers on HTTPS");
    // Plain HTTP for the domain is sent to HTTPS by every worker.
    for (let i = 0; i < 10; i++) {
      const r = await fetch(`http://127.0.0.1:${edge.port}/x?y=1`, {
        headers: { host: "shop.test", connection: "close" },
        redirect: "manual",
      });
      expect(r.status).toBe(308);
      expect(r.headers.get("location")).toBe(`https://shop.test:${port}/x?y=1`);
    }
  }, 30_000);

  test("what is not for an app reaches the owning process: API, ACME challenges, WebSockets", async () => {
    expect(await get("127.0.0.1", "/api/v1/apps")).toEqual({ status: 200, body: "api: /api/v1/apps\n" });
    // An upload streams through a worker to the owner; a long answer streams back.
    const up = await fetch(`http://127.0.0.1:${edge.port}/api/v1/apps/x/deploys`, {
      method: "POST",
      headers: { host: "127.0.0.1" },
      body: new Uint8Array(512 * 1024),
    });
    expect(await up.text()).toBe(`api got ${512 * 1024} bytes\n`);
    expect(await get("127.0.0.1", "/api/v1/follow")).toEqual({
      status: 200,
      body: "line 0\nline 1\nline 2\nline 3\nline 4\n",
    });
    (certs.challenges as Map<string, string>).set("tok123", "tok123.thumb");
    for (let i = 0; i < 6; i++)
      expect(await get("shop.test", "/.well-known/acme-challenge/tok123")).toEqual({
        status: 200,
        body: "tok123.thumb",
      });
    expect((await get("shop.test", "/.well-known/acme-challenge/nope")).status).toBe(404);
    const ws = new WebSocket(`ws://127.0.0.1:${edge.port}/api/v1/run`);
    const got: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.onmessage = (ev) => {
        got.push(String(ev.data));
        if (got.length === 1) ws.send("ping");
        if (got.length === 2) resolve();
      };
      ws.onerror = () => reject(new Error("websocket failed"));
      ws.onclose = (ev) => reject(new Error(`websocket closed: ${ev.code}`));
    });
    ws.close();
    expect(got).toEqual(["hello from lj serve", "echo ping"]);
  });

  test("a killed worker is replaced and the edge keeps answering", async () => {
    const [victim, other] = edge.stats().map((s) => s.pid!);
    process.kill(victim!, "SIGKILL");
    // Connections the kernel had queued on its socket die with it (as with any server); once it
    // is gone, and until its successor listens, the other worker answers every connection.
    await until(() => !edge.stats().some((s) => s.pid === victim), 10_000, "the worker to end");
    for (let i = 0; i < 20; i++) expect((await get("web.w.test", "/during")).status).toBe(200);
    const pids = await until(
      () => {
        const p = edge.stats().map((s) => s.pid);
        return p.every((x) => x !== null && x !== victim) ? p : null;
      },
      15_000,
      "a new worker",
    );
    expect(pids).toContain(other!);
    // The new worker has every table: routes, domains and certificates.
    const fresh = edge.stats().findIndex((s) => s.pid !== other);
    const before = edge.stats()[fresh]!.requests;
    for (let i = 0; i < 40; i++) expect((await get("web.w.test", "/after")).status).toBe(200);
    await until(() => edge.stats()[fresh]!.requests > before, 10_000, "the new worker to serve");
    const tls = await fetch(`https://127.0.0.1:${edge.httpsPort}/`, {
      headers: { host: "shop.test", connection: "close" },
      tls: { rejectUnauthorized: false, serverName: "shop.test" },
    } as RequestInit);
    expect(tls.status).toBe(200);
    // The new worker is scheduled as the first ones were.
    expect(schedOf(edge.stats()[fresh]!.pid!)).toEqual(schedOf(other!));
  }, 30_000);

  test("the workers run under SCHED_BATCH at nice -5 (as root; else at lj serve's), a replaced one too", async () => {
    const want = {
      nice: process.getuid?.() === 0 ? EDGE_NICE : schedOf(process.pid).nice,
      policy: SCHED_BATCH,
    };
    const pids = edge.stats().map((s) => s.pid!);
    expect(pids.length).toBe(2);
    for (const pid of pids) expect(schedOf(pid)).toEqual(want);
    // lj serve itself stays as it was.
    expect(schedOf(process.pid).policy).toBe(SCHED_OTHER);
  });
});

describe("edge workers and their owner", () => {
  test("lj serve --edge-workers: auto is one per core, 0 keeps the edge in lj serve, the rest is refused", () => {
    expect(edgeArgs({}).edgeWorkers).toBe(availableParallelism());
    expect(edgeArgs({ "edge-workers": "0" }).edgeWorkers).toBe(0);
    expect(edgeArgs({ "edge-workers": "3" }).edgeWorkers).toBe(3);
    for (const bad of ["-1", "two", "1.5", "9999"]) {
      let err: unknown;
      try {
        edgeArgs({ "edge-workers": bad });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(LjError);
      expect((err as LjError).exitCode).toBe(64);
      expect((err as LjError).message).toContain("--edge-workers");
    }
  });

  test("where the host refuses SCHED_BATCH the edge goes without it instead of failing to start", () => {
    const probe = (chrt?: string) => {
      const r = Bun.spawnSync(
        [
          process.execPath,
          "-e",
          `const { edgeScheduling, scheduled } = await import(${JSON.stringify(join(import.meta.dir, "../src/server/edge/scheduling.ts"))});
           const s = edgeScheduling(); console.log(JSON.stringify({ batch: s.batch, argv: scheduled(s, ["nginx"]) }));`,
        ],
        { env: { ...process.env, ...(chrt ? { LJ_TEST_CHRT: chrt } : {}) }, stderr: "pipe" },
      );
      expect(r.stderr.toString()).toBe("");
      return JSON.parse(r.stdout.toString()) as { batch: boolean; argv: string[] };
    };
    expect(probe()).toEqual({ batch: true, argv: ["/usr/bin/chrt", "--batch", "0", "nginx"] });
    expect(probe("/bin/false")).toEqual({ batch: false, argv: ["nginx"] });
    expect(probe("/nonexistent/chrt")).toEqual({ batch: false, argv: ["nginx"] });
  });

  test("lj serve --edge-nice and --edge-policy: checked, and left to the defaults when unset", () => {
    expect(edgeArgs({}).edgeScheduling).toEqual({});
    expect(edgeArgs({ "edge-nice": "7", "edge-policy": "normal" }).edgeScheduling).toEqual({
      nice: 7,
      batch: false,
    });
    expect(edgeArgs({ "edge-policy": "batch" }).edgeScheduling).toEqual({ batch: true });
    const bad: Record<string, string>[] = [
      { "edge-nice": "20" },
      { "edge-nice": "-21" },
      { "edge-nice": "1.5" },
      { "edge-nice": "low" },
      { "edge-policy": "fifo" },
    ];
    for (const args of bad) {
      let err: unknown;
      try {
        edgeArgs(args);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(LjError);
      expect((err as LjError).exitCode).toBe(64);
      expect((err as LjError).message).toContain(Object.keys(args)[0]!);
    }
    if (process.getuid?.() === 0)
      expect(edgeArgs({ "edge-nice": "-10" }).edgeScheduling).toEqual({ nice: -10 });
  });

  test("the bound on requests in flight toward one instance holds over all workers together", async () => {
    let now = 0;
    let most = 0;
    const slow = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch() {
        most = Math.max(most, ++now);
        await Bun.sleep(100);
        now--;
        return new Response("slow\n");
      },
    });
    const w = await EdgeWorkers.start({
      count: 2,
      hostname: "127.0.0.1",
      port: 0,
      domain: "b.test",
      perInstance: 4,
      maxRequestBodySize: 1024,
      routes: () => ({ slow: [{ address: "127.0.0.1", port: slow.port! }] }),
      domains: () => ({}),
      other: () => new Response("api"),
      log: () => {},
    });
    try {
      const all = await Promise.all(Array.from({ length: 24 }, () => get("slow.b.test", "/", w.port)));
      expect(all.every((r) => r.status === 200 && r.body === "slow\n")).toBe(true);
      expect(most).toBeLessThanOrEqual(4);
      expect(most).toBeGreaterThanOrEqual(2);
    } finally {
      await w.stop();
      slow.stop(true);
    }
  }, 30_000);

  test("workers end when the process that started them dies", async () => {
    const script = join(dir, "owner.ts");
    await Bun.write(
      script,
      `import { EdgeWorkers } from ${JSON.stringify(join(import.meta.dir, "../src/server/edge/workers.ts"))};
const w = await EdgeWorkers.start({ count: 2, hostname: "127.0.0.1", port: 0, domain: "o.test",
  maxRequestBodySize: 1024, routes: () => ({}), domains: () => ({}), other: () => new Response("api"), log: () => {} });
console.log(JSON.stringify({ port: w.port, pids: w.stats().map((s) => s.pid) }));
setInterval(() => {}, 1000);
`,
    );
    const owner = Bun.spawn([process.execPath, script], { stdout: "pipe", stderr: "inherit" });
    const reader = owner.stdout.getReader();
    const { value } = await reader.read();
    const { port, pids } = JSON.parse(new TextDecoder().decode(value)) as { port: number; pids: number[] };
    expect(pids.length).toBe(2);
    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(200);
    owner.kill("SIGKILL");
    await owner.exited;
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await until(() => pids.every((p) => !alive(p)), 10_000, "the workers to end");
    await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow();
  }, 30_000);

  test("a port already taken without SO_REUSEPORT is a clear error, and nothing is left running", async () => {
    const taken = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("mine") });
    try {
      await expect(
        EdgeWorkers.start({
          count: 2,
          hostname: "127.0.0.1",
          port: taken.port!,
          domain: "o.test",
          maxRequestBodySize: 1024,
          routes: () => ({}),
          domains: () => ({}),
          other: () => new Response("api"),
          log: () => {},
        }),
      ).rejects.toThrow(/edge worker/);
      expect(await (await fetch(`http://127.0.0.1:${taken.port}/`)).text()).toBe("mine");
    } finally {
      taken.stop(true);
    }
  });
});
