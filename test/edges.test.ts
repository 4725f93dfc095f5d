/**
 * Issue 15's edges: the router's forwarding headers (real HTTP through the router to a backend
 * that echoes what it got, then through `lj serve` to a jailed app), and formation limits
 * checked in the API and `lj scale` before anything is stored.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "bun";
import { repeated } from "../src/cli/serve.ts";
import { LjError } from "../src/errors.ts";
import { TrustedProxies, trustedProxiesFromConfig } from "../src/server/edge/forwarding.ts";
import { Router, type WsData } from "../src/server/edge/router.ts";
import { type RunningServer, startServer } from "../src/server/serve.ts";
import { fakeBuild } from "./fixtures/paas/fake-build.ts";
import { api, appCopy, auth, createApp, deployDir, removeAppCopies, until } from "./fixtures/paas/helpers.ts";
import {
  expectOwnForwarding,
  expectTrustedChainKept,
  firstWsMessage,
  type Headers,
  SPOOF,
  TRUSTED_CHAIN,
} from "./helpers/forwarding.ts";
import { type JailEnv, lj, makeJailEnv } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

/** What a client might send to pass itself off as someone else. */

// A backend that answers with the headers it received (JSON), on HTTP and on a WebSocket.
let backend: Server<Headers>;
const servers: Server<WsData>[] = [];

beforeAll(() => {
  backend = Bun.serve<Headers>({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, srv) {
      const seen = Object.fromEntries(req.headers) as Headers;
      if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
        return srv.upgrade(req, { data: seen }) ? undefined : new Response("no upgrade", { status: 400 });
      }
      return Response.json(seen);
    },
    websocket: {
      open(ws) {
        ws.send(JSON.stringify(ws.data));
      },
      message() {},
    },
  });
});

afterAll(() => {
  for (const s of servers) s.stop(true);
  backend?.stop(true);
});

/** A router for APP.test in front of the echo backend, listening on `hostname`. */
function front(hostname: string, trusted: string[] = []): { url: string } {
  const router = new Router({
    domain: "test",
    targets: () => [{ address: "127.0.0.1", port: backend.port! }],
    trustedProxies: new TrustedProxies(trusted),
  });
  const s = Bun.serve<WsData>({
    hostname,
    port: 0,
    fetch(req, srv) {
      const app = router.appFor(req.headers.get("host"));
      return app ? router.fetch(req, srv, app) : new Response("not routed", { status: 404 });
    },
    websocket: router.websocket,
  });
  servers.push(s);
  const h = hostname.includes(":") ? `[${hostname}]` : hostname;
  return { url: `http://${h}:${s.port}` };
}

async function echoed(url: string, headers: Headers): Promise<Headers> {
  const r = await fetch(`${url}/`, { headers: { host: "echo.test", ...headers } });
  expect(r.status).toBe(200);
  return (await r.json()) as Headers;
}

describe("router forwarding headers", () => {
  test("a client's forwarding headers are dropped and the router's own set (IPv4 peer)", async () => {
    const seen = await echoed(front("127.0.0.1").url, SPOOF);
    expectOwnForwarding(seen, "echo.test");
  });

  test("without any forwarding header from the client, the same set", async () => {
    const seen = await echoed(front("127.0.0.1").url, {});
    expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen["x-real-ip"]).toBe("127.0.0.1");
    expect(seen.forwarded).toBe("for=127.0.0.1;proto=http;host=echo.test");
  });

  test("an IPv6 peer is quoted in brackets in Forwarded; a host with a port is quoted", async () => {
    const seen = await echoed(front("::1").url, { ...SPOOF, host: "echo.test:8080" });
    expect(seen["x-forwarded-for"]).toBe("::1");
    expect(seen["x-real-ip"]).toBe("::1");
    expect(seen.forwarded).toBe('for="[::1]";proto=http;host="echo.test:8080"');
  });

  test("a peer that is not in the trusted list is not trusted", async () => {
    const seen = await echoed(front("127.0.0.1", ["10.0.0.0/8", "::1"]).url, SPOOF);
    expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen.forwarded).toBe("for=127.0.0.1;proto=http;host=echo.test");
  });

  test("a trusted proxy's chain is kept and the peer appended; X-Real-IP is the client behind it", async () => {
    const url = front("127.0.0.1", ["127.0.0.0/8", "10.1.0.0/16"]).url;
    expectTrustedChainKept(await echoed(url, TRUSTED_CHAIN), "echo.test");
    // A trusted proxy that sent nothing: the peer alone.
    const bare = await echoed(url, {});
    expect(bare["x-forwarded-for"]).toBe("127.0.0.1");
    expect(bare["x-real-ip"]).toBe("127.0.0.1");
    expect(bare.forwarded).toBe("for=127.0.0.1;proto=http;host=echo.test");
  });

  test("WebSocket upgrades get the router's headers too, not the client's", async () => {
    const u = new URL(front("127.0.0.1").url);
    const seen = JSON.parse(
      await firstWsMessage(`ws://${u.host}/`, { host: "echo.test", ...SPOOF }),
    ) as Headers;
    expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen["x-real-ip"]).toBe("127.0.0.1");
    expect(seen.forwarded).toBe("for=127.0.0.1;proto=http;host=echo.test");
    expect(JSON.stringify(seen)).not.toContain("6.6.6.6");
  });
});

