/**
 * `lj serve`: the edge (HTTP and HTTPS listeners in front of the router) and the API and git
 * behind it. A request whose Host is APP.<domain> or an app's custom domain goes to the router;
 * everything else to the API. With edge workers (edge/workers.ts) the listeners run in worker
 * processes, one per core, fed from here; without, in this process. On start the PaaS brings
 * back every app's desired state.
 */

import { join } from "node:path";
import type { Server, ServerWebSocket, WebSocketHandler } from "bun";
import { LjError } from "../errors.ts";
import { holdSubnet, netConfig } from "../jail/net.ts";
import { Domains } from "../paas/domains.ts";
import { Paas, type PaasOptions } from "../paas/paas.ts";
import { paths } from "../store/paths.ts";
import { createApi } from "./api.ts";
import { loadOrCreateToken } from "./auth.ts";
import { CertManager, LETS_ENCRYPT } from "./edge/certs.ts";
import { Edge } from "./edge/edge.ts";
import { TrustedProxies, trustedProxiesFromConfig } from "./edge/forwarding.ts";
import { findNginx, NginxEdge } from "./edge/nginx.ts";
import { DEFAULT_MAX_BODY_MB, Router, type WsData } from "./edge/router.ts";
import { type EdgeScheduling, edgeScheduling } from "./edge/scheduling.ts";
import { EdgeWorkers } from "./edge/workers.ts";
import { acquireServeLock } from "./lock.ts";
import { type RunWsData, runWebsocket } from "./run-socket.ts";

export interface ServeOptions extends PaasOptions {
  hostname?: string;
  port?: number;
  /** Apps answer at APP.<domain>; default "localhost". */
  domain?: string;
  maxUploadBytes?: number;
  /**
   * Peers (CIDRs) whose X-Forwarded-For / Forwarded chain the router keeps and appends to
   * (`lj serve --trusted-proxy`); when absent, LJ_TRUSTED_PROXIES or [router] trusted_proxies
   * in config.toml; none by default.
   */
  trustedProxies?: string[];
  /** Largest request body passed to an app (bytes); default DEFAULT_MAX_BODY_MB. */
  maxBodyBytes?: number;
  /** The HTTPS listener's port (0 picks one); none when undefined. */
  httpsPort?: number;
  /** ACME account contact; certificates are obtained only when acme is set. */
  acme?: { email?: string; directory?: string; ca?: string };
  /** How often certificates are checked for renewal (ms); default 6 hours. */
  certCheckEveryMs?: number;
  /**
   * Edge worker processes serving the listeners (`lj serve --edge-workers`, one per core by
   * default there); 0, the default here, serves them in this process.
   */
  edgeWorkers?: number;
  /**
   * What serves HTTP and HTTPS (`lj serve --edge`): "nginx" (lj serve's own nginx master,
   * configured from its tables: edge/nginx.ts), "builtin" (Bun listeners: edge/edge.ts, in
   * `edgeWorkers` processes), "auto" (nginx when its binary is found). Default "auto".
   */
  edge?: EdgeKind;
  /**
   * How the edge's worker processes are scheduled (`lj serve --edge-nice`, `--edge-policy`):
   * edge/scheduling.ts; its defaults when unset.
   */
  edgeScheduling?: Partial<EdgeScheduling>;
}

export type EdgeKind = "nginx" | "builtin" | "auto";

/** The edge `kind` means here: "auto" is nginx when its binary is found. */
export function resolveEdge(kind: EdgeKind = "auto"): { kind: "nginx"; nginx: string } | { kind: "builtin" } {
  if (kind === "builtin") return { kind };
  const nginx = findNginx();
  if (nginx) return { kind: "nginx", nginx };
  if (kind === "auto") return { kind: "builtin" };
  throw new LjError("usage", "no-nginx", "--edge nginx: no nginx binary found on PATH", {
    hint: "install nginx (Debian: apt-get install nginx-light or nginx) or use --edge builtin",
  });
}

