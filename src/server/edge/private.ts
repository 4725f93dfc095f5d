/**
 * lj serve's private loopback listener behind an edge that runs elsewhere (the edge worker
 * processes, or nginx): whatever is not for an app (the API, git, `lj run` sessions) arrives
 * here, and so do ACME HTTP-01 challenges, answered from lj serve's own map so that a challenge
 * is served the moment its order starts.
 */
import type { Server, WebSocketHandler } from "bun";
import type { EdgeCerts } from "./edge.ts";
import type { WsData } from "./router.ts";

export const CHALLENGE = "/.well-known/acme-challenge/";

export interface PrivateListenerOptions {
  maxRequestBodySize: number;
  certs?: EdgeCerts;
  /** Requests that are not for an app (the API, git). */
  other(req: Request, server: Server<WsData>): Response | Promise<Response>;
  websocket?: WebSocketHandler<WsData>;
}

export function privateListener(o: PrivateListenerOptions): Server<WsData> {
  return Bun.serve<WsData>({
    hostname: "127.0.0.1",
    port: 0,
    maxRequestBodySize: o.maxRequestBodySize,
    idleTimeout: 120,
    fetch: (req, srv) => {
      const url = req.url;
      const at = url.indexOf(CHALLENGE);
      if (at >= 0 && o.certs) {
        const answer = o.certs.challenges.get(url.slice(at + CHALLENGE.length));
        if (answer) return new Response(answer, { headers: { "content-type": "text/plain" } });
        return new Response("no such challenge\n", { status: 404 });
      }
      return o.other(req, srv);
    },
    websocket: o.websocket ?? { message() {} },
  });
}

/** A port nobody listens on now (for listeners that must all bind one known port). */
export function freePort(hostname: string): number {
  const s = Bun.serve({ hostname, port: 0, fetch: () => new Response() });
  const p = s.port!;
  s.stop(true);
  return p;
}