describe("trusted proxy configuration", () => {
  test("CIDRs: IPv4, IPv6, single addresses, IPv4-mapped peers", () => {
    const t = new TrustedProxies(["10.0.0.0/8", "fd00::/8", "192.0.2.7", "::1"]);
    expect(t.has("10.200.3.4")).toBe(true);
    expect(t.has("11.0.0.1")).toBe(false);
    expect(t.has("fd12:3456::1")).toBe(true);
    expect(t.has("fe80::1")).toBe(false);
    expect(t.has("192.0.2.7")).toBe(true);
    expect(t.has("192.0.2.8")).toBe(false);
    expect(t.has("::ffff:10.1.1.1")).toBe(true);
    expect(t.has("::1")).toBe(true);
    expect(t.has("not-an-ip")).toBe(false);
    expect(new TrustedProxies([]).has("127.0.0.1")).toBe(false);
    for (const bad of ["10.0.0.0/33", "300.1.1.1", "::1/129", "10.0.0.0/8/1", "example.com", ""]) {
      expect(() => new TrustedProxies([bad])).toThrow(LjError);
    }
  });

  test("LJ_TRUSTED_PROXIES wins over [router] trusted_proxies in config.toml; none by default", () => {
    const dir = mkdtempSync(join(tmpdir(), "lj-edges-cfg-"));
    const file = join(dir, "config.toml");
    try {
      expect(trustedProxiesFromConfig({}, file).list).toEqual([]);
      writeFileSync(file, '[router]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n');
      expect(trustedProxiesFromConfig({}, file).list).toEqual(["10.0.0.0/8", "::1"]);
      expect(trustedProxiesFromConfig({ LJ_TRUSTED_PROXIES: "192.0.2.0/24, 127.0.0.1" }, file).list).toEqual([
        "192.0.2.0/24",
        "127.0.0.1",
      ]);
      expect(trustedProxiesFromConfig({ LJ_TRUSTED_PROXIES: "" }, file).list).toEqual([]);
      writeFileSync(file, '[router]\ntrusted_proxies = ["10.0.0.0/99"]\n');
      expect(() => trustedProxiesFromConfig({}, file)).toThrow(/trusted_proxies/);
      expect(() => trustedProxiesFromConfig({ LJ_TRUSTED_PROXIES: "nope" }, file)).toThrow(
        /LJ_TRUSTED_PROXIES/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("--trusted-proxy is repeatable (and takes comma lists)", () => {
    expect(repeated(["--port", "0"], "--trusted-proxy")).toBeUndefined();
    expect(
      repeated(
        ["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy=::1,192.0.2.1", "--json"],
        "--trusted-proxy",
      ),
    ).toEqual(["10.0.0.0/8", "::1", "192.0.2.1"]);
    expect(() => repeated(["--trusted-proxy"], "--trusted-proxy")).toThrow(LjError);
  });

  test("lj serve --trusted-proxy with a bad CIDR exits 64 before serving", async () => {
    const root = mkdtempSync(join(tmpdir(), "lj-edges-serve-"));
    try {
      const r = await lj(
        ["serve", "--port", "0", "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "10.0.0.0/40"],
        {
          LIGHTJAIL_ROOT: root,
        },
      );
      expect(r.code).toBe(64);
      expect(r.stderr).toContain('"10.0.0.0/40" is not an address or CIDR');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

// Through lj serve, with a jailed app -------------------------------------------------------

let env: JailEnv;
let s: RunningServer;

/** Listens on :: (dual stack) and trusts ::1 only: IPv4 clients are untrusted, IPv6 loopback trusted. */
beforeAll(async () => {
  if (!isRoot()) return;
  process.env.LJ_SUBNET = "10.251.73.0/24";
  env = await makeJailEnv();
  s = await startServer({ build: fakeBuild, healthTimeoutMs: 8000, hostname: "::", trustedProxies: ["::1"] });
});

afterAll(async () => {
  removeAppCopies();
  if (!isRoot()) return;
  await s?.stop();
  env?.cleanup();
});

const ECHO_APP = `require("node:http")
  .createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(req.headers));
  })
  .listen(Number(process.env.PORT), "0.0.0.0");
`;

const cli = (args: string[]) => lj(args, { LJ_REMOTE: s.url, LJ_TOKEN: s.token, LIGHTJAIL_ROOT: env.root });

describe("lj serve: forwarding headers reach a jailed app", () => {
  rootTest(
    "spoofed headers from an untrusted client are replaced; a trusted peer's chain is kept",
    async () => {
      await createApp(s, "hdrs");
      const d = await deployDir(s, "hdrs", appCopy("node-hello", { "server.js": ECHO_APP }));
      expect(d.deploy?.status, d.log).toBe("succeeded");
      const get = async (base: string) => {
        const r = await fetch(`${base}/`, { headers: { host: "hdrs.localhost", ...SPOOF } });
        expect(r.status).toBe(200);
        return (await r.json()) as Headers;
      };
      const v4 = await get(`http://127.0.0.1:${s.port}`);
      expect(v4["x-forwarded-for"]).toBe("127.0.0.1");
      expect(v4["x-real-ip"]).toBe("127.0.0.1");
      expect(v4.forwarded).toBe("for=127.0.0.1;proto=http;host=hdrs.localhost");
      expect(v4["x-forwarded-proto"]).toBe("http");
      expect(JSON.stringify(v4)).not.toContain("6.6.6.6");
      const v6 = await get(`http://[::1]:${s.port}`);
      expect(v6["x-forwarded-for"]).toBe("6.6.6.6, ::1");
      expect(v6["x-real-ip"]).toBe("6.6.6.6");
      expect(v6.forwarded).toBe('for=6.6.6.6;proto=https, for="[::1]";proto=http;host=hdrs.localhost');
      expect(v6["x-forwarded-proto"]).toBe("https");
    },
    60_000,
  );
});

describe("formation limits are validated", () => {
  const patch = (app: string, body: unknown) =>
    fetch(`${s.url}/api/v1/apps/${app}/formation`, {
      method: "PATCH",
      headers: { ...auth(s), "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const formation = async (app: string) =>
    (await api<{ formation: Record<string, Record<string, number>> }>(s, "GET", `/apps/${app}/ps`)).formation;

  rootTest(
    "bad values get 400 naming the field, nothing is stored, and good ones still apply",
    async () => {
      await createApp(s, "limits");
      expect((await deployDir(s, "limits", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
      const before = await formation("limits");
      const cases: [unknown, string][] = [
        [{ web: { memoryMb: -5 } }, "web.memoryMb must be an integer from 16 to 65536 (got -5)"],
        [{ web: { memoryMb: 8 } }, "web.memoryMb must be an integer from 16 to 65536 (got 8)"],
        [{ web: { memoryMb: 70000 } }, "web.memoryMb must be an integer from 16 to 65536"],
        [{ web: { memoryMb: 256.5 } }, "web.memoryMb must be an integer"],
        [{ web: { memoryMb: "256" } }, 'web.memoryMb must be an integer from 16 to 65536 (got "256")'],
        [{ web: { memoryMb: null } }, "web.memoryMb must be an integer"],
        [{ web: { pids: 0 } }, "web.pids must be an integer from 16 to 65536 (got 0)"],
        [{ web: { pids: 1e9 } }, "web.pids must be an integer from 16 to 65536"],
        [{ web: -1 }, "web.count must be an integer from 0 to 100 (got -1)"],
        [{ web: 101 }, "web.count must be an integer from 0 to 100"],
        [{ web: { count: 2, cpuShares: 5 } }, "web.cpuShares: not a formation field"],
        [{ web: "2" }, "web: expected a count or {count, memoryMb, pids}"],
        [{ "Bad Type": 1 }, 'invalid process type "Bad Type"'],
        [[1], "the body must be an object"],
        // One good change and one bad: neither is stored.
        [{ web: { count: 2, memoryMb: 128 }, worker: { pids: 1 } }, "worker.pids must be an integer"],
      ];
      for (const [body, message] of cases) {
        const r = await patch("limits", body);
        expect(r.status).toBe(400);
        const e = ((await r.json()) as { error: { code: string; message: string; hint?: string } }).error;
        expect(e.message).toContain(message);
        expect(e.code).toMatch(/^bad-(formation|process-type)$/);
      }
      expect(await formation("limits")).toEqual(before);
      // The app is still up on its old formation, and a good change applies.
      const ok = await patch("limits", { web: { memoryMb: 128, pids: 64 } });
      expect(ok.status).toBe(200);
      expect((await formation("limits")).web).toMatchObject({ count: 1, memoryMb: 128, pids: 64 });
      await until(
        async () =>
          (await api<{ processes: { state: string }[] }>(s, "GET", "/apps/limits/ps")).processes.some(
            (p) => p.state === "up",
          ),
        20_000,
        "the app up with its new limits",
      );
    },
    90_000,
  );

  rootTest(
    "lj scale: out-of-range values exit 64 naming the field, and change nothing",
    async () => {
      await createApp(s, "climits");
      const before = await formation("climits");
      for (const [arg, field] of [
        ["web:memory=5", "web.memoryMb"],
        ["web:memory=100000", "web.memoryMb"],
        ["web:pids=3", "web.pids"],
        ["web=500", "web.count"],
      ] as const) {
        const r = await cli(["scale", "climits", arg]);
        expect(r.code).toBe(64);
        expect(r.stderr).toContain(`${field} must be an integer`);
      }
      // Not even a number: refused by the CLI itself.
      const neg = await cli(["scale", "climits", "web:memory=-5"]);
      expect(neg.code).toBe(64);
      expect(await formation("climits")).toEqual(before);
    },
    60_000,
  );
});