export interface RunningServer {
  url: string;
  /** The address the server really listens on (`0.0.0.0` / `::` mean every address). */
  listen: { hostname: string; port: number };
  port: number;
  token: string;
  tokenCreated: boolean;
  domain: string;
  /** The trusted proxies in effect (CIDRs as given). */
  trustedProxies: readonly string[];
  /** The HTTPS port while the HTTPS listener runs (it needs a certificate). */
  httpsPort(): number | undefined;
  domains: Domains;
  certs: CertManager;
  paas: Paas;
  router: Router;
  /** The edge's worker processes (none when the edge runs in this process or is nginx). */
  edgeWorkers: EdgeWorkers | null;
  /** lj serve's nginx (when the edge is nginx). */
  nginx: NginxEdge | null;
  /** Writes the access-log lines buffered so far (the workers' too). */
  flushAccessLog(): Promise<void>;
  /** The listener the API is served on (the edge's, or the workers' private one behind them). */
  server: Server<WsData | RunWsData>;
  stop(): Promise<void>;
}

type AnyWs = ServerWebSocket<WsData | RunWsData>;

/** The router's bridged upgrades and the API's interactive runs share the server's handlers. */
function websockets(router: Router) {
  const r = router.websocket;
  const isRun = (ws: AnyWs): ws is ServerWebSocket<RunWsData> => ws.data.kind === "run";
  return {
    open: (ws: AnyWs) => (isRun(ws) ? runWebsocket.open(ws) : r.open(ws as ServerWebSocket<WsData>)),
    message: (ws: AnyWs, m: string | Buffer) =>
      isRun(ws) ? runWebsocket.message(ws, m) : r.message(ws as ServerWebSocket<WsData>, m),
    close: (ws: AnyWs, code: number, reason: string) =>
      isRun(ws) ? runWebsocket.close(ws) : r.close(ws as ServerWebSocket<WsData>, code, reason),
  };
}

export async function startServer(o: ServeOptions = {}): Promise<RunningServer> {
  // One server per state root (src/server/lock.ts), taken before anything else starts.
  const unlock = acquireServeLock();
  try {
    return await startLocked(o, unlock);
  } catch (e) {
    unlock();
    throw e;
  }
}

async function startLocked(o: ServeOptions, unlock: () => void): Promise<RunningServer> {
  // Checked before anything starts: a bad CIDR is a usage error, not a half-started server.
  const trustedProxies = o.trustedProxies ? new TrustedProxies(o.trustedProxies) : trustedProxiesFromConfig();
  // Apps get private addresses: a live root whose jail subnet overlaps ours refuses us here.
  const unholdNet = process.platform === "linux" ? holdSubnet(netConfig()) : () => {};
  try {
    return await serve(o, unholdNet, trustedProxies, unlock);
  } catch (e) {
    unholdNet();
    throw e;
  }
}

