/**
 * The router without root: its targets are plain HTTP servers on loopback standing in for app
 * instances, its server a stub that names the peer. Routing, round robin, the 404/503/502/413
 * pages, retries, forwarding headers and the access and app logs.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { TrustedProxies } from "../src/server/edge/forwarding.ts";
import { Router, type Target, type WsData } from "../src/server/edge/router.ts";

/** An app instance on loopback: answers with its name, the path and the headers it got. */
function instance(name: string): Server<undefined> {
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: async (req) => {
      const body = req.body ? await req.text() : "";
      const h = Object.fromEntries(req.headers);
      return Response.json(
        { name, path: new URL(req.url, "http://instance").pathname, body: body.length, h },
        {
          headers: { connection: "keep-alive", "x-app": name },
        },
      );
    },
  });
}

const peer = { requestIP: () => ({ address: "192.0.2.7", family: "IPv4", port: 1 }), upgrade: () => false };
const server = peer as unknown as Server<WsData>;

let a: Server<undefined>;
let b: Server<undefined>;
/** A port nothing listens on (a dead instance). */
let dead: Target;
const targets = new Map<string, Target[] | null>();
const appLog: string[] = [];
let router: Router;
let lookups = 0;

beforeAll(async () => {
  a = instance("a");
  b = instance("b");
  const gone = instance("gone");
  dead = { address: "127.0.0.1", port: gone.port! };
  await gone.stop(true);
  router = new Router({
    domain: "example.test",
    targets: (app) => {
      lookups++;
      return targets.has(app) ? targets.get(app)! : null;
    },
    appLog: (app, line) => appLog.push(`${app}: ${line}`),
    maxBodyBytes: 1000,
    domains: { appFor: (h) => (h === "shop.example.com" ? "shop" : null) },
  });
});

afterAll(async () => {
  await Promise.all([a.stop(true), b.stop(true)]);
});

const at = (t: Server<undefined>): Target => ({ address: "127.0.0.1", port: t.port! });
const get = (app: string, path = "/", init: RequestInit = {}) => {
  const req = new Request(`http://${app}.example.test${path}`, init);
  req.headers.set("host", `${app}.example.test`);
  return router.fetch(req, server, app) as Promise<Response>;
};
const json = async (r: Response) =>
  (await r.json()) as { name: string; path: string; body: number; h: Record<string, string> };

describe("which app", () => {
  test("APP.<domain> with or without a port, a custom domain, nothing else", () => {
    expect(router.appFor("hello.example.test")).toBe("hello");
    expect(router.appFor("HELLO.Example.Test:8080")).toBe("hello");
    expect(router.appFor("shop.example.com")).toBe("shop");
    expect(router.appFor("example.test")).toBeNull();
    expect(router.appFor("Bad_Name.example.test")).toBeNull();
    expect(router.appFor("[::1]:80")).toBeNull();
    expect(router.appFor(null)).toBeNull();
  });
});

describe("pages", () => {
  test("an unknown app is 404; an app with no instance up is 503 with Retry-After", async () => {
    router.invalidate();
    expect((await get("nobody")).status).toBe(404);
    targets.set("idle", []);
    const r = await get("idle");
    expect([r.status, r.headers.get("retry-after")]).toEqual([503, "2"]);
    expect(await r.text()).toContain("lj ps idle");
    expect(appLog.some((l) => l.startsWith("idle: ") && l.includes(" 503 "))).toBe(true);
  });

  test("an instance that does not answer is 502", async () => {
    targets.set("down", [dead]);
    router.invalidate();
    expect((await get("down")).status).toBe(502);
  });

  test("a body over the limit is 413 before the app sees it, with a length or without", async () => {
    targets.set("big", [at(a)]);
    router.invalidate();
    const sized = await get("big", "/", { method: "POST", body: "x".repeat(2000) });
    expect(sized.status).toBe(413);
    const stream = new Blob(["x".repeat(2000)]).stream();
    const chunked = await get("big", "/", { method: "POST", body: stream, duplex: "half" } as RequestInit);
    expect(chunked.status).toBe(413);
    expect(appLog.filter((l) => l.startsWith("big: ") && l.includes("--max-body")).length).toBe(2);
    const ok = await get("big", "/", { method: "POST", body: "x".repeat(500) });
    expect((await json(ok)).body).toBe(500);
  });
});

describe("routing", () => {
  test("requests take turns over the app's instances", async () => {
    targets.set("rr", [at(a), at(b)]);
    router.invalidate();
    const names = [];
    for (let i = 0; i < 4; i++) names.push((await json(await get("rr", `/p${i}`))).name);
    expect(names.sort()).toEqual(["a", "a", "b", "b"]);
  });

  test("targets are asked once until invalidated", async () => {
    targets.set("cached", [at(a)]);
    router.invalidate();
    const before = lookups;
    await get("cached");
    await get("cached");
    expect(lookups - before).toBe(1);
    targets.set("cached", [at(b)]);
    expect((await json(await get("cached"))).name).toBe("a");
    router.invalidate();
    expect((await json(await get("cached"))).name).toBe("b");
  });

  test("a request without a body is retried on another instance when one is down", async () => {
    targets.set("half", [dead, at(b)]);
    router.invalidate();
    for (let i = 0; i < 3; i++) expect((await get("half")).status).toBe(200);
  });

  test("forwarding headers are the router's own; hop-by-hop headers go both ways", async () => {
    targets.set("fwd", [at(a)]);
    router.invalidate();
    const r = await get("fwd", "/x?q=1", {
      headers: { "x-forwarded-for": "6.6.6.6", "x-real-ip": "6.6.6.6", "proxy-authorization": "secret" },
    });
    const { h, path } = await json(r);
    expect(path).toBe("/x");
    expect([h["x-forwarded-for"], h["x-real-ip"], h["x-forwarded-proto"]]).toEqual([
      "192.0.2.7",
      "192.0.2.7",
      "http",
    ]);
    expect(h["x-forwarded-host"]).toBe("fwd.example.test");
    expect(h["proxy-authorization"]).toBeUndefined();
    expect(r.headers.get("x-app")).toBe("a");
    expect(r.headers.get("connection")).toBeNull();
  });

  test("a trusted proxy's chain is kept and appended to", async () => {
    const behind = new Router({
      domain: "example.test",
      targets: () => [at(a)],
      trustedProxies: new TrustedProxies(["192.0.2.0/24"]),
    });
    const r = await behind.fetch(
      new Request("http://t.example.test/", { headers: { "x-forwarded-for": "203.0.113.9" } }),
      server,
      "t",
    );
    const { h } = await json(r!);
    expect([h["x-forwarded-for"], h["x-real-ip"]]).toEqual(["203.0.113.9, 192.0.2.7", "203.0.113.9"]);
  });
});
