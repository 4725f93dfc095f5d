/**
 * The HTTP router: requests for APP.<domain> go to the app's healthy web instances, round
 * robin, with bodies streamed both ways and WebSocket upgrades bridged. While no instance is up
 * it answers 503 with a page that says so. Every request gets one access-log line. The
 * forwarding headers (X-Forwarded-*, X-Real-IP, Forwarded) are the router's own, from the TCP
 * peer; a client's are dropped unless the peer is a trusted proxy (see forwarding.ts).
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { Server, ServerWebSocket } from "bun";
import { appendRotating, type LogRotation, logRotation } from "../../paas/rotate.ts";
import { NAME_RE } from "../../store/names.ts";
import { FORWARDING_HEADERS, forwardingHeaders, TrustedProxies } from "./forwarding.ts";
import { Upstreams } from "./upstream.ts";

export interface Target {
  address: string;
  port: number;
}

export interface RouterOptions {
  domain: string;
  /** Web targets of an app; null when there is no such app. */
  targets(app: string): Target[] | null;
  /** Access log file (appended in batches, rotated by size: src/paas/rotate.ts). */
  accessLog?: string;
  /**
   * Where an edge worker process sends its batches of access-log lines instead (to lj serve,
   * the log's one writer: `record`); `lines` counts the requests in the batch.
   */
  accessSink?(text: string, lines: number): void;
  /** How long access-log lines wait to be written together (ms); default 500. */
  flushEveryMs?: number;
  accessLogRotation?: LogRotation;
  /** The app's own log: router errors (5xx) always, every request with appLogAll. */
  appLog?(app: string, line: string): void;
  appLogAll?: boolean;
  /** Peers (CIDRs) whose forwarding headers are kept and appended to; default none. */
  trustedProxies?: TrustedProxies;
  /** Custom domains: the app a Host names, besides APP.<domain>. */
  domains?: { appFor(host: string): string | null };
  /** Requests in flight toward one instance; default DEFAULT_PER_INSTANCE. */
  perInstance?: number;
  /** Largest request body passed to an app (bytes); larger ones get a logged 413. */
  maxBodyBytes?: number;
  /**
   * Behind lj serve's own nginx (its overflow listener, which only nginx can reach): the
   * forwarding headers nginx wrote are the app's, passed on as they came, and every answer
   * names the instance it came from in this header (nginx logs it and drops it).
   */
  behindEdge?: { instanceHeader: string };
}

interface Gate {
  busy: number;
  waiting: (() => void)[];
}

/** Requests in flight toward one instance (the rest queue in the router). */
export const DEFAULT_PER_INSTANCE = 32;

/** The default of `lj serve --max-body` (MB): request bodies to apps. */
export const DEFAULT_MAX_BODY_MB = 1024;

/** Hop-by-hop headers: they describe one connection and are never passed on. */
export const HOP = [
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
];

export interface WsData {
  kind: "router-ws";
  url: string;
  headers: Record<string, string>;
  protocols: string[];
  upstream?: WebSocket;
  queue: (string | Uint8Array)[];
}

const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** The router's own pages (the nginx edge serves the same HTML: nginx.ts). */
export const pageHtml = (title: string, text: string) =>
  `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body style="font-family:sans-serif;margin:4em"><h1>${title}</h1><p>${text}</p><p><small>lightjail router</small></p></body></html>\n`;

export const PAGES = {
  noSuchApp: (app: string) =>
    ["No such app", `There is no app called <b>${escapeHtml(app)}</b> here.`] as const,
  unavailable: (app: string) =>
    [
      "Application unavailable",
      `No instance of <b>${escapeHtml(app)}</b> is up right now. It may be starting or crashing; try again in a moment, or see <code>lj ps ${escapeHtml(app)}</code> and <code>lj logs ${escapeHtml(app)}</code>.`,
    ] as const,
  tooLarge: (why: string) => ["Request body too large", escapeHtml(why)] as const,
  badGateway: (app: string, why: string) =>
    [
      "Bad gateway",
      `The instance of <b>${escapeHtml(app)}</b> did not answer${why ? ` (${escapeHtml(why)})` : ""}.`,
    ] as const,
};

