/**
 * An edge worker process (started by workers.ts, never by hand): one Edge and one Router on
 * the shared ports, fed by lj serve over IPC. It holds copies of the routes, the custom domains
 * and the certificates, and sends back what only lj serve may do: access-log lines, app-log
 * lines, and every request that is not for an app (the API, git, ACME challenges), which it
 * forwards to lj serve's private loopback listener.
 */
import type { Server } from "bun";
import { Edge, type EdgeCerts } from "./edge.ts";
import { TrustedProxies } from "./forwarding.ts";
import { HOP, Router, type Target, type WsData } from "./router.ts";
import type { FromWorker, ToWorker, WorkerConfig } from "./workers.ts";

const send = (m: FromWorker) => process.send?.(m);

let routes = new Map<string, Target[]>();
let domains = new Map<string, string>();
const certs = new Map<string, { cert: string; key: string; notAfter: number }>();
const copy: EdgeCerts = {
  get: (name) => {
    const c = certs.get(name);
    return c && c.notAfter > Date.now() ? c : null;
  },
  active: () => [...certs].filter(([, c]) => c.notAfter > Date.now()),
  challenges: new Map(),
};

let edge: Edge | null = null;
let router: Router | null = null;

function pathOf(url: string): string {
  const slash = url.indexOf("/", url.indexOf("//") + 2);
  return slash < 0 ? "/" : url.slice(slash);
}

const failed = (text: string) =>
  new Response(`lj serve did not answer: ${text}\n`, {
    status: 502,
    headers: { "content-type": "text/plain" },
  });

/** Not for an app: passed to lj serve as it came, bodies streamed both ways. */
function forwarder(port: number) {
  return async (req: Request, srv: Server<WsData>): Promise<Response> => {
    // lj serve sets each route's own limit (deploy logs follow for as long as a deploy runs).
    srv.timeout(req, 0);
    const path = pathOf(req.url);
    const headers = req.headers;
    if (headers.get("upgrade")?.toLowerCase() === "websocket") {
      const wsHeaders: Record<string, string> = {};
      headers.forEach((v, k) => {
        if (!k.startsWith("sec-websocket") && !HOP.includes(k)) wsHeaders[k] = v;
      });
      const protocols = (headers.get("sec-websocket-protocol") ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      const data: WsData = {
        kind: "router-ws",
        url: `ws://127.0.0.1:${port}${path}`,
        headers: wsHeaders,
        protocols,
        queue: [],
      };
      return srv.upgrade(req, { data })
        ? (undefined as unknown as Response)
        : new Response("WebSocket upgrade failed\n", { status: 400 });
    }
    const host = headers.get("host");
    for (const h of HOP) if (headers.has(h)) headers.delete(h);
    if (host) headers.set("host", host);
    try {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        method: req.method,
        headers,
        body: req.method === "GET" || req.method === "HEAD" ? undefined : req.body,
        redirect: "manual",
        decompress: false,
      } as RequestInit);
      for (const h of HOP) if (res.headers.has(h)) res.headers.delete(h);
      return res;
    } catch (e) {
      return failed((e as Error).message);
    }
  };
}

function start(c: WorkerConfig): void {
  router = new Router({
    domain: c.domain,
    targets: (app) => routes.get(app) ?? null,
    domains: { appFor: (h) => domains.get(h.endsWith(".") ? h.slice(0, -1) : h) ?? null },
    trustedProxies: new TrustedProxies(c.trustedProxies),
    perInstance: c.perInstance,
    maxBodyBytes: c.maxBodyBytes,
    appLogAll: c.appLogAll,
    appLog: (app, line) => send({ t: "app-log", app, line }),
    accessSink: (text, lines) => send({ t: "access", text, lines }),
    // Small batches often: serialising half a second of a busy edge's lines at once would hold
    // up the requests behind it.
    flushEveryMs: 50,
  });
  edge = new Edge({
    hostname: c.hostname,
    port: c.port,
    httpsPort: c.httpsPort,
    shared: true,
    router,
    certs: copy,
    other: forwarder(c.otherPort),
    maxRequestBodySize: c.maxRequestBodySize,
  });
  send({ t: "ready", port: edge.http.port!, httpsPort: edge.httpsPort ?? null });
}

process.on("message", (m: ToWorker) => {
  try {
    switch (m.t) {
      case "start":
        routes = new Map(Object.entries(m.routes));
        domains = new Map(Object.entries(m.domains));
        for (const [name, c] of m.certs) certs.set(name, c);
        start(m.config);
        break;
      case "routes":
        routes = new Map(Object.entries(m.routes));
        domains = new Map(Object.entries(m.domains));
        router?.invalidate();
        send({ t: "applied", seq: m.seq, httpsPort: edge?.httpsPort ?? null });
        break;
      case "certs":
        certs.clear();
        for (const [name, c] of m.certs) certs.set(name, c);
        edge?.reloadTls();
        send({ t: "applied", seq: m.seq, httpsPort: edge?.httpsPort ?? null });
        break;
      case "flush":
        router?.flush();
        send({ t: "applied", seq: m.seq, httpsPort: edge?.httpsPort ?? null });
        break;
      case "stop":
        // The last log lines go first: lj serve ends this process when "stopped" arrives.
        edge?.stop();
        router?.flush();
        send({ t: "stopped" });
        break;
    }
  } catch (e) {
    send({ t: "failed", message: (e as Error).message });
    process.exit(1);
  }
});

// A worker never outlives its lj serve.
process.on("disconnect", () => process.exit(0));
