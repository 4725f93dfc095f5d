/**
 * `lj serve`: one Bun.serve for the API, git and the router. A request whose Host is
 * APP.<domain> goes to the router; everything else to the API. On start the PaaS brings back
 * every app's desired state.
 */

import { join } from "node:path";
import type { Server, ServerWebSocket } from "bun";
import type { ExtractLimits } from "../build/archive.ts";
import { TrustedProxies, trustedProxiesFromConfig } from "../paas/forwarding.ts";
import { type BuildFn, Paas, type PaasOptions } from "../paas/paas.ts";
import { Router, type WsData } from "../paas/router.ts";
import { ServiceManager } from "../paas/services.ts";
import { paths } from "../store/paths.ts";
import { createApi } from "./api.ts";
import { loadOrCreateToken } from "./auth.ts";
import { type RunWsData, runWebsocket } from "./run-socket.ts";

export interface ServeOptions extends PaasOptions {
  hostname?: string;
  port?: number;
  /** Apps answer at APP.<domain>; default "localhost". */
  domain?: string;
  maxUploadBytes?: number;
  archiveLimits?: Partial<ExtractLimits>;
  build?: BuildFn;
  /**
   * Peers (CIDRs) whose X-Forwarded-For / Forwarded chain the router keeps and appends to
   * (`lj serve --trusted-proxy`); when absent, LJ_TRUSTED_PROXIES or [router] trusted_proxies
   * in config.toml; none by default.
   */
  trustedProxies?: string[];
}

export interface RunningServer {
  url: string;
  port: number;
  token: string;
  tokenCreated: boolean;
  domain: string;
  /** The trusted proxies in effect (CIDRs as given). */
  trustedProxies: readonly string[];
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
  // Checked before anything starts: a bad CIDR is a usage error, not a half-started server.
  const trustedProxies = o.trustedProxies ? new TrustedProxies(o.trustedProxies) : trustedProxiesFromConfig();
  const { token, created } = loadOrCreateToken();
  const domain = o.domain ?? "localhost";
  const paas = new Paas(o);
  const services = new ServiceManager(paas);
  paas.services = services;
  const router = new Router({
    domain,
    targets: (app) => paas.targets(app),
    accessLog: join(paths.paasLogs(), "access.log"),
    appLog: (app, line) => paas.logs.write(app, "router", line),
    trustedProxies,
  });
  paas.onChange = () => router.invalidate();
  let selfUrl = "";
  const api = createApi({
    paas,
    services,
    token,
    domain,
    selfUrl: () => selfUrl,
    maxUploadBytes: o.maxUploadBytes,
    archiveLimits: o.archiveLimits,
  });
  const server = Bun.serve<WsData | RunWsData>({
    hostname: o.hostname ?? "127.0.0.1",
    port: o.port ?? 0,
    // Bun's own cap answers without a body: ours (in the upload route) comes first and says why.
    maxRequestBodySize: (o.maxUploadBytes ?? 256 * 1024 * 1024) + 64 * 1024 * 1024,
    idleTimeout: 120,
    fetch(req, srv) {
      const app = router.appFor(req.headers.get("host"));
      if (app) return router.fetch(req, srv as Server<WsData>, app);
      return api.fetch(req, { server: srv });
    },
    websocket: websockets(router),
  });
  const host = server.hostname === "0.0.0.0" || server.hostname === "::" ? "127.0.0.1" : server.hostname;
  selfUrl = `http://${host}:${server.port}`;
  await paas.prepare();
  await services.recover();
  await paas.recover();
  return {
    url: selfUrl,
    port: server.port!,
    token,
    tokenCreated: created,
    domain,
    trustedProxies: trustedProxies.list,
    paas,
    router,
    server,
    async stop() {
      server.stop(true);
      router.flush();
      await paas.close();
      await services.close();
    },
  };
}