export const page = (status: number, [title, text]: readonly [string, string]) =>
  new Response(pageHtml(title, text), {
    status,
    headers: {
      "content-type": "text/html; charset=utf-8",
      ...(status === 503 ? { "retry-after": "2" } : {}),
    },
  });

const isForwarding = (k: string) => (FORWARDING_HEADERS as readonly string[]).includes(k);

/** Request headers an app never gets from the client: the router writes its own. */
const NOT_PASSED = new Set<string>([...HOP, ...FORWARDING_HEADERS]);

export class Router {
  private rr = new Map<string, number>();
  private accessBuf: string[] = [];
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly suffix: string;
  private readonly trusted: TrustedProxies;
  private readonly rotation: LogRotation;

  constructor(private readonly opts: RouterOptions) {
    this.suffix = `.${opts.domain.toLowerCase()}`;
    this.trusted = opts.trustedProxies ?? new TrustedProxies([]);
    if (opts.accessLog) mkdirSync(dirname(opts.accessLog), { recursive: true });
    this.rotation = opts.accessLogRotation ?? logRotation();
  }

  /** The app a Host header names, or null when the request is not for the router. */
  appFor(host: string | null): string | null {
    if (!host) return null;
    let h = host.toLowerCase();
    if (h.startsWith("[")) return null;
    const colon = h.lastIndexOf(":");
    if (colon >= 0) h = h.slice(0, colon);
    if (!h.endsWith(this.suffix)) return this.opts.domains?.appFor(h) ?? null;
    const app = h.slice(0, -this.suffix.length);
    return NAME_RE.test(app) ? app : null;
  }

  /** Targets per app, cached until the supervisor says something changed (`invalidate`). */
  private cache = new Map<string, Target[] | null>();

  invalidate(): void {
    this.cache.clear();
    // Gates of instances with nothing in flight are made again when needed (instances come and
    // go with every deploy; their gates should not stay).
    for (const [k, g] of this.gates) if (g.busy === 0 && g.waiting.length === 0) this.gates.delete(k);
  }

  private pick(app: string, skip?: Target): Target | null | undefined {
    let all = this.cache.get(app);
    if (all === undefined) {
      all = this.opts.targets(app);
      this.cache.set(app, all);
    }
    if (all === null) return undefined;
    const ts = skip && all.length > 1 ? all.filter((t) => t !== skip) : all;
    if (ts.length === 0) return null;
    const n = (this.rr.get(app) ?? 0) + 1;
    this.rr.set(app, n);
    return ts[n % ts.length]!;
  }

  /**
   * Answers a request for `app`. Requests without a body (most) go out on the router's own
   * sockets (upstream.ts) without an async step of their own here; uploads and WebSocket
   * upgrades take the general path.
   */
  fetch(
    req: Request,
    server: Server<WsData>,
    app: string,
  ): Response | undefined | Promise<Response | undefined> {
    const started = performance.now();
    const raw = req.url;
    const slash = raw.indexOf("/", raw.indexOf("//") + 2);
    const path = slash < 0 ? "/" : raw.slice(slash);
    const first = this.pick(app);
    if (first === undefined) {
      this.access(app, req.method, path, 404, started, null);
      return page(404, PAGES.noSuchApp(app));
    }
    if (first === null) {
      this.access(app, req.method, path, 503, started, null);
      return page(503, PAGES.unavailable(app));
    }
    const tooLarge = this.oversized(req);
    if (tooLarge) {
      this.access(app, req.method, path, 413, started, null, tooLarge);
      return page(413, PAGES.tooLarge(tooLarge));
    }
    const headers = req.headers;
    const method = req.method;
    const bodiless = method === "GET" || method === "HEAD" || req.body === null;
    if (bodiless && !headers.has("upgrade")) {
      const host = headers.get("host") ?? "";
      const forwarded = this.forwarding(req, server, host);
      let head = `${method} ${path} HTTP/1.1\r\nhost: ${host}\r\n`;
      headers.forEach((v, k) => {
        if (!NOT_PASSED.has(k)) head += `${k}: ${v}\r\n`;
      });
      for (const k in forwarded) head += `${k}: ${forwarded[k]}\r\n`;
      head += "\r\n";
      return this.send(app, method, path, head, first, started, 0);
    }
    return this.forward(req, server, app, path, first, started);
  }

