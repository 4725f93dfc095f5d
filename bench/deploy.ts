/**
 * PaaS benchmark, in one run on this machine:
 *   1. push -> first 200 through the router for a cold deploy (git push of a node app with an
 *      npm dependency, fresh root) and for a redeploy with unchanged dependencies;
 *   2. requests/s and p99 latency against the app directly (its jail address), through the
 *      lightjail router, and through nginx as a reverse proxy to the same instance (when nginx
 *      is installed; with LJ_BENCH_INSTALL=1 the bench apt-installs it), printed as ratios.
 * The server runs as its own process (`lj serve`); the load generator is this process.
 * Usage: sudo bun bench/deploy.ts [--seconds 3] [--rounds 3] [--connections 32]
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startServe } from "../scripts/serve-process.ts";

const project = resolve(import.meta.dir, "..");
const cli = join(project, "src", "cli", "lj.ts");
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const SECONDS = arg("seconds", 3);
/** Targets are measured in alternating rounds (medians reported): background load drifts. */
const ROUNDS = arg("rounds", 3);
const CONNECTIONS = arg("connections", 32);

if (process.getuid?.() !== 0) {
  console.error("bench/deploy.ts needs root (jails)");
  process.exit(77);
}

const root = mkdtempSync(join(tmpdir(), "lj-bench-deploy-"));
const env = { ...process.env, LIGHTJAIL_ROOT: root, LJ_SUBNET: process.env.LJ_SUBNET ?? "10.241.0.0/24" };

async function sh(argv: string[], cwd?: string): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(argv, { cwd, env, stdout: "pipe", stderr: "pipe" });
  const [o, e, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, out: o + e };
}

async function must(argv: string[], cwd?: string): Promise<string> {
  const r = await sh(argv, cwd);
  if (r.code !== 0) throw new Error(`${argv.join(" ")} failed:\n${r.out}`);
  return r.out;
}

const cleanups: (() => Promise<void> | void)[] = [];
async function cleanup() {
  for (const c of cleanups.reverse()) await c();
  rmSync(root, { recursive: true, force: true });
}

