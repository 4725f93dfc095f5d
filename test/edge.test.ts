/**
 * Issue 16's edge: custom domains (API, CLI, routing), HTTPS with certificates from a real ACME
 * server (Pebble, with a DNS stand-in that resolves every name to 127.0.0.1, validating HTTP-01
 * against lj serve's own HTTP port), renewal, the HTTP->HTTPS redirect, the request body limit
 * and its log line, a jailed app's requests in flight held to the per-instance bound by both
 * edges, and no errors under connection churn (wrk against the router).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { LjError } from "../src/errors.ts";
import { checkDomain } from "../src/paas/domains.ts";
import { Router, type WsData } from "../src/server/edge/router.ts";
import { type RunningServer, startServer } from "../src/server/serve.ts";
import { paths } from "../src/store/paths.ts";
import { fakeBuild } from "./fixtures/paas/fake-build.ts";
import { api, appCopy, auth, createApp, deployDir, removeAppCopies, until } from "./fixtures/paas/helpers.ts";
import { expectBodyLimit } from "./helpers/body-limit.ts";
import { type JailEnv, lj, makeJailEnv } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

const tools = join(import.meta.dir, "..", ".tools");

describe("domain names", () => {
  test("valid names are canonical; bad ones are usage errors that name the field", () => {
    expect(checkDomain("WWW.Example.COM.", "localhost")).toBe("www.example.com");
    expect(checkDomain("xn--bcher-kva.example", "localhost")).toBe("xn--bcher-kva.example");
    for (const bad of [
      "",
      "example",
      "*.example.com",
      "-a.example.com",
      "a_b.example.com",
      "1.2.3.4",
      "a..b",
      "x.localhost",
      7,
    ]) {
      let e: unknown;
      try {
        checkDomain(bad, "localhost");
      } catch (err) {
        e = err;
      }
      expect(e).toBeInstanceOf(LjError);
      expect((e as LjError).code).toBe("bad-domain");
      expect((e as LjError).httpStatus).toBe(400);
      expect((e as LjError).message).toStartWith("domain: ");
    }
  });
});

// Pebble ---------------------------------------------------------------------------------------------

const free = () => {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const p = s.port!;
  s.stop(true);
  return p;
};

async function waitPort(port: number, ms = 20_000): Promise<void> {
  await until(
    async () => {
      try {
        const c = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
        c.end();
        return true;
      } catch {
        return false;
      }
    },
    ms,
    `port ${port}`,
  );
}

interface Pebble {
  directory: string;
  /** Pebble's own TLS (its listener), to trust when talking ACME. */
  ca: string;
  /** The root that signs issued certificates, to trust on the client side. */
  root(): Promise<string>;
  stop(): void;
}

async function startPebble(dir: string, httpPort: number, validitySeconds: number): Promise<Pebble> {
  const [acme, mgmt, dns] = [free(), free(), free()];
  const conf = join(dir, "pebble.json");
  writeFileSync(
    conf,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acme}`,
        managementListenAddress: `127.0.0.1:${mgmt}`,
        certificate: join(tools, "pebble", "cert.pem"),
        privateKey: join(tools, "pebble", "key.pem"),
        httpPort,
        tlsPort: free(),
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
        retryAfter: { authz: 1, order: 1 },
        keyAlgorithm: "ecdsa",
        profiles: { default: { description: "short", validityPeriod: validitySeconds } },
      },
    }),
  );
  const procs: Subprocess[] = [];
  const quiet = { stdout: "ignore", stderr: "ignore" } as const;
  procs.push(
    Bun.spawn(
      [
        join(tools, "bin", "pebble-challtestsrv"),
        "-dnsserver",
        `127.0.0.1:${dns}`,
        "-management",
        `127.0.0.1:${free()}`,
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
        "-doh",
        "",
        "-defaultIPv4",
        "127.0.0.1",
        "-defaultIPv6",
        "",
      ],
      quiet,
    ),
  );
  procs.push(
    Bun.spawn(
      [join(tools, "bin", "pebble"), "-config", conf, "-dnsserver", `127.0.0.1:${dns}`, "-strict=false"],
      {
        ...quiet,
        env: { ...process.env, PEBBLE_VA_NOSLEEP: "1" },
      },
    ),
  );
  await waitPort(acme);
  await waitPort(mgmt);
  const ca = readFileSync(join(tools, "pebble", "pebble.minica.pem"), "utf8");
  return {
    directory: `https://127.0.0.1:${acme}/dir`,
    ca,
    root: async () =>
      (await fetch(`https://127.0.0.1:${mgmt}/roots/0`, { tls: { ca } } as RequestInit)).text(),
    stop: () => {
      for (const p of procs) p.kill();
    },
  };
}

