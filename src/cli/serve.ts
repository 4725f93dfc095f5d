import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { defineCommand } from "citty";
import { LjError } from "../errors.ts";
import { splitList } from "../server/edge/forwarding.ts";
import { type EdgeScheduling, validNice } from "../server/edge/scheduling.ts";
import { defaultServiceFile, installService, serviceArgv } from "../server/install.ts";
import type { EdgeKind } from "../server/serve.ts";
import { paths } from "../store/paths.ts";
import { DEFAULT_PORT, serverRecordFile } from "./client.ts";

export const serveCommand = defineCommand({
  meta: { name: "serve", description: "Run the PaaS server: API, git push endpoint and the HTTP router" },
  args: {
    host: { type: "string", description: "address to listen on", default: "127.0.0.1" },
    port: {
      type: "string",
      description: `port (0 picks one; default ${DEFAULT_PORT})`,
      default: String(DEFAULT_PORT),
    },
    domain: { type: "string", description: "apps answer at APP.<domain>", default: "localhost" },
    "health-timeout": {
      type: "string",
      description: "seconds a new web process has to accept connections",
      default: "30",
    },
    "keep-releases": { type: "string", description: "releases kept per app", default: "10" },
    "max-upload": { type: "string", description: "largest source upload in MB", default: "256" },
    "trusted-proxy": {
      type: "string",
      description:
        "CIDR of a proxy in front of lj serve whose X-Forwarded-For/Forwarded chain is kept (repeatable; default: LJ_TRUSTED_PROXIES, [router] trusted_proxies, else none)",
    },
    "max-body": {
      type: "string",
      description: "largest request body passed to an app, in MB",
      default: "1024",
    },
    "https-port": {
      type: "string",
      description: "HTTPS port for apps' custom domains (default 443 with --acme-email; 0 picks one)",
    },
    "acme-email": {
      type: "string",
      description:
        "obtain and renew certificates for custom domains over ACME (HTTP-01 on --port), with this contact",
    },
    "acme-directory": { type: "string", description: "ACME directory URL (default Let's Encrypt)" },
    "acme-ca": {
      type: "string",
      description: "PEM file of a CA to trust for the ACME server (a private CA)",
    },
    edge: {
      type: "string",
      description:
        "what serves HTTP and HTTPS: nginx (lj serve runs and configures its own nginx), builtin (Bun listeners), auto (nginx when installed, else builtin); default: [router] edge in config.toml, else auto",
    },
    "edge-workers": {
      type: "string",
      description:
        "edge worker processes serving HTTP and HTTPS (auto: one per core; 0: in the server process; with nginx its worker_processes)",
      default: "auto",
    },
    "edge-nice": {
      type: "string",
      description:
        "nice value of the edge's worker processes, -20 to 19, above the apps they pass requests to (default -5 as root; 0: lj serve's own)",
    },
    "edge-policy": {
      type: "string",
      description:
        "scheduling policy of the edge's worker processes on Linux: batch (SCHED_BATCH: a woken worker does not preempt an app mid-turn) or normal; default batch",
    },
    scheduler: {
      type: "string",
      description:
        "where app processes run: local (jails on this machine) or kubernetes (Deployments on lightjail nodes; docs/cluster.md)",
      default: "local",
    },
    kubeconfig: { type: "string", description: "the cluster's kubeconfig, with --scheduler kubernetes" },
    json: { type: "boolean", description: "print the listening address as JSON" },
    install: {
      type: "boolean",
      description:
        "write a system service running this command (systemd unit; rc.d script on FreeBSD) instead of serving",
    },
    "service-file": { type: "string", description: "where --install writes (default: the system's place)" },
  },
  async run({ args, rawArgs }) {
    const port = Number(args.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new LjError("usage", "bad-port", `invalid port ${args.port}`);
    if (args.install) return install(rawArgs, args["service-file"]);
    const edge = edgeArgs(args);
    const scheduler = await schedulerArg(args.scheduler, args.kubeconfig);
    const { startServer } = await import("../server/serve.ts");
    const s = await startServer({
      hostname: args.host,
      port,
      domain: args.domain,
      healthTimeoutMs: Number(args["health-timeout"]) * 1000,
      keepReleases: Number(args["keep-releases"]),
      maxUploadBytes: Number(args["max-upload"]) * 1024 * 1024,
      trustedProxies: repeated(rawArgs, "--trusted-proxy"),
      ...edge,
      ...(scheduler ? { scheduler } : {}),
    });
    writeFileSync(serverRecordFile(), JSON.stringify({ url: s.url, pid: process.pid, domain: s.domain }), {
      mode: 0o600,
    });
    const warning = plainHttpWarning(s.listen.hostname, s.url);
    if (warning) process.stderr.write(`warning: ${warning}\n`);
    if (args.json) {
      process.stdout.write(
        `${JSON.stringify({ url: s.url, port: s.port, domain: s.domain, listen: s.listen, ...(s.tokenCreated ? { token: s.token } : {}) })}\n`,
      );
    } else {
      process.stdout.write(`lightjail server listening on ${listenLabel(s.listen)}\n`);
      if (s.url !== `http://${hostPort(s.listen)}`) process.stdout.write(`local clients use ${s.url}\n`);
      process.stdout.write(`apps answer at http://APP.${s.domain}:${s.port}/\n`);
      process.stdout.write(
        s.nginx ? `edge: nginx (master pid ${s.nginx.pid}), configured by lj serve\n` : "edge: built-in\n",
      );
      if (edge.acme)
        process.stdout.write(
          `certificates for custom domains from ${edge.acme.directory ?? "Let's Encrypt"}, HTTPS on port ${edge.httpsPort}\n`,
        );
      process.stdout.write(`git push: git remote add lj ${s.url}/git/APP.git\n`);
      if (s.trustedProxies.length > 0)
        process.stdout.write(`forwarding headers kept from: ${s.trustedProxies.join(", ")}\n`);
      if (s.tokenCreated) {
        process.stdout.write(`\nAPI token (shown once; stored mode 0600 for local clients):\n  ${s.token}\n`);
        process.stdout.write(
          "export LJ_TOKEN=... on other machines, or put it in ~/.config/lightjail/client.json\n\n",
        );
      }
    }
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
    process.stderr.write("stopping: ending every app process (desired state stays for the next start)\n");
    await s.stop();
  },
});

/** `--scheduler local|kubernetes` (with `--kubeconfig`), checked before anything starts. */
async function schedulerArg(name: string, kubeconfig: string | undefined) {
  if (name === "local") {
    if (kubeconfig !== undefined)
      throw new LjError("usage", "bad-scheduler", "--kubeconfig is for --scheduler kubernetes");
    return undefined;
  }
  if (name !== "kubernetes")
    throw new LjError("usage", "bad-scheduler", `--scheduler: "${name}" is not local or kubernetes`);
  if (!kubeconfig)
    throw new LjError("usage", "bad-scheduler", "--scheduler kubernetes needs --kubeconfig FILE");
  const { kubeScheduler } = await import("../cluster/kube-scheduler.ts");
  return kubeScheduler({ kubeconfig });
}

/** The edge's settings from `lj serve`'s options, checked before anything starts. */
export function edgeArgs(args: Record<string, unknown>): {
  maxBodyBytes: number;
  httpsPort?: number;
  acme?: { email?: string; directory?: string; ca?: string };
  edgeWorkers: number;
  edge: EdgeKind;
  edgeScheduling: Partial<EdgeScheduling>;
} {
  const edge = edgeKind(args.edge as string | undefined);
  const w = String(args["edge-workers"] ?? "auto");
  const edgeWorkers = w === "auto" ? availableParallelism() : Number(w);
  if (!/^(auto|[0-9]+)$/.test(w) || edgeWorkers > 256)
    throw new LjError(
      "usage",
      "bad-edge-workers",
      `--edge-workers: ${JSON.stringify(w)} is not "auto" or a count of processes (0 to 256)`,
    );
  const edgeScheduling: Partial<EdgeScheduling> = {};
  if (args["edge-nice"] !== undefined) {
    const n = String(args["edge-nice"]);
    const nice = Number(n);
    if (!/^-?[0-9]+$/.test(n) || !validNice(nice))
      throw new LjError(
        "usage",
        "bad-edge-nice",
        `--edge-nice: ${JSON.stringify(n)} is not a nice value (-20 to 19)`,
      );
    if (nice < 0 && process.getuid?.() !== 0)
      throw new LjError("usage", "bad-edge-nice", `--edge-nice ${nice}: a negative nice value needs root`);
    edgeScheduling.nice = nice;
  }
  if (args["edge-policy"] !== undefined) {
    const p = String(args["edge-policy"]);
    if (p !== "batch" && p !== "normal")
      throw new LjError(
        "usage",
        "bad-edge-policy",
        `--edge-policy: ${JSON.stringify(p)} is not batch or normal`,
      );
    edgeScheduling.batch = p === "batch";
  }
  const maxBody = Number(args["max-body"] ?? 1024);
  if (!Number.isFinite(maxBody) || maxBody <= 0)
    throw new LjError(
      "usage",
      "bad-max-body",
      `--max-body: ${String(args["max-body"])} is not a positive number of MB`,
    );
  const email = args["acme-email"] as string | undefined;
  const directory = args["acme-directory"] as string | undefined;
  const caFile = args["acme-ca"] as string | undefined;
  if (email !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email))
    throw new LjError(
      "usage",
      "bad-acme-email",
      `--acme-email: ${JSON.stringify(email)} is not an e-mail address`,
    );
  if (directory !== undefined && !/^https:\/\/[^\s]+$/.test(directory))
    throw new LjError(
      "usage",
      "bad-acme-directory",
      `--acme-directory: ${JSON.stringify(directory)} is not an https:// URL`,
    );
  const acmeOn = email !== undefined || directory !== undefined;
  let httpsPort: number | undefined = acmeOn ? 443 : undefined;
  if (args["https-port"] !== undefined) {
    httpsPort = Number(args["https-port"]);
    if (!Number.isInteger(httpsPort) || httpsPort < 0 || httpsPort > 65535)
      throw new LjError("usage", "bad-port", `--https-port: invalid port ${String(args["https-port"])}`);
  }
  let ca: string | undefined;
  if (caFile !== undefined) {
    try {
      ca = readFileSync(caFile, "utf8");
    } catch (e) {
      throw new LjError("usage", "bad-acme-ca", `--acme-ca: cannot read ${caFile}: ${(e as Error).message}`);
    }
  }
  return {
    maxBodyBytes: maxBody * 1024 * 1024,
    httpsPort,
    acme: acmeOn ? { email, directory, ca } : undefined,
    edgeWorkers,
    edge,
    edgeScheduling,
  };
}