  /** The forwarding headers the app gets (forwarding.ts; behind the edge, the edge's own). */
  private forwarding(req: Request, server: Server<WsData>, host: string): Record<string, string> {
    const headers = req.headers;
    if (this.opts.behindEdge) {
      const kept: Record<string, string> = {};
      for (const k of FORWARDING_HEADERS) {
        const v = headers.get(k);
        if (v !== null) kept[k] = v;
      }
      return kept;
    }
    return forwardingHeaders(
      server.requestIP(req)?.address,
      req.url.startsWith("https:") ? "https" : "http",
      host,
      this.trusted,
      (name) => headers.get(name),
    );
  }

  /** Behind the edge: the answer names its instance (see behindEdge). */
  private tagged(res: Response, t: Target): Response {
    const b = this.opts.behindEdge;
    if (b) res.headers.set(b.instanceHeader, `${t.address}:${t.port}`);
    return res;
  }

  /** Uploads (the body streamed through fetch) and WebSocket upgrades. */
  private async forward(
    req: Request,
    server: Server<WsData>,
    app: string,
    path: string,
    first: Target,
    started: number,
  ): Promise<Response | undefined> {
    let target = first;
    // The incoming request's own headers are edited in place: copying them costs per request.
    const headers = req.headers;
    const wsUpgrade = headers.get("upgrade")?.toLowerCase() === "websocket";
    const host = headers.get("host") ?? "";
    const protocolHeader = headers.get("sec-websocket-protocol");
    const forwarded = this.forwarding(req, server, host);
    if (wsUpgrade) {
      // The upgrade needs the request's own headers intact; the bridge gets a filtered copy.
      const wsHeaders: Record<string, string> = {};
      headers.forEach((v, k) => {
        if (!k.startsWith("sec-websocket") && !HOP.includes(k) && !isForwarding(k)) wsHeaders[k] = v;
      });
      Object.assign(wsHeaders, forwarded);
      const protocols = (protocolHeader ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      const b = this.opts.behindEdge;
      const ok = server.upgrade(req, {
        ...(b ? { headers: { [b.instanceHeader]: `${target.address}:${target.port}` } } : {}),
        data: {
          kind: "router-ws",
          url: `ws://${target.address}:${target.port}${path}`,
          headers: wsHeaders,
          protocols,
          queue: [],
        },
      });
      this.access(app, req.method, path, ok ? 101 : 400, started, target);
      return ok ? undefined : new Response("WebSocket upgrade failed\n", { status: 400 });
    }
    const hasBody = req.method !== "GET" && req.method !== "HEAD" && req.body !== null;
    for (const h of HOP) if (headers.has(h)) headers.delete(h);
    for (const h of FORWARDING_HEADERS) if (headers.has(h)) headers.delete(h);
    for (const [k, v] of Object.entries(forwarded)) headers.set(k, v);
    headers.set("host", host);
    // A body can be sent once: only requests without one are retried on another instance.
    const cut: { why: string | null } = { why: null };
    for (let attempt = 0; ; attempt++) {
      try {
        const gate = this.gate(target);
        if (gate.busy >= this.perInstance) await new Promise<void>((r) => gate.waiting.push(r));
        gate.busy++;
        let res: Response;
        try {
          res = await fetch(`http://${target.address}:${target.port}${path}`, {
            method: req.method,
            headers,
            body: hasBody ? this.counted(req, cut) : undefined,
            redirect: "manual",
            decompress: false,
          } as RequestInit);
        } finally {
          gate.busy--;
          gate.waiting.shift()?.();
        }
        this.access(app, req.method, path, res.status, started, target);
        // Streamed through as is, minus the hop-by-hop headers (removed in place: Bun's fetch
        // responses have mutable headers, and a copy costs per request).
        const rh = res.headers;
        for (const h of HOP) if (rh.has(h)) rh.delete(h);
        return this.tagged(res, target);
      } catch (e) {
        if (cut.why) {
          this.access(app, req.method, path, 413, started, target, cut.why);
          return this.tagged(page(413, PAGES.tooLarge(cut.why)), target);
        }
        const next: Target | null | undefined = !hasBody && attempt === 0 ? this.pick(app, target) : null;
        if (!next || next === target) {
          this.access(app, req.method, path, 502, started, target);
          return this.tagged(page(502, PAGES.badGateway(app, (e as Error).message)), target);
        }
        target = next;
      }
    }
  }

  /** Keep-alive sockets toward the instances, for requests without a body. */
  private readonly upstreams = new Upstreams();

  /**
   * A request without a body: its head written once on a pooled socket (after a wait at the
   * instance's gate when it is full); sent to another instance once when the first cannot be
   * reached.
   */
  private send(
    app: string,
    method: string,
    path: string,
    head: string,
    target: Target,
    started: number,
    attempt: number,
  ): Promise<Response> {
    const gate = this.gate(target);
    if (gate.busy >= this.perInstance)
      return new Promise<void>((r) => gate.waiting.push(r)).then(() =>
        this.sendNow(app, method, path, head, target, started, attempt, gate),
      );
    return this.sendNow(app, method, path, head, target, started, attempt, gate);
  }

  private sendNow(
    app: string,
    method: string,
    path: string,
    head: string,
    target: Target,
    started: number,
    attempt: number,
    gate: Gate,
  ): Promise<Response> {
    gate.busy++;
    const done = () => {
      gate.busy--;
      gate.waiting.shift()?.();
    };
    return this.upstreams.request(target.address, target.port, head, method === "HEAD").then(
      (res) => {
        done();
        this.access(app, method, path, res.status, started, target);
        return this.tagged(res, target);
      },
      (e: Error) => {
        done();
        const next = attempt === 0 ? this.pick(app, target) : null;
        if (next && next !== target) return this.send(app, method, path, head, next, started, 1);
        this.access(app, method, path, 502, started, target);
        return this.tagged(page(502, PAGES.badGateway(app, e.message)), target);
      },
    );
  }

  /** Closes the pooled sockets toward the instances. */
  close(): void {
    this.upstreams.close();
  }

  private gates = new Map<string, Gate>();
  private get perInstance(): number {
    return this.opts.perInstance ?? DEFAULT_PER_INSTANCE;
  }

  /**
   * Requests in flight toward one instance are bounded: the rest wait here, in order, so one
   * app's flood neither opens a socket per request toward it (TIME_WAIT, EADDRNOTAVAIL) nor
   * queues ahead of other apps' requests in the shared HTTP client.
   */
  private gate(t: Target): Gate {
    const key = `${t.address}:${t.port}`;
    let g = this.gates.get(key);
    if (!g) {
      g = { busy: 0, waiting: [] };
      this.gates.set(key, g);
    }
    return g;
  }

  private get maxBody(): number {
    return this.opts.maxBodyBytes ?? DEFAULT_MAX_BODY_MB * 1024 * 1024;
  }

  /** Why a body announced by Content-Length is refused, or null. */
  private oversized(req: Request): string | null {
    const len = req.headers.get("content-length");
    if (len === null || Number(len) <= this.maxBody) return null;
    return `the request body (${len} bytes) exceeds this server's limit of ${this.maxBody} bytes (lj serve --max-body)`;
  }

  /** A chunked body (no Content-Length) is counted as it streams and cut at the limit. */
  private counted(req: Request, cut: { why: string | null }): ReadableStream<Uint8Array> | null {
    if (req.headers.has("content-length") || req.body === null) return req.body;
    const max = this.maxBody;
    let n = 0;
    return req.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          n += chunk.length;
          if (n > max) {
            cut.why = `the request body exceeds this server's limit of ${max} bytes (lj serve --max-body)`;
            throw new Error(cut.why);
          }
          ctl.enqueue(chunk);
        },
      }),
    );
  }

  /** Time to the header: the log line is written when the upstream answered. */
  private access(
    app: string,
    method: string,
    path: string,
    status: number,
    started: number,
    t: Target | null,
    why?: string,
  ) {
    const ms = (performance.now() - started).toFixed(1);
    const line = `${method} ${path} ${status} ${ms}ms -> ${t ? `${t.address}:${t.port}` : "-"}${why ? ` (${why})` : ""}`;
    // The app's own log gets what its owner needs to see; every request goes to the access log.
    if (status >= 500 || status === 413 || this.opts.appLogAll) this.opts.appLog?.(app, line);
    if (!this.opts.accessLog && !this.opts.accessSink) return;
    this.accessBuf.push(`${this.now()} ${app} ${line}\n`);
    this.flushTimer ??= setTimeout(() => this.flush(), this.opts.flushEveryMs ?? 500);
  }

  private stamp = "";
  private stampAt = 0;
  /** ISO time, recomputed at most every 10 ms (formatting dates per request is measurable). */
  private now(): string {
    const t = performance.now();
    if (t - this.stampAt > 10) {
      this.stamp = new Date().toISOString();
      this.stampAt = t;
    }
    return this.stamp;
  }

  /** Lines an edge worker process logged (see accessSink), written with this router's own. */
  record(text: string): void {
    if (!this.opts.accessLog) return;
    this.accessBuf.push(text);
    this.flushTimer ??= setTimeout(() => this.flush(), 500);
  }

  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.accessBuf.length === 0) return;
    const lines = this.accessBuf;
    this.accessBuf = [];
    if (this.opts.accessSink) {
      this.opts.accessSink(lines.join(""), lines.length);
      return;
    }
    if (!this.opts.accessLog) return;
    try {
      appendRotating(this.opts.accessLog, lines.join(""), this.rotation);
    } catch {}
  }

  /** Bun.serve websocket handlers for bridged upgrades. */
  readonly websocket = {
    open(ws: ServerWebSocket<WsData>) {
      const d = ws.data;
      const up = new WebSocket(d.url, { headers: d.headers, protocols: d.protocols } as unknown as string[]);
      up.binaryType = "arraybuffer";
      d.upstream = up;
      up.onopen = () => {
        for (const m of d.queue) up.send(m);
        d.queue = [];
      };
      up.onmessage = (ev) => {
        ws.send(typeof ev.data === "string" ? ev.data : new Uint8Array(ev.data as ArrayBuffer));
      };
      up.onclose = (ev) => ws.close(ev.code === 1005 || ev.code === 1006 ? 1000 : ev.code, ev.reason);
      up.onerror = () => ws.close(1011, "upstream error");
    },
    message(ws: ServerWebSocket<WsData>, msg: string | Buffer) {
      const d = ws.data;
      const m = typeof msg === "string" ? msg : new Uint8Array(msg);
      if (d.upstream?.readyState === WebSocket.OPEN) d.upstream.send(m);
      else d.queue.push(m);
    },
    close(ws: ServerWebSocket<WsData>, code: number, reason: string) {
      const up = ws.data.upstream;
      if (up && up.readyState <= WebSocket.OPEN) up.close(code === 1005 ? 1000 : code, reason);
    },
  };
}