/** The serial of the certificate the edge presents for `name` (openssl s_client). */
async function servedSerial(port: number, name: string): Promise<string> {
  const p = Bun.spawn(["openssl", "s_client", "-connect", `127.0.0.1:${port}`, "-servername", name], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "ignore",
  });
  const text = await new Response(p.stdout).text();
  const x = Bun.spawn(["openssl", "x509", "-noout", "-serial"], {
    stdin: new TextEncoder().encode(text),
    stdout: "pipe",
  });
  return (await new Response(x.stdout).text()).trim();
}

// The server ---------------------------------------------------------------------------------------

const VALIDITY = 30;

// Each edge lj serve can run: the built-in one (in worker processes, as lj serve runs it by
// default) and nginx driven by lj serve.
for (const edge of ["builtin", "nginx"] as const)
  describe(`lj serve with the ${edge} edge`, () => {
    let env: JailEnv;
    let s: RunningServer;
    let pebble: Pebble;

    beforeAll(async () => {
      if (!isRoot()) return;
      process.env.LJ_SUBNET = edge === "nginx" ? "10.237.17.0/24" : "10.237.16.0/24";
      env = await makeJailEnv();
      // Pebble needs lj serve's HTTP port for HTTP-01 and lj serve needs Pebble's URL: the port is
      // chosen first, then both start.
      const port = free();
      pebble = await startPebble(env.root, port, VALIDITY);
      s = await startServer({
        build: fakeBuild,
        port,
        httpsPort: 0,
        healthTimeoutMs: 8000,
        maxBodyBytes: 64 * 1024,
        acme: { directory: pebble.directory, email: "ops@example.com", ca: pebble.ca },
        certCheckEveryMs: 1000,
        // As lj serve runs by default: the listeners in worker processes (HTTP-01 answered through
        // them, certificates reaching each of them); with nginx, its worker_processes.
        edgeWorkers: 2,
        edge,
      });
      expect(s.nginx !== null).toBe(edge === "nginx");
    }, 60_000);

    afterAll(async () => {
      removeAppCopies();
      if (!isRoot()) return;
      await s?.stop();
      pebble?.stop();
      env?.cleanup();
    });

    const cli = (args: string[]) =>
      lj(args, { LJ_REMOTE: s.url, LJ_TOKEN: s.token, LIGHTJAIL_ROOT: env.root });

    describe("domains and HTTPS", () => {
      rootTest(
        "lj domains add/list/remove; the app answers at its domain; a certificate from Pebble; HTTPS, redirect, renewal",
        async () => {
          await createApp(s, "shop");
          const dep = await deployDir(s, "shop", appCopy("node-hello"));
          expect(dep.log).toContain("succeeded");
          expect(dep.deploy?.status).toBe("succeeded");

          // Bad input: 400 naming the field; unknown app 404; a taken domain 409.
          const bad = await fetch(`${s.url}/api/v1/apps/shop/domains`, {
            method: "POST",
            headers: { ...auth(s), "content-type": "application/json" },
            body: JSON.stringify({ domain: "not a domain" }),
          });
          expect(bad.status).toBe(400);
          const be = ((await bad.json()) as { error: { code: string; message: string } }).error;
          expect(be.code).toBe("bad-domain");
          expect(be.message).toStartWith("domain:");
          const cliBad = await cli(["domains", "add", "shop", "*.shop.test"]);
          expect(cliBad.code).toBe(64);
          expect(cliBad.stderr).toContain("wildcard");

          const added = await cli(["domains", "add", "shop", "Shop.Test"]);
          expect(added.code).toBe(0);
          expect(added.stdout).toContain("shop.test now routes to shop");
          await createApp(s, "other");
          const dup = await cli(["domains", "add", "other", "shop.test"]);
          expect(dup.code).not.toBe(0);
          expect(dup.stderr).toContain("already belongs to app shop");

          // Routed by Host before any certificate (plain HTTP works while none exists).
          const plain = await fetch(`${s.url}/`, { headers: { host: "shop.test" }, redirect: "manual" });
          expect([200, 308]).toContain(plain.status);

          // The certificate: issued over HTTP-01 by Pebble, stored 0600 in a 0700 dir.
          await until(() => s.certs.get("shop.test"), 90_000, "a certificate for shop.test");
          const dir = join(paths.paas(), "certs");
          expect((statSync(dir).mode & 0o777).toString(8)).toBe("700");
          for (const f of ["shop.test.crt", "shop.test.key", "account.key"])
            expect((statSync(join(dir, f)).mode & 0o777).toString(8)).toBe("600");
          const listed = await cli(["domains", "list", "shop"]);
          expect(listed.stdout).toMatch(/shop\.test\s+valid until/);

          // HTTPS with a client that trusts only Pebble's root and names shop.test (SNI + Host).
          const root = await pebble.root();
          await until(() => s.httpsPort(), 10_000, "the HTTPS listener");
          const https = `https://127.0.0.1:${s.httpsPort()}`;
          const r = await fetch(`${https}/`, {
            headers: { host: "shop.test" },
            tls: { ca: root, serverName: "shop.test" },
          } as RequestInit);
          expect(r.status).toBe(200);
          expect(await r.text()).toContain("hello from node web");
          // A client that does not trust Pebble's root refuses the certificate.
          await expect(
            fetch(`${https}/`, {
              headers: { host: "shop.test" },
              tls: { serverName: "shop.test" },
            } as RequestInit),
          ).rejects.toThrow();

          // HTTP now redirects to HTTPS, path and query kept; APP.<domain> (no certificate) does not.
          const redir = await fetch(`${s.url}/a/b?c=1`, {
            headers: { host: "shop.test" },
            redirect: "manual",
          });
          expect(redir.status).toBe(308);
          expect(redir.headers.get("location")).toBe(`https://shop.test:${s.httpsPort()}/a/b?c=1`);
          const sub = await fetch(`${s.url}/`, { headers: { host: "shop.localhost" }, redirect: "manual" });
          expect(sub.status).toBe(200);

          // Renewal: with a third of the (short) lifetime left a new certificate is obtained and served.
          const first = s.certs.get("shop.test")!.notAfter;
          const serial1 = await servedSerial(s.httpsPort()!, "shop.test");
          expect(serial1).toStartWith("serial=");
          await until(
            () => s.certs.get("shop.test")!.notAfter > first,
            VALIDITY * 1000,
            "a renewed certificate",
          );
          const serial2 = await until(
            async () => {
              const v = await servedSerial(s.httpsPort()!, "shop.test");
              return v !== serial1 && v.startsWith("serial=") ? v : null;
            },
            10_000,
            "the renewed certificate served",
          );
          expect(serial2).not.toBe(serial1);

          // Removal: the domain no longer routes.
          expect((await cli(["domains", "remove", "shop", "shop.test"])).code).toBe(0);
          const gone = await fetch(`${s.url}/`, { headers: { host: "shop.test" }, redirect: "manual" });
          expect(gone.status).toBe(404);
          expect((await api<{ domains: unknown[] }>(s, "GET", "/apps/shop/domains")).domains).toEqual([]);
        },
        180_000,
      );

      rootTest(
        "request bodies over --max-body get a 413 page that the access log and the app's log record",
        async () => {
          if (!s.paas.db.findApp("shop")) {
            await createApp(s, "shop");
            await deployDir(s, "shop", appCopy("node-hello"));
          }
          await expectBodyLimit(s.url, "shop.localhost");
          await s.flushAccessLog();
          const access = readFileSync(join(paths.paasLogs(), "access.log"), "utf8");
          expect(access.match(/shop POST \/ 413 .*--max-body/g)?.length).toBe(2);
          await until(
            async () =>
              (await (await fetch(`${s.url}/api/v1/apps/shop/logs`, { headers: auth(s) })).text()).includes(
                " 413 ",
              ),
            10_000,
            "the 413 in the app's log",
          );
        },
      );
    });

    describe("deploys", () => {
      rootTest(
        "a redeploy switches without a failed request (a client loop while the old instance stops)",
        async () => {
          if (!s.paas.db.findApp("flip")) await createApp(s, "flip");
          expect((await deployDir(s, "flip", appCopy("node-hello"))).deploy?.status).toBe("succeeded");
          let stop = false;
          const failures: string[] = [];
          let ok = 0;
          const loop = (async () => {
            while (!stop) {
              try {
                const r = await fetch(`${s.url}/`, { headers: { host: "flip.localhost" } });
                const text = await r.text();
                if (r.status === 200 && text.includes("hello from node web")) ok++;
                else failures.push(`${r.status} ${text.slice(0, 80)}`);
              } catch (e) {
                failures.push((e as Error).message);
              }
            }
          })();
          for (let i = 0; i < 2; i++) {
            const dep = await deployDir(s, "flip", appCopy("node-hello", { [`v${i}.txt`]: `${i}\n` }));
            expect(dep.deploy?.status).toBe("succeeded");
            expect(dep.log).toContain("Stopping v");
          }
          await Bun.sleep(300);
          stop = true;
          await loop;
          expect(failures).toEqual([]);
          expect(ok).toBeGreaterThan(20);
        },
        120_000,
      );

      rootTest(
        "a jailed app sent more requests at once than its bound: all answered, never more in flight than the bound",
        async () => {
          if (!s.paas.db.findApp("peak")) await createApp(s, "peak");
          const counting = `let busy = 0, peak = 0;
require("http")
  .createServer((req, res) => {
    if (req.url === "/peak") return res.end(String(peak));
    busy++;
    peak = Math.max(peak, busy);
    setTimeout(() => {
      busy--;
      res.end("ok\\n");
    }, 50);
  })
  .listen(Number(process.env.PORT), "0.0.0.0");
`;
          const dep = await deployDir(s, "peak", appCopy("node-hello", { "server.js": counting }));
          expect(dep.deploy?.status, dep.log).toBe("succeeded");
          const taken = s.nginx?.overflow.taken ?? 0;
          const statuses = await Promise.all(
            Array.from({ length: 250 }, () =>
              fetch(`${s.url}/`, { headers: { host: "peak.localhost" } }).then((r) => r.status),
            ),
          );
          expect(statuses).toEqual(new Array(250).fill(200));
          const peak = Number(
            await (await fetch(`${s.url}/peak`, { headers: { host: "peak.localhost" } })).text(),
          );
          // The built-in edge: 32 over its two workers. nginx: 32 per worker, and lj serve's
          // router behind them (the overflow) as many again.
          expect(peak).toBeLessThanOrEqual(edge === "nginx" ? 3 * 32 : 32);
          expect(peak).toBeGreaterThan(1);
          if (s.nginx) expect(s.nginx.overflow.taken).toBeGreaterThan(taken);
        },
        120_000,
      );
    });
  });

