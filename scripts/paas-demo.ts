/**
 * The PaaS demo: starts `lj serve` on loopback in a throwaway root, deploys a sample node app
 * by `git push` and then by tarball (`lj deploy`), shows it answering through the router,
 * scales it, changes its config, rolls back, and stops everything. Needs root (jails).
 * Usage: sudo bun scripts/paas-demo.ts
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startServe } from "./serve-process.ts";

const project = resolve(import.meta.dir, "..");
const cli = join(project, "src", "cli", "lj.ts");
const color = process.stdout.isTTY;
const bold = (s: string) => (color ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (color ? `\x1b[2m${s}\x1b[0m` : s);

if (process.getuid?.() !== 0) {
  console.error("the PaaS demo needs root (it runs jails): sudo ./lj ... or sudo bun scripts/paas-demo.ts");
  process.exit(77);
}

const root = mkdtempSync(join(tmpdir(), "lj-paas-demo-"));
const app = mkdtempSync(join(tmpdir(), "lj-paas-demo-app-"));
const env: Record<string, string> = {
  ...(process.env as Record<string, string>),
  LIGHTJAIL_ROOT: root,
  LJ_SUBNET: process.env.LJ_SUBNET ?? "10.242.0.0/24",
  GIT_TERMINAL_PROMPT: "0",
};
let server: { kill(sig?: number | NodeJS.Signals): void; exited: Promise<number> } | null = null;
let failed = false;

function step(title: string) {
  process.stdout.write(`\n${bold(`==> ${title}`)}\n`);
}

/** Runs a command, echoing it and its output (indented). */
async function show(argv: string[], opts: { cwd?: string; label?: string } = {}): Promise<string> {
  process.stdout.write(`${dim(`$ ${opts.label ?? argv.join(" ")}`)}\n`);
  const p = Bun.spawn(argv, { cwd: opts.cwd, env, stdout: "pipe", stderr: "pipe" });
  let all = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const c of s) {
      const t = dec.decode(c, { stream: true });
      all += t;
      process.stdout.write(t.replace(/^(?=.)/gm, "  "));
    }
  };
  await Promise.all([pump(p.stdout), pump(p.stderr)]);
  const code = await p.exited;
  if (code !== 0) throw new Error(`${opts.label ?? argv.join(" ")} exited with ${code}`);
  return all;
}

// In the app's directory, never in a checkout the demo was started from (`apps create` would
// add its remote there).
const lj = (args: string[]) =>
  show([process.execPath, cli, ...args], { cwd: app, label: `lj ${args.join(" ")}` });

async function curl(url: string, host: string): Promise<string> {
  const r = await fetch(url, { headers: { host } });
  const body = (await r.text()).trim();
  process.stdout.write(`${dim(`$ curl -H 'Host: ${host}' ${url}`)}\n  ${r.status} ${body}\n`);
  return body;
}

try {
  step("A world for the jails (the host's /usr, shared read-only)");
  await lj(["world", "create", "demo", "--from", "host"]);

  step("Start the server on loopback");
  const started = await startServe([process.execPath, cli, "serve", "--port", "0", "--json"], env);
  server = started.proc;
  const { url, token } = started;
  env.LJ_REMOTE = url;
  env.LJ_TOKEN = token;
  const host = new URL(url).host;
  process.stdout.write(
    `  lj serve is listening on ${url}; the API token was made on first start (mode 0600)\n`,
  );

  step("Create an app");
  await lj(["apps", "create", "hello"]);

  step("A sample node app, pushed with git: the build log arrives as remote: lines");
  writeFileSync(
    join(app, "package.json"),
    `${JSON.stringify({ name: "hello", version: "1.0.0", private: true, scripts: { start: "node server.js" } }, null, 2)}\n`,
  );
  const server_js = (greeting: string) =>
    [
      'const http = require("node:http");',
      "http",
      "  .createServer((req, res) =>",
      `    res.end(\`${greeting} from \${process.env.LJ_PROCESS} (\${process.env.LJ_RELEASE})\${process.env.GREETING ? " - " + process.env.GREETING : ""}\\n\`),`,
      "  )",
      '  .listen(Number(process.env.PORT), "0.0.0.0");',
      "",
    ].join("\n");
  writeFileSync(join(app, "server.js"), server_js("hello"));
  writeFileSync(join(app, "Procfile"), "web: node server.js\n");
  const git = (...a: string[]) =>
    show(["git", "-c", "user.email=demo@lj", "-c", "user.name=demo", ...a], {
      cwd: app,
      label: `git ${a.join(" ")}`,
    });
  await git("init", "-q", "-b", "main");
  await git("add", "-A");
  await git("commit", "-qm", "hello");
  await show(["git", "remote", "add", "lj", `http://lj:${token}@${host}/git/hello.git`], {
    cwd: app,
    label: `git remote add lj http://lj:TOKEN@${host}/git/hello.git`,
  });
  let t0 = performance.now();
  await git("push", "lj", "main");
  await curl(url, "hello.localhost");
  process.stdout.write(`  (push to first answer: ${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);

  step("Change the code and deploy it as a tarball with lj deploy");
  writeFileSync(join(app, "server.js"), server_js("hi again"));
  t0 = performance.now();
  await lj(["deploy", app, "--app", "hello"]);
  await curl(url, "hello.localhost");

  step("Scale to two instances: the router balances across both");
  await lj(["scale", "hello", "web=2"]);
  for (let i = 0; i < 4; i++) await curl(url, "hello.localhost");
  await lj(["ps", "hello"]);

  step("Configuration is part of a release");
  await lj(["config", "set", "hello", "GREETING=configured"]);
  await curl(url, "hello.localhost");
  await lj(["releases", "hello"]);

  step("Roll back to the first release: no rebuild");
  await lj(["rollback", "hello", "v1"]);
  await curl(url, "hello.localhost");

  step("A one-off command in a fresh jail of the current release");
  await lj(["run", "hello", "--", "uname -n; id -u; ls"]);

  step("Logs");
  await lj(["logs", "hello", "-n", "8"]);
} catch (e) {
  failed = true;
  process.stderr.write(`\npaas demo failed: ${(e as Error).message}\n`);
} finally {
  step("Stop the server (every jail goes with it)");
  if (server) {
    server.kill("SIGTERM");
    await server.exited;
  }
  rmSync(app, { recursive: true, force: true });
  // The demo's network (its nftables table, leases) goes with its root: gc takes off what no
  // live process of the root holds.
  Bun.spawnSync([process.execPath, cli, "gc"], { env, stdout: "ignore", stderr: "inherit" });
  rmSync(root, { recursive: true, force: true });
  process.stdout.write(failed ? "demo FAILED\n" : "demo done\n");
}
process.exit(failed ? 1 : 0);