async function serve(
  o: ServeOptions,
  unholdNet: () => void,
  trustedProxies: TrustedProxies,
  unlock: () => void,
): Promise<RunningServer> {
  const { token, created } = loadOrCreateToken();
  const domain = o.domain ?? "localhost";
  const paas = new Paas(o);
  const log = (line: string) => process.stderr.write(`${line}\n`);
  let edge: Edge | null = null;
  let workers: EdgeWorkers | null = null;
  let nginx: NginxEdge | null = null;
  const domains = new Domains(paas.db, domain, () => {
    edge?.reloadTls();
    workers?.publish();
    nginx?.publish();
    void certs.reconcile();
  });
  const certs = new CertManager({
    dir: join(paths.paas(), "certs"),
    wanted: () => domains.names(),
    acme: o.acme ? { directory: LETS_ENCRYPT, ...o.acme } : undefined,
    log,
    onChange: () => {
      edge?.reloadTls();
      workers?.publish();
      nginx?.publish();
    },
    checkEveryMs: o.certCheckEveryMs,
  });
  const appLog = (app: string, line: string) => paas.logs.write(app, "router", line);
  const router = new Router({
    domain,
    domains,
    maxBodyBytes: o.maxBodyBytes,
    targets: (app) => paas.formation.targets(app),
    accessLog: join(paths.paasLogs(), "access.log"),
    appLog,
    trustedProxies,
  });
  paas.onChange(() => {
    router.invalidate();
    workers?.publish();
    nginx?.publish();
  });
  paas.edgeSynced = () => nginx?.synced() ?? workers?.synced() ?? Promise.resolve();
  let selfUrl = "";
  const api = createApi({
    paas,
    services: paas.services,
    token,
    domain,
    domains,
    certs,
    selfUrl: () => selfUrl,
    maxUploadBytes: o.maxUploadBytes,
  });
  const maxBody = o.maxBodyBytes ?? DEFAULT_MAX_BODY_MB * 1024 * 1024;
  const shared = {
    hostname: o.hostname ?? "127.0.0.1",
    port: o.port ?? 0,
    httpsPort: o.httpsPort,
    other: (req: Request, srv: Server<WsData>) => api.fetch(req, { server: srv }),
    // `lj run` sessions share the listener with the router's WebSocket bridges.
    websocket: websockets(router) as unknown as WebSocketHandler<WsData>,
    // Bun's own cap answers without a body or a log line: ours (the upload route's, the
    // router's) sit below it and say why.
    maxRequestBodySize: Math.max(o.maxUploadBytes ?? 256 * 1024 * 1024, maxBody) + 64 * 1024 * 1024,
  };
  let listen: { hostname: string; port: number };
  let server: Server<WsData>;
  const chosen = resolveEdge(o.edge);
  const scheduling = edgeScheduling(o.edgeScheduling);
  const routes = () =>
    Object.fromEntries(paas.db.apps().map((a) => [a.name, paas.formation.targets(a.name) ?? []]));
  const domainTable = () => Object.fromEntries(domains.list().map((d) => [d.domain, d.app]));
  if (chosen.kind === "nginx") {
    nginx = await NginxEdge.start({
      ...shared,
      nginx: chosen.nginx,
      prefix: join(paths.root(), "edge", "nginx"),
      domain,
      trustedProxies: trustedProxies.list,
      maxBodyBytes: maxBody,
      workers: o.edgeWorkers ? String(o.edgeWorkers) : "auto",
      scheduling,
      routes,
      domains: domainTable,
      certs,
      accessLog: join(paths.paasLogs(), "access.log"),
      appLog,
      log,
    });
    server = nginx.server;
    listen = { hostname: shared.hostname, port: nginx.port };
  } else if (o.edgeWorkers) {
    workers = await EdgeWorkers.start({
      ...shared,
      count: o.edgeWorkers,
      scheduling,
      domain,
      trustedProxies: trustedProxies.list,
      maxBodyBytes: o.maxBodyBytes,
      routes,
      domains: domainTable,
      certs,
      access: (text) => router.record(text),
      appLog,
      log,
    });
    server = workers.server;
    listen = { hostname: shared.hostname, port: workers.port };
  } else {
    edge = new Edge({ ...shared, router, certs });
    server = edge.http;
    listen = { hostname: server.hostname ?? shared.hostname, port: server.port! };
  }
  const host = listen.hostname === "0.0.0.0" || listen.hostname === "::" ? "127.0.0.1" : listen.hostname;
  selfUrl = `http://${host}:${listen.port}`;
  try {
    await paas.prepare();
    await paas.recover();
  } catch (e) {
    edge?.stop();
    await workers?.stop();
    await nginx?.stop();
    throw e;
  }
  certs.start();
  const running = edge;
  const edgeWorkers = workers;
  const nginxEdge = nginx;
  return {
    url: selfUrl,
    listen,
    port: listen.port,
    token,
    tokenCreated: created,
    domain,
    trustedProxies: trustedProxies.list,
    httpsPort: () => running?.httpsPort ?? edgeWorkers?.httpsPort ?? nginxEdge?.httpsPort,
    domains,
    certs,
    paas,
    router,
    edgeWorkers,
    nginx: nginxEdge,
    server,
    async flushAccessLog() {
      await edgeWorkers?.flush();
      await nginxEdge?.flush();
      router.flush();
    },
    async stop() {
      await certs.stop();
      running?.stop();
      await edgeWorkers?.stop();
      await nginxEdge?.stop();
      router.flush();
      router.close();
      await paas.close();
      unholdNet();
      unlock();
    },
  };
}
