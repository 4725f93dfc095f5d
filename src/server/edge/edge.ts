/**
 * The edge: the listeners in front of the router and the API. The HTTP listener answers ACME
 * HTTP-01 challenges, sends requests for a domain that has a certificate to HTTPS (308), and
 * serves everything else; the HTTPS listener (when a port is given) serves every certificate
 * by SNI. Bun cannot change a listener's certificates in place, so a change starts a new HTTPS
 * listener on the same port (SO_REUSEPORT) and lets the old one finish its requests.
 *
 * One Edge runs in each edge worker process (workers.ts), all of them `shared` listeners on
 * the same ports; without workers, lj serve runs one in its own process.
 */
import type { Server, WebSocketHandler } from "bun";
import type { Router, WsData } from "./router.ts";

/** What the edge needs of the certificates (CertManager in lj serve, a copy in a worker). */
export interface EdgeCerts {
  get(name: string): { cert: string; key: string } | null;
  active(): [string, { cert: string; key: string; notAfter: number }][];
  /** HTTP-01 responses being served: token -> key authorisation. */
  readonly challenges: ReadonlyMap<string, string>;
}

export interface EdgeOptions {
  hostname: string;
  port: number;
  /** HTTPS port; undefined: no HTTPS listener. 0 picks one. */
  httpsPort?: number;
  router: Router;
  /** Requests that are not for an app (the API, git). */
  other(req: Request, server: Server<WsData>): Response | Promise<Response>;
  certs?: EdgeCerts;
  /**
   * Several processes listen on these ports (SO_REUSEPORT on HTTP too): the edge workers.
   * Challenges they do not know go to `other` (lj serve holds them while an order runs).
   */
  shared?: boolean;
  /** WebSocket handling (default: the router's bridges to apps). */
  websocket?: WebSocketHandler<WsData>;
  /** Bun's own per-request cap, above every limit of ours so that ours answer first. */
  maxRequestBodySize: number;
}

const CHALLENGE = "/.well-known/acme-challenge/";

function pathOf(url: string): string {
  const slash = url.indexOf("/", url.indexOf("//") + 2);
  return slash < 0 ? "/" : url.slice(slash);
}

function hostName(host: string): string {
  const h = host.toLowerCase();
  const colon = h.lastIndexOf(":");
  return colon >= 0 && !h.startsWith("[") ? h.slice(0, colon) : h;
}

export class Edge {
  readonly http: Server<WsData>;
  private https: Server<WsData> | null = null;
  private tlsNames = "";
  /** The HTTPS port once bound: kept when the listener goes away and comes back. */
  private boundHttps: number | undefined;

  constructor(private readonly o: EdgeOptions) {
    this.http = this.listen(o.port, false);
    this.reloadTls();
  }

  get httpsPort(): number | undefined {
    return this.https?.port ?? undefined;
  }

  private listen(port: number, tls: boolean): Server<WsData> {
    const { router, certs } = this.o;
    const entries = tls
      ? certs!.active().map(([serverName, c]) => ({ serverName, cert: c.cert, key: c.key }))
      : undefined;
    return Bun.serve<WsData>({
      hostname: this.o.hostname,
      port,
      reusePort: tls || this.o.shared === true,
      ...(entries ? { tls: entries } : {}),
      maxRequestBodySize: this.o.maxRequestBodySize,
      idleTimeout: 120,
      fetch: (req, srv) => {
        const host = req.headers.get("host");
        if (!tls && certs) {
          const url = req.url;
          const path = pathOf(url);
          if (path.startsWith(CHALLENGE)) {
            const answer = certs.challenges.get(path.slice(CHALLENGE.length));
            if (answer) return new Response(answer, { headers: { "content-type": "text/plain" } });
            if (this.o.shared) return this.o.other(req, srv);
          }
          const name = host && this.https ? hostName(host) : "";
          if (name && this.https && certs.get(name) && router.appFor(host)) {
            const port = this.https.port === 443 ? "" : `:${this.https.port}`;
            return Response.redirect(`https://${name}${port}${path}`, 308);
          }
        }
        const app = router.appFor(host);
        if (app) return router.fetch(req, srv, app);
        return this.o.other(req, srv);
      },
      websocket: this.o.websocket ?? router.websocket,
    });
  }

  /** Brings the HTTPS listener in line with the certificates (after one was issued or renewed). */
  reloadTls(): void {
    const { certs } = this.o;
    if (this.o.httpsPort === undefined || !certs) return;
    const active = certs.active();
    const names = active.map(([n, c]) => `${n}@${c.notAfter}`).join(",");
    if (names === this.tlsNames) return;
    this.tlsNames = names;
    const old = this.https;
    if (active.length === 0) {
      this.https = null;
      old?.stop(true);
      return;
    }
    this.https = this.listen(this.boundHttps ?? this.o.httpsPort, true);
    this.boundHttps = this.https.port;
    old?.stop(false);
  }

  stop(): void {
    this.http.stop(true);
    this.https?.stop(true);
  }
}