// Churn --------------------------------------------------------------------------------------------

describe("connection churn", () => {
  const servers: { stop(x: boolean): void }[] = [];
  afterAll(() => {
    for (const x of servers) x.stop(true);
  });

  // wrk comes from the root bootstrap (scripts/bootstrap.sh), as the other root-only tools do.
  rootTest(
    "1,000 concurrent connections through the router: no 5xx, upstream sockets reused, another app stays fast",
    async () => {
      const node = (port: number) =>
        Bun.spawn(
          ["node", "-e", `require("http").createServer((q,s)=>s.end("ok\\n")).listen(${port},"127.0.0.1")`],
          { stdout: "ignore", stderr: "ignore" },
        );
      const [pa, pb] = [free(), free()];
      const apps = [node(pa), node(pb)];
      try {
        await waitPort(pa);
        await waitPort(pb);
        const router = new Router({
          domain: "churn.test",
          targets: (app) =>
            app === "hot"
              ? [{ address: "127.0.0.1", port: pa }]
              : app === "calm"
                ? [{ address: "127.0.0.1", port: pb }]
                : null,
        });
        const edge = Bun.serve<WsData>({
          hostname: "127.0.0.1",
          port: 0,
          fetch: (req, srv) =>
            router.fetch(req, srv, router.appFor(req.headers.get("host"))!) as Promise<Response>,
          websocket: router.websocket,
        });
        servers.push(edge);
        const wrk = Bun.spawn(
          ["wrk", "-t2", "-c1000", "-d6s", "-H", "Host: hot.churn.test", `http://127.0.0.1:${edge.port}/`],
          { stdout: "pipe", stderr: "pipe" },
        );
        // While hot is hammered, calm's requests one after another.
        await Bun.sleep(1500);
        const times: number[] = [];
        for (let i = 0; i < 40; i++) {
          const t = performance.now();
          const r = await fetch(`http://127.0.0.1:${edge.port}/`, { headers: { host: "calm.churn.test" } });
          expect(r.status).toBe(200);
          await r.text();
          times.push(performance.now() - t);
        }
        const out = await new Response(wrk.stdout).text();
        const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
        expect(total).toBeGreaterThan(1000);
        expect(out).not.toContain("Non-2xx");
        times.sort((a, b) => a - b);
        const p50 = times[Math.floor(times.length / 2)]!;
        expect(p50).toBeLessThan(10 * (process.env.CI ? 3 : 1));
        // Upstream connections are reused: far fewer sockets left in TIME_WAIT toward the app
        // than requests made.
        const ss = Bun.spawnSync(["ss", "-Htan", "state", "time-wait", "dst", `127.0.0.1:${pa}`]);
        const tw = ss.stdout.toString().split("\n").filter(Boolean).length;
        console.log(
          `churn: ${total} requests at c=1000, calm p50 ${p50.toFixed(1)} ms, ${tw} upstream sockets in TIME_WAIT`,
        );
        expect(tw).toBeLessThan(total / 10);
      } finally {
        for (const p of apps) p.kill();
      }
    },
    60_000,
  );
});
