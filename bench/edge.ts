/**
 * The edge against nginx: one small node app behind (a) nothing, (b) nginx with an upstream
 * keep-alive pool, (c) lightjail's edge as lj serve runs it with `--edge nginx` (its own nginx,
 * configured from its tables: src/server/edge/nginx.ts), and (d) the built-in edge (Bun worker
 * processes), over HTTP and HTTPS, each measured with wrk (2 threads, 50 connections, 8 s). The
 * yardstick nginx and both edges run as many workers (one per core), started afresh every
 * round (where a proxy's workers settle for its life weighs more than a round's noise), each
 * with a keep-alive pool toward the app larger than the 50 connections (the yardstick 64 idle
 * connections per worker, the edges their defaults), and both nginx write an access log the
 * same way (4 KiB buffers flushed every 250 ms). The edges' workers are scheduled as lj serve
 * schedules them (src/server/edge/scheduling.ts), the yardstick's at nginx's defaults. Each run
 * also counts the context switches of the proxy's processes and the app's per request. Then,
 * with strace, each proxy's system calls per request, a count the machine's other load does not
 * move. The last line is JSON: lj/nginx ratios of requests/s and p99 for the nginx edge
 * (`http`, `https`) and the built-in one (`builtin`), the CPU time, the context switches and
 * the system calls per request.
 *
 *   bun bench/edge.ts [--duration 8] [--connections 50] [--edge-workers N] [--rounds R]
 *     (--edge-workers 0: the built-in edge in one process; --rounds: the peers alternate R
 *     times, and the JSON gives the median of the per-round ratios; --nginx-log off: the
 *     yardstick without an access log; --edge nginx|builtin: --churn against that one;
 *     --edge-plain: the edges' workers at the default priority and policy, not scheduling.ts's;
 *     --spin N: N processes that never block share the CPUs throughout; --jail: the app in a
 *     jail with a private address, as lj serve runs it, instead of on loopback)
 *   bun bench/edge.ts --churn [--connections 1500] [--duration 30]   # non-2xx, wrk timeouts, another
 *     app's p50 and lj serve's own listener's, requests the nginx edge overflowed to lj serve
 *
 * Needs wrk, nginx, node, openssl and strace (scripts/bootstrap.sh installs them). Loopback only.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { Subprocess } from "bun";
import { CertManager } from "../src/server/edge/certs.ts";
import { Edge } from "../src/server/edge/edge.ts";
import { findNginx, NginxEdge } from "../src/server/edge/nginx.ts";
import { Router } from "../src/server/edge/router.ts";
import { EdgeWorkers } from "../src/server/edge/workers.ts";
import { timedRequests } from "../test/helpers/calm.ts";

const { values: a } = parseArgs({
  options: {
    duration: { type: "string" },
    connections: { type: "string" },
    churn: { type: "boolean", default: false },
    "edge-workers": { type: "string" },
    rounds: { type: "string" },
    "nginx-log": { type: "string" },
    edge: { type: "string" },
    "edge-plain": { type: "boolean", default: false },
    jail: { type: "boolean", default: false },
    spin: { type: "string" },
  },
});
// --edge-plain: both edges' workers at lj serve's own priority and policy (scheduling.ts).
const scheduling = a["edge-plain"] ? { nice: 0, batch: false } : undefined;
const cores = availableParallelism();
const workerCount = Number(a["edge-workers"] ?? cores);
const rounds = Number(a.rounds ?? 1);
// nginx writes an access log as the edge does (buffered, as the edge batches its lines).
const nginxLog = (a["nginx-log"] ?? "on") !== "off";
const churn = a.churn!;
const duration = Number(a.duration ?? (churn ? 30 : 8));
const conns = Number(a.connections ?? (churn ? 1500 : 50));
const dir = mkdtempSync(join(tmpdir(), "lj-edge-bench-"));
const procs: Subprocess[] = [];

const free = () => {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const p = s.port!;
  s.stop(true);
  return p;
};

async function waitPort(port: number, hostname = "127.0.0.1"): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      (await Bun.connect({ hostname, port, socket: { data() {} } })).end();
      return;
    } catch {
      await Bun.sleep(25);
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

/** The first app's process (in a jail: the node inside it), whose context switches count. */
let appPid = 0;

