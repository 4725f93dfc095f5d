/**
 * Density: N instances of a small real server (the static plugin's Perl server, serving a
 * deployed site) under one `lj serve`, every one with its private address, all answering
 * through the edge. Reports the time to start them all (the scale requests until every
 * instance is up and answering), `lj serve`'s RSS, the memory charged per instance (its memory
 * cgroup, median) and the machine's memory per instance, and the edge's p50/p99 while they run,
 * against the same requests sent to the instances' own addresses (the edge's cost as a ratio).
 *
 *   sudo bun bench/density.ts [--count 500] [--requests 4] [--connections 16]
 *
 * Instances are spread over apps of at most 100 (the formation's limit per process type). The
 * last line is JSON. Uses its own root and subnet (10.242.0.0/22); loopback and jails only.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { startServe } from "../scripts/serve-process.ts";

const { values: a } = parseArgs({
  options: {
    count: { type: "string" },
    requests: { type: "string" },
    connections: { type: "string" },
  },
});
const COUNT = Number(a.count ?? 500);
const PER_INSTANCE = Number(a.requests ?? 4);
const CONNECTIONS = Number(a.connections ?? 16);
const PER_APP = 100;

if (process.getuid?.() !== 0) {
  console.error("bench/density.ts needs root (jails)");
  process.exit(77);
}

const project = resolve(import.meta.dir, "..");
const cli = join(project, "src", "cli", "lj.ts");
const root = mkdtempSync(join(tmpdir(), "lj-bench-density-"));
const env = { ...process.env, LIGHTJAIL_ROOT: root, LJ_SUBNET: process.env.LJ_SUBNET ?? "10.242.0.0/22" };

function must(argv: string[]): string {
  const p = Bun.spawnSync(argv, { env, stdout: "pipe", stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`${argv.join(" ")} failed:\n${p.stdout}${p.stderr}`);
  return p.stdout.toString();
}

const memAvailable = () => {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"));
  return Number(m?.[1] ?? 0) * 1024;
};
const rssOf = (pid: number) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) * 1024;
};
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))] ?? Number.NaN;
};
const mib = (b: number) => b / 1024 / 1024;

type Ps = {
  processes: { name: string; state: string; address: string | null; memoryBytes: number | null }[];
};

must([process.execPath, cli, "world", "create", "density", "--from", "host"]);
const {
  proc: server,
  url,
  token,
} = await startServe([process.execPath, cli, "serve", "--port", "0", "--json"], env);
const auth = { authorization: `Bearer ${token}` };
const api = async (method: string, path: string, body?: unknown) => {
  const r = await fetch(`${url}${path}`, {
    method,
    headers: { ...auth, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.json();
};

try {
  // The site: the static-plain fixture, deployed to each app as a tarball.
  const tarball = join(root, "site.tar.gz");
  must([
    "tar",
    "-czf",
    tarball,
    "-C",
    join(project, "test", "fixtures", "paas", "apps", "static-plain"),
    ".",
  ]);
  const apps = Array.from({ length: Math.ceil(COUNT / PER_APP) }, (_, i) => `d${i}`);
  for (const app of apps) {
    await api("POST", "/api/v1/apps", { name: app });
    const r = await fetch(`${url}/api/v1/apps/${app}/source?wait=json`, {
      method: "PUT",
      headers: { ...auth, "content-type": "application/gzip" },
      body: Bun.file(tarball),
    });
    const d = (await r.json()) as { deploy?: { status: string; log: string[] } };
    if (d.deploy?.status !== "succeeded")
      throw new Error(`deploy of ${app}: ${JSON.stringify(d).slice(0, 2000)}`);
  }
  const share = (i: number) => Math.min(PER_APP, COUNT - i * PER_APP);
  const ps = async () =>
    (await Promise.all(apps.map((app) => api("GET", `/api/v1/apps/${app}/ps`) as Promise<Ps>))).flatMap(
      (p) => p.processes,
    );
  // A deploy starts web=1 of each app; the rest start from here.
  const memBefore = memAvailable();
  const t0 = performance.now();
  await Promise.all(apps.map((app, i) => api("PATCH", `/api/v1/apps/${app}/formation`, { web: share(i) })));
  for (;;) {
    const procs = await ps();
    const up = procs.filter((p) => p.state === "up").length;
    if (up === COUNT) break;
    const bad = procs.filter((p) => p.state === "crashed" || p.state === "crash-loop");
    if (bad.length) throw new Error(`instances failed: ${bad.map((p) => p.name).join(", ")}`);
    if (performance.now() - t0 > 30 * 60_000) throw new Error(`only ${up} of ${COUNT} up after 30 minutes`);
    await Bun.sleep(200);
  }
  const startMs = performance.now() - t0;
  const procs = await ps();

  // Requests: through the edge (round robin over each app's instances), and straight to each
  // instance's address, CONNECTIONS at a time.
  const load = async (targets: { url: string; host?: string }[]) => {
    const lat: number[] = [];
    let errors = 0;
    let next = 0;
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        while (next < targets.length) {
          const t = targets[next++]!;
          const s = performance.now();
          try {
            const r = await fetch(t.url, t.host ? { headers: { host: t.host } } : {});
            await r.arrayBuffer();
            if (r.status === 200) lat.push(performance.now() - s);
            else errors++;
          } catch {
            errors++;
          }
        }
      }),
    );
    return { p50: pct(lat, 0.5), p99: pct(lat, 0.99), errors, requests: targets.length };
  };
  // Interleaved, so that the connections spread over the instances (each serves one request at
  // a time) rather than queue at a few.
  const rounds = <T>(items: T[], n: number) => Array.from({ length: n }, () => items).flat();
  const viaEdge = rounds(
    apps.flatMap((app, i) => Array.from({ length: share(i) }, () => ({ url, host: `${app}.localhost` }))),
    PER_INSTANCE,
  );
  const direct = rounds(
    procs.map((p) => ({ url: `http://${p.address}:5000/` })),
    PER_INSTANCE,
  );
  await load(viaEdge.slice(0, CONNECTIONS * 4)); // warm-up: connections and JIT
  const edge = await load(viaEdge);
  const straight = await load(direct);
  const charged = procs.map((p) => p.memoryBytes ?? 0).filter((b) => b > 0);
  const result = {
    instances: COUNT,
    apps: apps.length,
    start_all_s: startMs / 1000,
    serve_rss_mib: mib(rssOf(server.pid)),
    charged_per_instance_mib: mib(pct(charged, 0.5)),
    machine_per_instance_mib: mib((memBefore - memAvailable()) / (COUNT - apps.length)),
    edge_ms: { p50: edge.p50, p99: edge.p99, errors: edge.errors, requests: edge.requests },
    direct_ms: { p50: straight.p50, p99: straight.p99, errors: straight.errors, requests: straight.requests },
    ratios: { edge_over_direct_p50: edge.p50 / straight.p50, edge_over_direct_p99: edge.p99 / straight.p99 },
  };
  console.log(
    `${COUNT} instances in ${apps.length} apps up and answering in ${result.start_all_s.toFixed(1)} s`,
  );
  console.log(
    `lj serve RSS ${result.serve_rss_mib.toFixed(0)} MiB; per instance: charged ${result.charged_per_instance_mib.toFixed(2)} MiB, machine ${result.machine_per_instance_mib.toFixed(2)} MiB`,
  );
  console.log(
    `edge p50 ${edge.p50.toFixed(2)} ms p99 ${edge.p99.toFixed(2)} ms (${edge.errors} errors); direct p50 ${straight.p50.toFixed(2)} p99 ${straight.p99.toFixed(2)}`,
  );
  console.log(JSON.stringify(result));
  if (edge.errors || straight.errors) process.exitCode = 1;
} finally {
  server.kill("SIGTERM");
  await server.exited;
  rmSync(root, { recursive: true, force: true });
}