try {
  await must([process.execPath, cli, "world", "create", "bench", "--from", "host"]);
  const {
    proc: server,
    url,
    token,
  } = await startServe([process.execPath, cli, "serve", "--port", "0", "--json"], env);
  cleanups.push(async () => {
    server.kill("SIGTERM");
    await server.exited;
  });
  const auth = { authorization: `Bearer ${token}` };
  const host = new URL(url).host;
  await fetch(`${url}/api/v1/apps`, {
    method: "POST",
    headers: { ...auth, "content-type": "application/json" },
    body: JSON.stringify({ name: "bench" }),
  });

  // The app: a node server with an npm dependency, pushed with git.
  const app = mkdtempSync(join(tmpdir(), "lj-bench-app-"));
  cleanups.push(() => rmSync(app, { recursive: true, force: true }));
  await must(["cp", "-r", `${project}/test/fixtures/paas/apps/node-deps/.`, app]);
  const git = (...a: string[]) => must(["git", "-C", app, "-c", "user.email=b@b", "-c", "user.name=b", ...a]);
  await git("init", "-q", "-b", "main");
  await git("add", "-A");
  await git("commit", "-qm", "v1");
  await git("remote", "add", "lj", `http://lj:${token}@${host}/git/bench.git`);

  const firstOk = async (want: string, deadline: number) => {
    for (;;) {
      try {
        const r = await fetch(url, { headers: { host: "bench.localhost" } });
        if (r.status === 200 && (await r.text()).includes(want)) return;
      } catch {}
      if (performance.now() > deadline) throw new Error(`no 200 with ${want} in time`);
      await Bun.sleep(5);
    }
  };
  let t0 = performance.now();
  await git("push", "-q", "lj", "main");
  await firstOk("(v1)", t0 + 300_000);
  const cold = performance.now() - t0;
  writeFileSync(join(app, "CHANGELOG"), "unchanged dependencies, changed code\n");
  await git("add", "-A");
  await git("commit", "-qm", "v2");
  t0 = performance.now();
  await git("push", "-q", "lj", "main");
  await firstOk("(v2)", t0 + 300_000);
  const redeploy = performance.now() - t0;

  // Load: keep-alive connections, each doing requests back to back.
  const ps = (await (await fetch(`${url}/api/v1/apps/bench/ps`, { headers: auth })).json()) as {
    processes: { address: string }[];
  };
  const direct = `http://${ps.processes[0]!.address}:5000/`;
  const load = async (target: string, headers: Record<string, string> = {}) => {
    const lat: number[] = [];
    let errors = 0;
    const end = performance.now() + SECONDS * 1000;
    // Warm-up: connections open, JIT warm.
    await Promise.all(
      Array.from({ length: CONNECTIONS }, () => fetch(target, { headers }).then((r) => r.text())),
    );
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        while (performance.now() < end) {
          const s = performance.now();
          try {
            const r = await fetch(target, { headers });
            await r.arrayBuffer();
            if (r.status !== 200) errors++;
            else lat.push(performance.now() - s);
          } catch {
            errors++;
          }
        }
      }),
    );
    lat.sort((a, b) => a - b);
    return { rps: lat.length / SECONDS, p99: lat[Math.floor(lat.length * 0.99)] ?? Number.NaN, errors };
  };

  const targets: [string, () => Promise<{ rps: number; p99: number; errors: number }>][] = [
    ["direct", () => load(direct)],
    ["router", () => load(url, { host: "bench.localhost" })],
  ];

  let nginx = Bun.which("nginx");
  if (!nginx && process.env.LJ_BENCH_INSTALL === "1") {
    await sh(["apt-get", "install", "-y", "--no-install-recommends", "nginx-light"]);
    nginx = Bun.which("nginx") ?? ((await Bun.file("/usr/sbin/nginx").exists()) ? "/usr/sbin/nginx" : null);
  }
  if (nginx) {
    const ndir = join(root, "nginx");
    await must(["mkdir", "-p", ndir]);
    const port = 20000 + Math.floor(Math.random() * 20000);
    writeFileSync(
      join(ndir, "nginx.conf"),
      `worker_processes 1;
pid ${ndir}/nginx.pid;
error_log ${ndir}/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server ${ps.processes[0]!.address}:5000; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; }
  }
}
`,
    );
    await must([nginx, "-c", join(ndir, "nginx.conf"), "-p", ndir]);
    cleanups.push(async () => {
      await sh([nginx!, "-c", join(ndir, "nginx.conf"), "-p", ndir, "-s", "stop"]);
    });
    await Bun.sleep(200);
    targets.push(["nginx", () => load(`http://127.0.0.1:${port}/`)]);
  }
  const runs: Record<string, { rps: number; p99: number; errors: number }[]> = {};
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, fn] of targets) {
      runs[name] ??= [];
      runs[name].push(await fn());
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const results: Record<string, { rps: number; p99: number; errors: number }> = {};
  for (const [name, rs] of Object.entries(runs)) {
    results[name] = {
      rps: median(rs.map((r) => r.rps)),
      p99: median(rs.map((r) => r.p99)),
      errors: rs.reduce((n, r) => n + r.errors, 0),
    };
  }

  const f = (n: number) => n.toFixed(0);
  console.log(`deploy (node app with an npm dependency, git push -> first 200 through the router):`);
  console.log(`  cold deploy:                          ${(cold / 1000).toFixed(2)} s`);
  console.log(`  redeploy, unchanged dependencies:     ${(redeploy / 1000).toFixed(2)} s  (target < 5 s)`);
  console.log(
    `router (${CONNECTIONS} keep-alive connections, medians of ${ROUNDS} alternating ${SECONDS} s rounds, load generator in this process):`,
  );
  for (const [k, v] of Object.entries(results)) {
    console.log(
      `  ${k.padEnd(8)} ${f(v.rps).padStart(7)} req/s  p99 ${v.p99.toFixed(2)} ms  errors ${v.errors}`,
    );
  }
  console.log(`  router / direct throughput: ${(results.router!.rps / results.direct!.rps).toFixed(2)}x`);
  if (results.nginx) {
    console.log(
      `  router / nginx throughput:  ${(results.router!.rps / results.nginx.rps).toFixed(2)}x  (target >= 0.7x; nginx: 1 worker, upstream keepalive)`,
    );
    console.log(`  router / nginx p99 latency: ${(results.router!.p99 / results.nginx.p99).toFixed(2)}x`);
  } else {
    console.log("  nginx is not installed: no comparison (LJ_BENCH_INSTALL=1 installs it with apt)");
  }
} finally {
  await cleanup();
}
