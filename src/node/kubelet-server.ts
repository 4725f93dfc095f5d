/**
 * The part of the kubelet's HTTPS API a lightjail node serves: container logs (what
 * `kubectl logs` reaches through the API server) and a health check. Only clients with a
 * certificate signed by the cluster's client CA get in (the API server presents its
 * kubelet-client certificate); everything else is refused during the TLS handshake.
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { type ContainerLog, formatEntry, type LogQuery } from "./container-log.ts";

export interface LogSource {
  /** The log of a pod's container, or null when there is no such container on this node. */
  containerLog(namespace: string, pod: string, container: string): ContainerLog | null;
}

async function openssl(args: string[]): Promise<void> {
  const p = Bun.spawn(["openssl", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new LjError("unavailable", "openssl", `openssl ${args[0]}: ${err.trim()}`);
}

/** A self-signed serving certificate for the node's address, made once per state directory. */
export async function servingCert(dir: string, address: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, "kubelet.crt");
  const key = join(dir, "kubelet.key");
  if (!existsSync(cert) || !existsSync(key)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    await openssl([
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "365",
      "-subj",
      `/CN=${address}`,
      "-addext",
      `subjectAltName=IP:${address}`,
    ]);
  }
  return { cert, key };
}

function intParam(u: URL, name: string): number | undefined {
  const v = u.searchParams.get(name);
  if (v === null || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new LjError("usage", "bad-param", `${name} must be a whole number`);
  return n;
}

function logsResponse(log: ContainerLog, u: URL): Response {
  const q: LogQuery = {
    tailLines: intParam(u, "tailLines"),
    sinceSeconds: intParam(u, "sinceSeconds"),
    limitBytes: intParam(u, "limitBytes"),
    timestamps: u.searchParams.get("timestamps") === "true",
  };
  const previous = u.searchParams.get("previous") === "true";
  const head = log.render(q, previous);
  const headers = { "content-type": "text/plain; charset=utf-8" };
  if (u.searchParams.get("follow") !== "true" || previous) return new Response(head, { headers });
  let stop = () => {};
  const body = new ReadableStream<string>({
    start(ctl) {
      ctl.enqueue(head);
      stop = log.follow((e) => {
        if (e === null) {
          stop();
          ctl.close();
        } else ctl.enqueue(formatEntry(e, q.timestamps));
      });
    },
    cancel() {
      stop();
    },
  });
  return new Response(body, { headers });
}

export interface KubeletServer {
  port: number;
  stop(): Promise<void>;
}

export async function startKubeletServer(opts: {
  address: string;
  port: number;
  stateDir: string;
  clientCaFile: string;
  logs: LogSource;
}): Promise<KubeletServer> {
  const { cert, key } = await servingCert(opts.stateDir, opts.address);
  const server = Bun.serve({
    hostname: opts.address,
    port: opts.port,
    tls: {
      cert: Bun.file(cert),
      key: Bun.file(key),
      ca: Bun.file(opts.clientCaFile),
      requestCert: true,
      rejectUnauthorized: true,
    },
    fetch(req) {
      const u = new URL(req.url);
      if (req.method !== "GET") return new Response("method not allowed\n", { status: 405 });
      if (u.pathname === "/healthz") return new Response("ok");
      const m = /^\/containerLogs\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(u.pathname);
      if (!m) return new Response("not served by a lightjail node\n", { status: 404 });
      const [ns, pod, container] = m.slice(1).map(decodeURIComponent) as [string, string, string];
      const log = opts.logs.containerLog(ns, pod, container);
      if (!log)
        return new Response(`container ${container} of pod ${ns}/${pod} is not on this node\n`, {
          status: 404,
        });
      try {
        return logsResponse(log, u);
      } catch (e) {
        return new Response(`${(e as Error).message}\n`, { status: 400 });
      }
    },
  });
  return {
    port: server.port ?? opts.port,
    async stop() {
      await server.stop(true);
    },
  };
}
