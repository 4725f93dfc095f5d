/**
 * `lj serve`: one Bun.serve for the API, git and the router. A request whose Host is
 * APP.<domain> goes to the router; everything else to the API. On start the PaaS brings back
 * every app's desired state.
 */

import { join } from "node:path";
import type { Server } from "bun";
import type { ExtractLimits } from "../build/archive.ts";
import { TrustedProxies, trustedProxiesFromConfig } from "../paas/forwarding.ts";
import { type BuildFn, Paas, type PaasOptions } from "../paas/paas.ts";
import { Router, type WsData } from "../paas/router.ts";
import { ServiceManager } from "../paas/services.ts";
import { paths } from "../store/paths.ts";
import { createApi } from "./api.ts";
import { loadOrCreateToken } from "./auth.ts";
import { acquireServeLock } from "./lock.ts";

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
  /** The address the server really listens on (`0.0.0.0` / `::` mean every address). */
  listen: { hostname: string; port: number };
  port: number;
  token: string;
  tokenCreated: boolean;
  domain: string;
  /** The trusted proxies in effect (CIDRs as given). */
  trustedProxies: readonly string[];
  paas: Paas;
  router: Router;
  server: Server<WsData>;
  stop(): Promise<void>;
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
  const server = Bun.serve<WsData>({
    hostname: o.hostname ?? "127.0.0.1",
    port: o.port ?? 0,
    // Bun's own cap answers without a body: ours (in the upload route) comes first and says why.
    maxRequestBodySize: (o.maxUploadBytes ?? 256 * 1024 * 1024) + 64 * 1024 * 1024,
    idleTimeout: 120,
    fetch(req, srv) {
      const app = router.appFor(req.headers.get("host"));
      if (app) return router.fetch(req, srv, app);
      return api.fetch(req, { server: srv });
    },
    websocket: router.websocket,
  });
  const host = server.hostname === "0.0.0.0" || server.hostname === "::" ? "127.0.0.1" : server.hostname;
  selfUrl = `http://${host}:${server.port}`;
  await paas.prepare();
  await services.recover();
  await paas.recover();
  return {
    url: selfUrl,
    listen: { hostname: server.hostname ?? o.hostname ?? "127.0.0.1", port: server.port! },
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
      unlock();
    },
  };
}