const nodeScript = (host: string, port: number) =>
  `require("http").createServer((q,s)=>{s.writeHead(200,{"content-type":"text/plain"});s.end("hello from node\\n")}).listen(${port},"${host}")`;

/** --jail: the apps run in jails of a root of the bench's own (a world from the host). */
const jailRoot = a.jail ? mkdtempSync(join(tmpdir(), "lj-edge-bench-root-")) : null;
const jailEnv = { ...process.env, LIGHTJAIL_ROOT: jailRoot ?? "", LJ_SUBNET: "10.239.8.0/24" };
const lj = join(import.meta.dir, "..", "lj");
let jailed = 0;

/** The pids under `pid` (a jail's keeper and payload under lj spawn). */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      parent.set(Number(d), Number(readFileSync(`/proc/${d}/stat`, "utf8").split(") ")[1]!.split(" ")[1]));
    } catch {}
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parent) {
      if (pp !== p) continue;
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/**
 * The small node app: on loopback, or with --jail in a jail with a private address (its own
 * cgroups and network namespace, reached over its veth, as lj serve runs an app).
 */
async function startApp(): Promise<{ address: string; port: number }> {
  if (!jailRoot) {
    const port = free();
    const p = Bun.spawn(["node", "-e", nodeScript("127.0.0.1", port)], {
      stdout: "ignore",
      stderr: "inherit",
    });
    procs.push(p);
    appPid ||= p.pid;
    await waitPort(port);
    return { address: "127.0.0.1", port };
  }
  if (jailed === 0) {
    const w = Bun.spawnSync([lj, "world", "create", "bench", "--from", "host"], {
      env: jailEnv,
      stderr: "pipe",
    });
    if (w.exitCode !== 0) throw new Error(`lj world create: ${w.stderr}`);
  }
  const address = `10.239.8.${10 + jailed++}`;
  const p = Bun.spawn(
    [
      lj,
      "spawn",
      "--world",
      "bench",
      "-i",
      address,
      "-m",
      "512",
      "--",
      Bun.which("node")!,
      "-e",
      nodeScript("0.0.0.0", 5000),
    ],
    { env: jailEnv, stdout: "ignore", stderr: "inherit" },
  );
  procs.push(p);
  await waitPort(5000, address);
  appPid ||= descendants(p.pid).find((d) => readFileSync(`/proc/${d}/comm`, "utf8").trim() === "node") ?? 0;
  return { address, port: 5000 };
}

function selfSigned(name: string): { cert: string; key: string } {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  const r = Bun.spawnSync(
    [
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-subj",
      `/CN=${name}`,
      "-addext",
      `subjectAltName=DNS:${name}`,
      "-days",
      "2",
    ],
    { stderr: "pipe" },
  );
  if (r.exitCode !== 0) throw new Error(`openssl: ${r.stderr}`);
  return { cert, key };
}

/**
 * CPU seconds (user + system, every thread) the processes used so far; null without /proc.
 * Per request it says what each proxy costs the machine, steady even when the machine is busy.
 */
function cpuSeconds(pids: number[]): number | null {
  let ticks = 0;
  try {
    for (const p of pids) {
      const f = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ");
      ticks += Number(f[11]) + Number(f[12]);
    }
  } catch {
    return null;
  }
  return ticks / 100;
}

/**
 * Context switches (voluntary and not, every thread) of the processes so far; null without
 * /proc. Per request, with the app's, it says how many requests each turn on a CPU carries.
 */
function contextSwitches(pids: number[]): number | null {
  let n = 0;
  try {
    for (const p of pids)
      for (const t of readdirSync(`/proc/${p}/task`)) {
        const st = readFileSync(`/proc/${p}/task/${t}/status`, "utf8");
        for (const m of st.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) n += Number(m[1]);
      }
  } catch {
    return null;
  }
  return n;
}

/** The process and its children (nginx: the master and its workers). */
const withChildren = (pid: number) => [pid, ...descendants(pid)];

let nginxPid = 0;

function startNginx(
  app: { address: string; port: number },
  http: number,
  https: number,
  tls: { cert: string; key: string },
): void {
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `worker_processes auto;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx.err;
daemon off;
events { worker_connections 8192; }
http {
  ${nginxLog ? `access_log ${dir}/nginx-access.log combined buffer=4k flush=250ms;` : "access_log off;"}
  upstream app { server ${app.address}:${app.port}; keepalive 64; keepalive_timeout 4s; }
  server {
    listen 127.0.0.1:${http};
    listen 127.0.0.1:${https} ssl;
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Real-IP $remote_addr;
    }
  }
}
`,
  );
  const p = Bun.spawn(["nginx", "-c", conf, "-p", dir], { stdout: "ignore", stderr: "inherit" });
  nginxPid = p.pid;
  procs.push(p);
  stopNginx = async () => {
    p.kill("SIGTERM");
    await p.exited;
  };
}

