/**
 * The JSON API under /api/v1 (docs/api.md documents every route) and the git endpoint under
 * /git. HTTP only: each resource is a sub-app in src/server/api/, and the PaaS (src/paas/)
 * does the work. Every route but health needs the token; every error is
 * {error:{code,message,hint}}.
 */
import { type Context, Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { isLjError, LjError } from "../errors.ts";
import { NAME_PATTERN } from "../store/names.ts";
import { appRoutes } from "./api/apps.ts";
import { artefactRoutes } from "./api/artefacts.ts";
import { configRoutes } from "./api/config.ts";
import { deployRoutes } from "./api/deploys.ts";
import { domainRoutes } from "./api/domains.ts";
import { type ApiOptions, type Env, noIdleTimeout } from "./api/http.ts";
import { logRoutes } from "./api/logs.ts";
import { processRoutes } from "./api/processes.ts";
import { releaseRoutes } from "./api/releases.ts";
import { serviceRoutes } from "./api/services.ts";
import { presentedToken, tokenMatches } from "./auth.ts";
import { gitHttpBackend } from "./git.ts";

export type { ApiOptions } from "./api/http.ts";

const GIT_REPO = new RegExp(`^(${NAME_PATTERN})\\.git$`);

export function createApi(o: ApiOptions): Hono<Env> {
  const app = new Hono<Env>();

  app.onError((err, c) => {
    if (isLjError(err)) return c.json({ error: err.toJSON() }, err.httpStatus as 400);
    if (err instanceof HTTPException) {
      const code = err.status === 413 ? "body-too-large" : "http-error";
      return c.json({ error: { code, message: err.message || `HTTP ${err.status}` } }, err.status);
    }
    console.error(err);
    return c.json({ error: { code: "internal", message: `internal error: ${(err as Error).message}` } }, 500);
  });
  app.notFound((c) =>
    c.json(
      {
        error: {
          code: "no-route",
          message: `no route ${c.req.method} ${c.req.path}`,
          hint: "see docs/api.md",
        },
      },
      404,
    ),
  );

  const unauthorized = (c: Context<Env>, basic: boolean) => {
    const presented = presentedToken(c.req.header("authorization"));
    const e = new LjError(
      "permission",
      presented === null ? "auth-required" : "bad-token",
      presented === null ? "this endpoint needs the API token" : "the API token is wrong",
      {
        httpStatus: 401,
        hint: "pass Authorization: Bearer TOKEN (lj reads it from LJ_TOKEN or ~/.config/lightjail/client.json)",
      },
    );
    c.header("www-authenticate", basic ? 'Basic realm="lightjail"' : 'Bearer realm="lightjail"');
    return c.json({ error: e.toJSON() }, 401);
  };

  app.route("/node/v1", artefactRoutes(o));
  app.get("/api/v1/health", (c) => c.json({ ok: true }));
  app.use("/api/v1/*", async (c, next) => {
    if (!tokenMatches(presentedToken(c.req.header("authorization")), o.token)) return unauthorized(c, false);
    await next();
  });
  for (const routes of [
    appRoutes,
    domainRoutes,
    deployRoutes,
    configRoutes,
    processRoutes,
    logRoutes,
    releaseRoutes,
    serviceRoutes,
  ]) {
    app.route("/api/v1", routes(o));
  }

  // git smart HTTP: token as the Basic-auth password.
  app.all("/git/:repo/*", async (c) => {
    if (!tokenMatches(presentedToken(c.req.header("authorization")), o.token)) return unauthorized(c, true);
    const repo = c.req.param("repo");
    const m = GIT_REPO.exec(repo);
    if (!m) throw new LjError("not-found", "git-repo", `no repository ${repo}`, { hint: "use /git/APP.git" });
    const name = m[1]!;
    o.paas.db.app(name);
    noIdleTimeout(c);
    return gitHttpBackend({
      app: name,
      rest: c.req.path.slice(`/git/${repo}`.length),
      req: c.req.raw,
      remoteAddr: c.env?.server?.requestIP(c.req.raw)?.address ?? "127.0.0.1",
      hookUrl: o.selfUrl(),
      token: o.token,
    });
  });

  return app;
}