const EDGE_KINDS = ["nginx", "builtin", "auto"] as const;

/** `--edge`, else `edge` under [router] in config.toml, else "auto". */
export function edgeKind(flag: string | undefined, file = paths.config()): EdgeKind {
  let v: unknown = flag;
  let where = "--edge";
  if (v === undefined) {
    try {
      const doc = Bun.TOML.parse(readFileSync(file, "utf8")) as { router?: { edge?: unknown } };
      v = doc.router?.edge;
      where = `[router] edge in ${file}`;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT")
        throw new LjError("config", "bad-config", `cannot parse ${file}: ${(e as Error).message}`);
    }
  }
  if (v === undefined) return "auto";
  if (typeof v !== "string" || !(EDGE_KINDS as readonly string[]).includes(v))
    throw new LjError(
      flag === undefined ? "config" : "usage",
      "bad-edge",
      `${where}: ${JSON.stringify(v)} is not one of ${EDGE_KINDS.join(", ")}`,
    );
  return v as EdgeKind;
}

const hostPort = (l: { hostname: string; port: number }) =>
  `${l.hostname.includes(":") ? `[${l.hostname}]` : l.hostname}:${l.port}`;

/** The socket's real address; the wildcard addresses say what they mean. */
export function listenLabel(l: { hostname: string; port: number }): string {
  const all =
    l.hostname === "0.0.0.0" ? " (every IPv4 address)" : l.hostname === "::" ? " (every address)" : "";
  return `http://${hostPort(l)}${all}`;
}

