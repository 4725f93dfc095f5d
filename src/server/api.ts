/**
 * The JSON API under /api/v1 (docs/api.md documents every route) and the git endpoint under
 * /git. Every route but health needs the token; every error is {error:{code,message,hint}}.
 */

import type { Server } from "bun";
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { isLjError, LjError } from "../errors.ts";
import type { Domains } from "../paas/domains.ts";
import type { FormationChange } from "../paas/formation.ts";
import { formatLogLine, type LogLine } from "../paas/logs.ts";
import type { Paas } from "../paas/paas.ts";
import type { ServiceManager } from "../paas/services.ts";
import { type ExtractLimits, extractTar } from "../store/archive.ts";
import { NAME_PATTERN } from "../store/names.ts";
import { presentedToken, tokenMatches } from "./auth.ts";
import type { CertManager } from "./edge/certs.ts";
import { gitHttpBackend } from "./git.ts";
import { upgradeRun } from "./run-socket.ts";

export interface ApiOptions {
  paas: Paas;
  services?: ServiceManager;
  token: string;
  /** How the git hook reaches this server (http://127.0.0.1:PORT). */
  selfUrl: () => string;
  domain: string;
  /** Largest compressed upload accepted (bytes). */
  maxUploadBytes?: number;
  /** Tighter archive limits than the app policy's defaults. */
  archiveLimits?: Partial<ExtractLimits>;
  /** Custom domains and their certificates (lj domains). */
  domains?: Domains;
  certs?: CertManager;
}

type Env = { Bindings: { server?: Server<unknown> } };

const JSON_LIMIT = 64 * 1024;
const textStream = { "content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff" };

function errorBody(e: LjError) {
  return { error: e.toJSON() };
}

/** Long-lived responses (deploy logs, follow) must not hit the server's idle timeout. */
function noIdleTimeout(c: Context<Env>): void {
  c.env?.server?.timeout?.(c.req.raw, 0);
}

/** Text frames pushed by callbacks (log lines, a process's output), read as they come. */
class FrameQueue implements AsyncIterable<string> {
  private frames: string[] = [];
  private wake: (() => void) | null = null;
  private ended = false;

  constructor(first: string[] = []) {
    this.frames.push(...first);
  }

  push(frame: string): void {
    this.frames.push(frame);
    this.wake?.();
  }

  /** No more frames: the reader finishes once it has the ones queued. */
  end(): void {
    this.ended = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<string> {
    for (;;) {
      while (this.frames.length) yield this.frames.shift()!;
      if (this.ended) return;
      await new Promise<void>((r) => {
        this.wake = r;
      });
      this.wake = null;
    }
  }
}

function streamOf(gen: AsyncIterable<string>, onCancel?: () => void): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  const it = gen[Symbol.asyncIterator]();
  return new ReadableStream({
    async pull(ctl) {
      const { value, done } = await it.next();
      if (done) ctl.close();
      else ctl.enqueue(enc.encode(value));
    },
    cancel() {
      onCancel?.();
      void it.return?.();
    },
  });
}

async function jsonBody<T>(c: Context<Env>): Promise<T> {
  try {
    return (await c.req.json()) as T;
  } catch {
    throw new LjError("usage", "bad-json", "the request body is not valid JSON");
  }
}

/** Counts the upload as it streams and stops it at the limit. */
function capped(body: ReadableStream<Uint8Array>, max: number): ReadableStream<Uint8Array> {
  let n = 0;
  return body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        n += chunk.length;
        if (n > max) {
          throw new LjError("invalid", "upload-too-large", `the upload exceeds ${max} bytes`, {
            httpStatus: 413,
            hint: "leave build artefacts and dependencies out (.gitignore), or raise --max-upload",
          });
        }
        ctl.enqueue(chunk);
      },
    }),
  );
}

