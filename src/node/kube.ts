/**
 * The node agent's view of the Kubernetes API, through the official client
 * (@kubernetes/client-node): typed calls, JSON merge patches, and list-then-watch loops that
 * start over from a fresh list whenever a watch ends.
 */
import { readFileSync } from "node:fs";
import {
  ApiException,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  createConfiguration,
  KubeConfig,
  PatchStrategy,
  RequestContext,
  ResponseContext,
  ServerConfiguration,
  setHeaderOptions,
  wrapHttpLibrary,
} from "@kubernetes/client-node";
import { LjError } from "../errors.ts";

export interface Kube {
  config: KubeConfig;
  server: string;
  core: CoreV1Api;
  apps: AppsV1Api;
  leases: CoordinationV1Api;
  /** The CA file that signed the API server's certificate (the node trusts it for clients too). */
  caFile: string | undefined;
  /** Opens a watch: newline-separated JSON events until the server ends it. */
  watch(path: string, query: Record<string, string>, signal: AbortSignal): Promise<Response>;
}

type Tls = { ca?: string; cert?: string; key?: string; rejectUnauthorized?: boolean };

function pem(data: string | undefined, file: string | undefined): string | undefined {
  if (data) return Buffer.from(data, "base64").toString();
  return file ? readFileSync(file, "utf8") : undefined;
}

/** The TLS settings of the kubeconfig's current cluster and user (CA, client certificate). */
function tlsOf(config: KubeConfig): Tls {
  const c = config.getCurrentCluster();
  const u = config.getCurrentUser();
  return {
    ca: pem(c?.caData, c?.caFile),
    cert: pem(u?.certData, u?.certFile),
    key: pem(u?.keyData, u?.keyFile),
    ...(c?.skipTLSVerify ? { rejectUnauthorized: false } : {}),
  };
}

/**
 * The client's generated APIs over Bun's fetch: the client's own transport hands TLS settings
 * to undici through a dispatcher, which Bun's fetch does not take, so the kubeconfig's CA and
 * client certificate are given to fetch here. Authentication headers still come from the
 * client (KubeConfig.applySecurityAuthentication).
 */
function bunHttp(tls: Tls) {
  return wrapHttpLibrary({
    async send(req: RequestContext): Promise<ResponseContext> {
      const res = await fetch(req.getUrl(), {
        method: req.getHttpMethod().toString(),
        body: req.getBody() as string | undefined,
        headers: req.getHeaders(),
        signal: req.getSignal(),
        tls,
      });
      const headers: Record<string, string> = {};
      res.headers.forEach((v, k) => {
        headers[k] = v;
      });
      const data = res.arrayBuffer().then((b) => Buffer.from(b));
      return new ResponseContext(res.status, headers, {
        text: async () => (await data).toString(),
        binary: () => data,
        stream: () => null,
      });
    },
  });
}

export function connect(kubeconfig: string): Kube {
  const config = new KubeConfig();
  try {
    config.loadFromFile(kubeconfig);
  } catch (e) {
    throw new LjError(
      "config",
      "bad-kubeconfig",
      `cannot read kubeconfig ${kubeconfig}: ${(e as Error).message}`,
    );
  }
  const cluster = config.getCurrentCluster();
  if (!cluster)
    throw new LjError("config", "bad-kubeconfig", `kubeconfig ${kubeconfig} names no current cluster`);
  let tls: Tls;
  try {
    tls = tlsOf(config);
  } catch (e) {
    throw new LjError("config", "bad-kubeconfig", `kubeconfig ${kubeconfig}: ${(e as Error).message}`);
  }
  const api = createConfiguration({
    baseServer: new ServerConfiguration(cluster.server, {}),
    authMethods: { default: config },
    httpApi: bunHttp(tls),
  });
  return {
    config,
    server: cluster.server,
    core: new CoreV1Api(api),
    apps: new AppsV1Api(api),
    leases: new CoordinationV1Api(api),
    caFile: cluster.caFile,
    async watch(path, query, signal) {
      const url = new URL(`${cluster.server}${path}`);
      for (const [k, v] of Object.entries({ ...query, watch: "true" })) url.searchParams.set(k, v);
      const ctx = new RequestContext(url.toString(), "GET" as never);
      await config.applySecurityAuthentication(ctx);
      return fetch(url, { headers: ctx.getHeaders(), signal, tls });
    },
  };
}

export const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export function statusOf(e: unknown): number | undefined {
  return e instanceof ApiException ? e.code : undefined;
}

export function describe(e: unknown): string {
  if (e instanceof ApiException) {
    const body = typeof e.body === "string" ? e.body : JSON.stringify(e.body);
    try {
      return `${e.code}: ${(JSON.parse(body) as { message?: string }).message ?? body}`;
    } catch {
      return `${e.code}: ${body}`;
    }
  }
  return (e as Error).message ?? String(e);
}

type Obj = { metadata?: { resourceVersion?: string } };

/**
 * Lists, then watches from the list's version; when the watch ends (timeout, error, expired
 * version) it lists again. `sync` gets every full list, `event` every change in between.
 */
export function listWatch<T extends Obj>(
  kube: Kube,
  opts: {
    path: string;
    query: Record<string, string>;
    list: () => Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>;
    sync: (items: T[]) => void;
    event: (type: string, obj: T) => void;
    error: (e: unknown) => void;
  },
): { stop(): void } {
  const abort = new AbortController();
  const loop = async () => {
    let retry = 500;
    while (!abort.signal.aborted) {
      const began = Date.now();
      try {
        const list = await opts.list();
        opts.sync(list.items);
        const rv = list.metadata?.resourceVersion ?? "";
        const res = await kube.watch(
          opts.path,
          { ...opts.query, resourceVersion: rv, allowWatchBookmarks: "true", timeoutSeconds: "300" },
          abort.signal,
        );
        if (!res.ok) throw new Error(`watch ${opts.path}: ${res.status} ${await res.text()}`);
        await readEvents(res, (type, obj) => {
          if (type !== "BOOKMARK" && type !== "ERROR") opts.event(type, obj as T);
        });
        retry = 500;
      } catch (e) {
        if (abort.signal.aborted) return;
        opts.error(e);
      }
      // A watch that ends at once (an error, an expired version) does not spin.
      if (Date.now() - began < 1000 && !abort.signal.aborted) {
        await Bun.sleep(retry);
        retry = Math.min(retry * 2, 10_000);
      }
    }
  };
  void loop();
  return { stop: () => abort.abort() };
}

async function readEvents(res: Response, fn: (type: string, obj: unknown) => void): Promise<void> {
  if (!res.body) return;
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let nl = buf.indexOf("\n");
    while (nl >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) {
        const ev = JSON.parse(line) as { type: string; object: unknown };
        fn(ev.type, ev.object);
      }
      nl = buf.indexOf("\n");
    }
  }
}