const isLoopback = (h: string) =>
  h === "localhost" || h === "::1" || /^127\./.test(h) || /^::ffff:127\./i.test(h);

/**
 * Clients send the API token with every request: over plain HTTP on anything but loopback,
 * anyone on the path reads it (and then owns every app). Null when there is nothing to say.
 */
export function plainHttpWarning(listenHost: string, url: string): string | null {
  if (isLoopback(listenHost) || !url.startsWith("http:")) return null;
  return `lj serve listens on ${listenHost} over plain HTTP: the API token would travel unencrypted to clients on other machines; put HTTPS in front (a proxy that terminates TLS) or listen on 127.0.0.1 and reach it over SSH`;
}

function install(rawArgs: string[], file: string | undefined): void {
  const o = { argv: serviceArgv(rawArgs), root: paths.root() };
  const target = file ?? defaultServiceFile();
  const next = installService(o, target);
  process.stdout.write(`wrote ${target}\n`);
  process.stdout.write(`enable it with:\n${next.map((c) => `  ${c}\n`).join("")}`);
}

/**
 * Every value of a repeatable option (citty keeps only the last): `--NAME V`, `--NAME=V`, each
 * possibly comma separated; undefined when the option is not given at all.
 */
export function repeated(rawArgs: string[], name: string): string[] | undefined {
  let out: string[] | undefined;
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--") break;
    let v: string | undefined;
    if (a === name) {
      v = rawArgs[++i];
      if (v === undefined) throw new LjError("usage", "usage", `${name} needs a value`);
    } else if (a.startsWith(`${name}=`)) v = a.slice(name.length + 1);
    else continue;
    out = [...(out ?? []), ...splitList(v)];
  }
  return out;
}
