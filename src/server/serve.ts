/**
 * `lj serve`: one Bun.serve for the API, git and the router. A request whose Host is
 * APP.<domain> goes to the router; everything else to the API. On start the PaaS brings back
 * every app's desired state.
 */

import { join } from "node:path";
import type { Server, ServerWebSocket, WebSocketHandler } from "bun";
import { holdSubnet, netConfig } from "../jail/net.ts";
import { Domains } from "../paas/domains.ts";
import { Paas, type PaasOptions } from "../paas/paas.ts";
import { paths } from "../store/paths.ts";
import { createApi } from "./api.ts";
import { loadOrCreateToken } from "./auth.ts";
import { CertManager, LETS_ENCRYPT } from "./edge/certs.ts";
import { Edge } from "./edge/edge.ts";
import { TrustedProxies, trustedProxiesFromConfig } from "./edge/forwarding.ts";
import { DEFAULT_MAX_BODY_MB, Router, type WsData } from "./edge/router.ts";
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
  const domains = new Domains(paas.db, domain, () => {
    edge?.reloadTls();
    void certs.reconcile();
  });
  const certs = new CertManager({
    dir: join(paths.paas(), "certs"),
    wanted: () => domains.names(),
    acme: o.acme ? { directory: LETS_ENCRYPT, ...o.acme } : undefined,
    log,
    onChange: () => edge?.reloadTls(),
    checkEveryMs: o.certCheckEveryMs,
  });
  const router = new Router({
    domain,
    domains,
    maxBodyBytes: o.maxBodyBytes,
    targets: (app) => paas.formation.targets(app),
    accessLog: join(paths.paasLogs(), "access.log"),
    appLog: (app, line) => paas.logs.write(app, "router", line),
    trustedProxies,
  });
  paas.onChange(() => router.invalidate());
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
  edge = new Edge({
    hostname: o.hostname ?? "127.0.0.1",
    port: o.port ?? 0,
    httpsPort: o.httpsPort,
    router,
    certs,
    other: (req, srv) => api.fetch(req, { server: srv }),
    // `lj run` sessions share the listener with the router's WebSocket bridges.
    websocket: websockets(router) as unknown as WebSocketHandler<WsData>,
    // Bun's own cap answers without a body or a log line: ours (the upload route's, the
    // router's) sit below it and say why.
    maxRequestBodySize: Math.max(o.maxUploadBytes ?? 256 * 1024 * 1024, maxBody) + 64 * 1024 * 1024,
  });
  const server = edge.http;
  const host = server.hostname === "0.0.0.0" || server.hostname === "::" ? "127.0.0.1" : server.hostname;
  selfUrl = `http://${host}:${server.port}`;
  await paas.prepare();
  await paas.recover();
  certs.start();
  const running = edge;
  return {
    url: selfUrl,
    listen: { hostname: server.hostname ?? o.hostname ?? "127.0.0.1", port: server.port! },
    port: server.port!,
    token,
    tokenCreated: created,
    domain,
    trustedProxies: trustedProxies.list,
    httpsPort: () => running.httpsPort,
    domains,
    certs,
    paas,
    router,
    server,
    async stop() {
      await certs.stop();
      running.stop();
      router.flush();
      await paas.close();
      unholdNet();
      unlock();
    },
  };
}