let stopNginx = async () => {};

interface Wrk {
  /** The proxy's CPU time per request (µs), when /proc tells. */
  cpuUs?: number;
  /** Context switches per request of the proxy's processes and the app's, when /proc tells. */
  switches?: number;
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** wrk's socket errors by kind. */
  errorKinds: string;
  requests: number;
}

const ms = (v: string, unit: string) => Number(v) * (unit === "us" ? 0.001 : unit === "s" ? 1000 : 1);

async function wrk(url: string, host: string, c = conns, d = duration): Promise<Wrk> {
  const p = Bun.spawn(["wrk", "-t2", `-c${c}`, `-d${d}s`, "--latency", "-H", `Host: ${host}`, url], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = await new Response(p.stdout).text();
  await p.exited;
  const lat = (q: string) => {
    const m = new RegExp(`${q}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    return m ? ms(m[1]!, m[2]!) : Number.NaN;
  };
  const err = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
    p50: lat("50"),
    p99: lat("99"),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    errors: err ? err.slice(1).reduce((n, x) => n + Number(x), 0) : 0,
    errorKinds: err ? `connect ${err[1]}, read ${err[2]}, write ${err[3]}, timeout ${err[4]}` : "",
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
  };
}

/**
 * System calls per request of the processes `pids` (a proxy's processes) while wrk
 * sends 3 s of requests through them.
 */
async function syscallsPerRequest(name: string, url: string, host: string, pids: number[]): Promise<number> {
  const st = Bun.spawn(["strace", "-c", "-f", ...pids.flatMap((p) => ["-p", String(p)])], {
    stdout: "ignore",
    stderr: "pipe",
  });
  await Bun.sleep(300);
  const r = await wrk(url, host, conns, 3);
  st.kill("SIGINT");
  const summary = await new Response(st.stderr).text();
  await st.exited;
  const total = /^\s*[\d.]+\s+[\d.]+\s+\d*\s*(\d+)\s+(?:\d+\s+)?total$/m.exec(summary);
  if (!total || r.requests === 0) throw new Error(`strace counted nothing for ${url}:\n${summary}`);
  const perRequest = Number(total[1]) / r.requests;
  console.log(`${name.padEnd(12)} ${perRequest.toFixed(2)} system calls per request`);
  return Number(perRequest.toFixed(2));
}

type Routes = Record<string, { address: string; port: number }[]>;

/**
 * An edge as lj serve runs it: its nginx (`--edge nginx`), or the built-in one in worker
 * processes on shared ports (or, with --edge-workers 0, in this process).
 */
async function startEdge(
  kind: "nginx" | "builtin",
  routes: Routes,
  domains: Record<string, string>,
  domain: string,
  certs: CertManager | null,
): Promise<{
  port: number;
  httpsPort: number | undefined;
  pids(): number[];
  /** Requests lj serve's overflow listener took (the nginx edge's, beyond its per-instance bound). */
  overflowed?(): number;
  stop(): Promise<void>;
}> {
  const other = () => new Response("not an app", { status: 404 });
  if (kind === "nginx") {
    const e = await NginxEdge.start({
      nginx: findNginx()!,
      prefix: join(dir, "lj-nginx"),
      hostname: "127.0.0.1",
      port: 0,
      httpsPort: certs ? 0 : undefined,
      domain,
      maxBodyBytes: 1 << 30,
      maxRequestBodySize: 1 << 30,
      workers: String(Math.max(1, workerCount)),
      scheduling,
      routes: () => routes,
      domains: () => domains,
      certs: certs ?? undefined,
      other,
      accessLog: join(dir, "lj-access.log"),
      log: (line) => console.error(line),
    });
    return {
      port: e.port,
      httpsPort: e.httpsPort,
      pids: () => withChildren(e.pid!),
      overflowed: () => e.overflow.taken,
      stop: () => e.stop(),
    };
  }
  if (workerCount > 0) {
    const w = await EdgeWorkers.start({
      count: workerCount,
      scheduling,
      hostname: "127.0.0.1",
      port: 0,
      httpsPort: certs ? 0 : undefined,
      domain,
      maxRequestBodySize: 1 << 30,
      routes: () => routes,
      domains: () => domains,
      certs: certs ?? undefined,
      other,
      access: () => {},
      log: (line) => console.error(line),
    });
    await w.synced();
    for (let i = 0; certs && i < 200 && w.httpsPort === undefined; i++) await Bun.sleep(25);
    return {
      port: w.port,
      httpsPort: w.httpsPort,
      pids: () => w.stats().flatMap((s) => (s.pid ? [s.pid] : [])),
      stop: () => w.stop(),
    };
  }
  const router = new Router({
    domain,
    targets: (app) => routes[app] ?? null,
    domains: { appFor: (h) => domains[h] ?? null },
  });
  const e = new Edge({
    hostname: "127.0.0.1",
    port: 0,
    httpsPort: certs ? 0 : undefined,
    router,
    certs: certs ?? undefined,
    other,
    maxRequestBodySize: 1 << 30,
  });
  return {
    port: e.http.port!,
    httpsPort: e.httpsPort,
    pids: () => [process.pid],
    stop: async () => e.stop(),
  };
}

async function main() {
  // --spin N: N processes that never block (a tenant's app spinning) share the CPUs throughout.
  for (let i = 0; i < Number(a.spin ?? 0); i++)
    procs.push(Bun.spawn(["sh", "-c", "while :; do :; done"], { stdout: "ignore" }));
  const domain = "bench.test";
  const app = await startApp();

  if (churn) {
    const calm = await startApp();
    const edge = await startEdge(
      a.edge === "builtin" ? "builtin" : "nginx",
      { web: [app], calm: [calm] },
      {},
      domain,
      null,
    );
    const port = edge.port;
    const load = wrk(`http://127.0.0.1:${port}/`, `web.${domain}`);
    await Bun.sleep(2000);
    // The other app, and lj serve's own listener (the API's; it answers 404 here) in the process
    // that also runs the nginx edge's overflow router, as lj serve does.
    const [times, api] = await Promise.all([
      timedRequests(`http://127.0.0.1:${port}/`, `calm.${domain}`, (duration - 4) * 1000),
      timedRequests(`http://127.0.0.1:${port}/`, "127.0.0.1", (duration - 4) * 1000, 20, 404),
    ]);
    const w = await load;
    const q = (xs: number[], f: number) => {
      const sorted = [...xs].sort((x, y) => x - y);
      return Number(sorted[Math.floor(f * (sorted.length - 1))]!.toFixed(2));
    };
    const overflowed = edge.overflowed?.();
    await edge.stop();
    // The edge's own access log says which statuses the non-2xx answers were.
    const statuses: Record<string, number> = {};
    for (const line of readFileSync(join(dir, "lj-access.log"), "utf8").split("\n")) {
      const status = / web \S+ \S+ (\d{3}) /.exec(line)?.[1];
      if (status && status[0] !== "2") statuses[status] = (statuses[status] ?? 0) + 1;
    }
    const res = {
      edge: a.edge === "builtin" ? "builtin" : "nginx",
      connections: conns,
      seconds: duration,
      requests: w.requests,
      rps: Math.round(w.rps),
      non2xx: w.non2xx,
      ...(w.non2xx ? { non2xxByStatus: statuses } : {}),
      socketErrors: w.errors,
      ...(w.errors ? { socketErrorKinds: w.errorKinds } : {}),
      calm: { samples: times.length, p50Ms: q(times, 0.5), p99Ms: q(times, 0.99) },
      api: { samples: api.length, p50Ms: q(api, 0.5), p99Ms: q(api, 0.99) },
      ...(overflowed === undefined ? {} : { overflowed }),
      loadavg: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
    };
    console.log(JSON.stringify(res));
    return;
  }

  // HTTP goes to web.<domain>; HTTPS to secure.example, a custom domain of the same app with a
  // certificate (the edges send plain HTTP for that one to HTTPS, as lj serve does).
  const secure = "secure.example";
  const tls = selfSigned(secure);
  const certs = new CertManager({
    dir: join(dir, "certs"),
    wanted: () => [secure],
    log: () => {},
    onChange: () => {},
  });
  certs.put(secure, await Bun.file(tls.cert).text(), await Bun.file(tls.key).text());
  const target = [app];
  const domains = { [secure]: "web" };
  const [nh, ns] = [free(), free()];
  const startAll = async () => {
    const started = {
      edge: await startEdge("nginx", { web: target }, domains, domain, certs),
      builtin: await startEdge("builtin", { web: target }, domains, domain, certs),
    };
    startNginx(app, nh, ns, tls);
    await waitPort(nh);
    await waitPort(ns);
    return started;
  };
  let { edge, builtin } = await startAll();

  const host = `web.${domain}`;
  const results: Record<string, Wrk[]> = {};
  const ngPids = () => withChildren(nginxPid);
  /** The proxies as they run now (an edge started afresh listens on new ports). */
  type Peer = [name: string, url: string, host: string, pids: () => number[]];
  const proxies = (): { http: Peer[]; https: Peer[] } => ({
    http: [
      ["nginx", `http://127.0.0.1:${nh}/`, host, ngPids],
      ["lj", `http://127.0.0.1:${edge.port}/`, host, edge.pids],
      ["builtin", `http://127.0.0.1:${builtin.port}/`, host, builtin.pids],
    ],
    https: [
      ["nginx-https", `https://127.0.0.1:${ns}/`, secure, ngPids],
      ["lj-https", `https://127.0.0.1:${edge.httpsPort}/`, secure, edge.pids],
      ["builtin-https", `https://127.0.0.1:${builtin.httpsPort}/`, secure, builtin.pids],
    ],
  });
  const run = async (name: string, url: string, h: string, procsOf: () => number[] = () => []) => {
    const pids = procsOf();
    const c0 = cpuSeconds(pids);
    const s0 = contextSwitches([...pids, appPid]);
    const r = await wrk(url, h);
    const c1 = cpuSeconds(pids);
    const s1 = contextSwitches([...pids, appPid]);
    if (pids.length > 0 && c0 !== null && c1 !== null && r.requests > 0)
      r.cpuUs = ((c1 - c0) * 1e6) / r.requests;
    if (pids.length > 0 && s0 !== null && s1 !== null && r.requests > 0) r.switches = (s1 - s0) / r.requests;
    results[name] = [...(results[name] ?? []), r];
    console.log(
      `${name.padEnd(12)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  non-2xx ${r.non2xx}  socket errors ${r.errors}${r.cpuUs === undefined ? "" : `  proxy cpu ${r.cpuUs.toFixed(1)} us/req`}${r.switches === undefined ? "" : `  switches ${r.switches.toFixed(2)}/req`}`,
    );
  };
  // Rounds alternate the peers, so that a busy spell on the machine hits both alike.
  // Within a round the order of the proxies flips every other round: none always runs first
  // (or right after the app was warmed up by another).
  // Every round starts the proxies afresh: where their workers (and wrk's threads) settle
  // for the life of a process weighs more than the rounds' noise.
  // Requests the nginx edge sent on to lj serve's overflow listener (beyond its per-instance bound).
  let overflowed = 0;
  for (let i = 0; i < rounds; i++) {
    if (i > 0) {
      overflowed += edge.overflowed?.() ?? 0;
      await edge.stop();
      await builtin.stop();
      await stopNginx();
      ({ edge, builtin } = await startAll());
    }
    await run("direct", `http://${app.address}:${app.port}/`, host);
    const { http, https } = proxies();
    if (i % 2 === 1) {
      http.reverse();
      https.reverse();
    }
    for (const [name, url, h, pids] of [...http, ...https]) await run(name, url, h, pids);
  }
  // What each proxy asks of the kernel per request, counted with strace (slower while it
  // counts, but the count per request does not depend on how busy the machine is).
  const census: Record<string, number> = {};
  if (Bun.which("strace")) {
    const { http, https } = proxies();
    for (const [name, url, h, pids] of [...http, ...https])
      census[name] = await syscallsPerRequest(name, url, h, pids());
  }
  overflowed += edge.overflowed?.() ?? 0;
  await edge.stop();
  await builtin.stop();
  const median = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y);
    const m = s.length >> 1;
    return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
  };
  const two = (x: number) => Number(x.toFixed(2));
  // Ratios per round (the two ran a few seconds apart), then their median.
  const ratios = (lj: string, peer: string, key: "rps" | "p99") =>
    two(median(results[lj]!.map((r, i) => r[key] / results[peer]![i]![key])));
  const med = (key: "rps" | "p99" | "cpuUs" | "switches") =>
    Object.fromEntries(
      Object.entries(results)
        .filter(([, v]) => v.every((r) => r[key] !== undefined))
        .map(([k, v]) => [k, two(median(v.map((r) => r[key]!)))]),
    );
  console.log(
    JSON.stringify({
      http: { rpsRatio: ratios("lj", "nginx", "rps"), p99Ratio: ratios("lj", "nginx", "p99") },
      https: {
        rpsRatio: ratios("lj-https", "nginx-https", "rps"),
        p99Ratio: ratios("lj-https", "nginx-https", "p99"),
      },
      edge: "nginx",
      builtin: {
        http: { rpsRatio: ratios("builtin", "nginx", "rps"), p99Ratio: ratios("builtin", "nginx", "p99") },
        https: {
          rpsRatio: ratios("builtin-https", "nginx-https", "rps"),
          p99Ratio: ratios("builtin-https", "nginx-https", "p99"),
        },
      },
      rounds,
      nginxAccessLog: nginxLog,
      cores,
      edgeWorkers: workerCount,
      rps: med("rps"),
      p99Ms: med("p99"),
      proxyCpuUsPerRequest: med("cpuUs"),
      contextSwitchesPerRequest: med("switches"),
      syscallsPerRequest: census,
      ljOverflowed: overflowed,
      loadavg: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
    }),
  );
}

try {
  await main();
} finally {
  for (const p of procs) p.kill();
  await Promise.all(procs.map((p) => p.exited));
  rmSync(dir, { recursive: true, force: true });
  if (jailRoot) {
    // The root's filter table and leases go with it.
    Bun.spawnSync([lj, "gc"], { env: jailEnv, stdout: "ignore" });
    Bun.spawnSync(["rm", "-rf", jailRoot]);
  }
}