export function createApi(o: ApiOptions): Hono<Env> {
  const { paas } = o;
  const maxUpload = o.maxUploadBytes ?? 256 * 1024 * 1024;
  const app = new Hono<Env>();

  app.onError((err, c) => {
    if (isLjError(err)) return c.json(errorBody(err), err.httpStatus as 400);
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
    return c.json(errorBody(e), 401);
  };

  app.get("/api/v1/health", (c) => c.json({ ok: true }));

  app.use("/api/v1/*", async (c, next) => {
    if (!tokenMatches(presentedToken(c.req.header("authorization")), o.token)) return unauthorized(c, false);
    await next();
  });
  const limitJson = bodyLimit({
    maxSize: JSON_LIMIT,
    onError: () => {
      throw new LjError("usage", "body-too-large", `request bodies are limited to ${JSON_LIMIT} bytes`, {
        httpStatus: 413,
      });
    },
  });
  app.use("/api/v1/*", async (c, next) => {
    if (c.req.method === "PUT" && c.req.path.endsWith("/source")) return next();
    return limitJson(c, next);
  });

  /** Where the router answers for an app: the domain, on the port this server listens on. */
  const appUrl = (name: string) => {
    const port = new URL(o.selfUrl()).port;
    return `http://${name}.${o.domain}${port && port !== "80" ? `:${port}` : ""}`;
  };

  // Apps
  app.get("/api/v1/apps", (c) => c.json({ apps: paas.db.apps() }));
  app.post("/api/v1/apps", async (c) => {
    const { name } = await jsonBody<{ name?: string }>(c);
    if (typeof name !== "string") throw new LjError("usage", "bad-request", 'body must be {"name": "APP"}');
    const a = paas.createApp(name);
    return c.json({ app: a, git: `${o.selfUrl()}/git/${name}.git`, url: appUrl(name) }, 201);
  });
  app.get("/api/v1/apps/:app", (c) => {
    const name = c.req.param("app");
    return c.json({
      app: paas.appInfo(name),
      url: appUrl(name),
      git: `${o.selfUrl()}/git/${name}.git`,
    });
  });
  app.delete("/api/v1/apps/:app", async (c) => {
    const name = c.req.param("app");
    for (const s of paas.db.linkedServices(name)) paas.db.unlink(s.name, name);
    await paas.destroyApp(name);
    o.domains?.refresh();
    return c.json({ deleted: name });
  });

  // Custom domains
  const domains = () => {
    if (!o.domains)
      throw new LjError("unavailable", "no-domains", "custom domains are not enabled on this server");
    return o.domains;
  };
  const domainInfo = (d: { domain: string; app: string; createdAt: string }) => {
    const cert = o.certs?.get(d.domain);
    return { ...d, certificate: cert ? { notAfter: new Date(cert.notAfter).toISOString() } : null };
  };
  app.get("/api/v1/apps/:app/domains", (c) => {
    paas.db.app(c.req.param("app"));
    return c.json({ domains: domains().list(c.req.param("app")).map(domainInfo) });
  });
  app.post("/api/v1/apps/:app/domains", async (c) => {
    const { domain } = await jsonBody<{ domain?: unknown }>(c);
    return c.json({ domain: domainInfo(domains().add(c.req.param("app"), domain)) }, 201);
  });
  app.delete("/api/v1/apps/:app/domains/:domain", (c) => {
    domains().remove(c.req.param("app"), c.req.param("domain"));
    return c.json({ deleted: c.req.param("domain") });
  });

  // Deploys
  app.put("/api/v1/apps/:app/source", async (c) => {
    const name = c.req.param("app");
    paas.db.app(name);
    const len = Number(c.req.header("content-length") ?? "0");
    if (len > maxUpload) {
      throw new LjError(
        "invalid",
        "upload-too-large",
        `the upload (${len} bytes) exceeds ${maxUpload} bytes`,
        {
          httpStatus: 413,
        },
      );
    }
    const body = c.req.raw.body;
    if (!body) throw new LjError("usage", "no-body", "send the tar or tar.gz archive as the request body");
    noIdleTimeout(c);
    const dir = paas.incomingDir();
    const source = c.req.query("source") ?? "tarball";
    const extracted = await extractTar(capped(body, maxUpload), dir, {
      policy: "app",
      limits: o.archiveLimits,
    });
    const run = paas.deploy(name, dir, source);
    run.log(
      `-----> Received ${extracted.entries} entries (${extracted.fileBytes} bytes, ${extracted.compression})`,
    );
    if (c.req.query("wait") === "json") {
      const row = await run.done;
      return c.json({ deploy: { ...row, log: run.lines } }, row.status === "succeeded" ? 200 : 422);
    }
    return new Response(
      streamOf(
        (async function* () {
          for await (const l of run.follow()) yield `${l}\n`;
        })(),
      ),
      { headers: { ...textStream, "x-deploy-id": String(run.id) } },
    );
  });
  app.get("/api/v1/apps/:app/deploys", (c) => c.json({ deploys: paas.db.deploys(c.req.param("app")) }));
  app.get("/api/v1/deploys/:id", (c) => c.json(paas.deployInfo(Number(c.req.param("id")))));
  app.get("/api/v1/deploys/:id/log", (c) => {
    const id = Number(c.req.param("id"));
    const run = paas.deployRun(id);
    if (!run || c.req.query("follow") !== "1") {
      return c.text(`${paas.deployInfo(id).log.join("\n")}\n`, 200, textStream);
    }
    noIdleTimeout(c);
    return new Response(
      streamOf(
        (async function* () {
          for await (const l of run.follow()) yield `${l}\n`;
        })(),
      ),
      { headers: textStream },
    );
  });

  // Config
  app.get("/api/v1/apps/:app/config", (c) => c.json({ config: paas.config(c.req.param("app")) }));
  app.patch("/api/v1/apps/:app/config", async (c) => {
    const changes = await jsonBody<Record<string, string | null>>(c);
    if (typeof changes !== "object" || changes === null || Array.isArray(changes)) {
      throw new LjError("usage", "bad-request", 'body must be {"KEY": "value" or null, ...}');
    }
    const r = await paas.setConfig(c.req.param("app"), changes);
    return c.json({ config: paas.config(c.req.param("app")), release: r.release });
  });

  // Processes
  app.get("/api/v1/apps/:app/ps", (c) => {
    const name = c.req.param("app");
    return c.json({ formation: paas.db.app(name).formation, processes: paas.ps(name) });
  });
  app.patch("/api/v1/apps/:app/formation", async (c) => {
    const body = await jsonBody<unknown>(c);
    if (typeof body !== "object" || body === null || Array.isArray(body))
      throw new LjError("usage", "bad-formation", 'the body must be an object like {"web": 2}');
    // Each value is checked by paas.scale (field, type and range) before anything is stored.
    const changes: Record<string, FormationChange> = {};
    for (const [k, v] of Object.entries(body)) changes[k] = typeof v === "number" ? { count: v } : v;
    const processes = await paas.scale(c.req.param("app"), changes);
    return c.json({ formation: paas.db.app(c.req.param("app")).formation, processes });
  });
  app.post("/api/v1/apps/:app/restart", async (c) =>
    c.json({ processes: await paas.restart(c.req.param("app")) }),
  );

  // Logs
  app.get("/api/v1/apps/:app/logs", (c) => {
    const name = c.req.param("app");
    paas.db.app(name);
    const n = Math.min(Number(c.req.query("lines") ?? "100") || 100, 2000);
    const json = c.req.query("format") === "json";
    const fmt = (l: LogLine) => (json ? `${JSON.stringify(l)}\n` : `${formatLogLine(l)}\n`);
    const past = paas.logs.tail(name, n).map(fmt);
    if (c.req.query("follow") !== "1") return c.text(past.join(""), 200, textStream);
    noIdleTimeout(c);
    const queue = new FrameQueue(past);
    const stop = paas.logs.follow(name, (l) => queue.push(fmt(l)));
    return new Response(streamOf(queue, stop), { headers: textStream });
  });

  // Releases
  app.get("/api/v1/apps/:app/releases", (c) => {
    const cur = paas.db.app(c.req.param("app")).currentRelease;
    const releases = paas.releases(c.req.param("app")).map(({ slug, ...r }) => ({
      ...r,
      current: r.version === cur,
      slug: {
        id: slug.id,
        sizeBytes: slug.sizeBytes,
        overlays: slug.overlays.map((x) => `${x.name}@${x.version}`),
      },
    }));
    return c.json({ releases });
  });
  app.post("/api/v1/apps/:app/rollback", async (c) => {
    const { version } = await jsonBody<{ version?: number | string }>(c);
    const v = typeof version === "string" ? Number(version.replace(/^v/, "")) : version;
    if (!v || !Number.isInteger(v)) throw new LjError("usage", "bad-version", 'body must be {"version": N}');
    const rel = await paas.rollback(c.req.param("app"), v);
    const { slug, ...r } = rel;
    return c.json({ release: { ...r, slug: { id: slug.id } } });
  });

  // One-off processes: NDJSON frames {"out":...} / {"err":...}, then {"exit":N,...}.
  app.post("/api/v1/apps/:app/run", async (c) => {
    const { command } = await jsonBody<{ command?: string }>(c);
    if (typeof command !== "string" || !command)
      throw new LjError("usage", "bad-request", 'body must be {"command": "..."}');
    noIdleTimeout(c);
    const jail = paas.runOnce(c.req.param("app"), command);
    const queue = new FrameQueue();
    const pump = async (s: ReadableStream<Uint8Array> | null, key: string) => {
      if (!s) return;
      const dec = new TextDecoder();
      for await (const chunk of s)
        queue.push(`${JSON.stringify({ [key]: dec.decode(chunk, { stream: true }) })}\n`);
    };
    void Promise.all([pump(jail.stdout, "out"), pump(jail.stderr, "err"), jail.exited]).then(([, , r]) => {
      queue.push(
        `${JSON.stringify({ exit: r.status, reason: r.reason, ...(r.error ? { error: r.error } : {}) })}\n`,
      );
      queue.end();
    });
    return new Response(
      streamOf(queue, () => jail.kill("SIGKILL")),
      { headers: { "content-type": "application/x-ndjson" } },
    );
  });

  // Interactive one-off processes: a WebSocket (run-socket.ts).
  app.get("/api/v1/apps/:app/run", (c) => {
    noIdleTimeout(c);
    return upgradeRun(paas, c.env?.server, c.req.raw, c.req.param("app"));
  });

  // Services
  const services = () => {
    if (!o.services)
      throw new LjError("unavailable", "no-services", "services are not enabled on this server");
    return o.services;
  };
  app.get("/api/v1/services", (c) => c.json({ services: services().list() }));
  app.post("/api/v1/services", async (c) => {
    const { type, name } = await jsonBody<{ type?: string; name?: string }>(c);
    if (typeof type !== "string" || typeof name !== "string") {
      throw new LjError("usage", "bad-request", 'body must be {"type": "postgres", "name": "NAME"}');
    }
    return c.json({ service: await services().create(type, name) }, 201);
  });
  app.get("/api/v1/services/:name", (c) => c.json({ service: services().info(c.req.param("name")) }));
  app.delete("/api/v1/services/:name", async (c) => {
    await services().destroy(c.req.param("name"), { force: c.req.query("force") === "1" });
    return c.json({ deleted: c.req.param("name") });
  });
  app.post("/api/v1/services/:name/links", async (c) => {
    const { app: target } = await jsonBody<{ app?: string }>(c);
    if (typeof target !== "string") throw new LjError("usage", "bad-request", 'body must be {"app": "APP"}');
    return c.json({ service: await services().link(c.req.param("name"), target) });
  });
  app.delete("/api/v1/services/:name/links/:app", async (c) =>
    c.json({ service: await services().unlink(c.req.param("name"), c.req.param("app")) }),
  );

  // git smart HTTP: token as the Basic-auth password.
  app.all("/git/:repo/*", async (c) => {
    if (!tokenMatches(presentedToken(c.req.header("authorization")), o.token)) return unauthorized(c, true);
    const repo = c.req.param("repo");
    const m = new RegExp(`^(${NAME_PATTERN})\\.git$`).exec(repo);
    if (!m) throw new LjError("not-found", "git-repo", `no repository ${repo}`, { hint: "use /git/APP.git" });
    const name = m[1]!;
    paas.db.app(name);
    noIdleTimeout(c);
    const rest = c.req.path.slice(`/git/${repo}`.length);
    const addr = c.env?.server?.requestIP(c.req.raw)?.address ?? "127.0.0.1";
    return gitHttpBackend({
      app: name,
      rest,
      req: c.req.raw,
      remoteAddr: addr,
      hookUrl: o.selfUrl(),
      token: o.token,
    });
  });

  return app;
}
