/**
 * Helpers for the overlay/app build tests: a git smart-HTTP server on loopback (git
 * http-backend behind Bun.serve), a cached Debian world, and running a built slug.
 */
import { existsSync, mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { createWorld } from "../src/build/worlds.ts";
import { spawnJail } from "../src/jail/spawn.ts";

export async function sh(cmd: string[], cwd?: string): Promise<string> {
  const p = Bun.spawn(cmd, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} failed (${code}): ${err}`);
  return out.trim();
}

/** Makes DIR/NAME.git (bare) holding the files given, and serves DIR over smart HTTP. */
export async function gitServer(dir: string) {
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      const url = new URL(req.url);
      const body = req.body ? new Uint8Array(await req.arrayBuffer()) : new Uint8Array();
      const p = Bun.spawn(["git", "http-backend"], {
        stdio: ["pipe", "pipe", "pipe"],
        env: {
          ...process.env,
          GIT_PROJECT_ROOT: dir,
          GIT_HTTP_EXPORT_ALL: "1",
          PATH_INFO: url.pathname,
          QUERY_STRING: url.search.slice(1),
          REQUEST_METHOD: req.method,
          CONTENT_TYPE: req.headers.get("content-type") ?? "",
          CONTENT_LENGTH: String(body.length),
          HTTP_CONTENT_ENCODING: req.headers.get("content-encoding") ?? "",
          HTTP_GIT_PROTOCOL: req.headers.get("git-protocol") ?? "",
          REMOTE_ADDR: "127.0.0.1",
        },
      });
      p.stdin.write(body);
      await p.stdin.end();
      const out = new Uint8Array(await new Response(p.stdout).arrayBuffer());
      await p.exited;
      let i = 0;
      for (; i < out.length - 3; i++)
        if (out[i] === 13 && out[i + 1] === 10 && out[i + 2] === 13 && out[i + 3] === 10) break;
      const head = new TextDecoder().decode(out.subarray(0, i));
      const headers = new Headers();
      let status = 200;
      for (const line of head.split("\r\n")) {
        const m = /^([^:]+):\s*(.*)$/.exec(line);
        if (!m?.[1]) continue;
        if (m[1].toLowerCase() === "status") status = Number.parseInt(m[2] ?? "200", 10);
        else headers.set(m[1], m[2] ?? "");
      }
      return new Response(out.subarray(i + 4), { status, headers });
    },
  });
  return {
    url: (name: string) => `http://127.0.0.1:${server.port}/${name}.git`,
    port: server.port,
    async repo(name: string, files: Record<string, string>) {
      const work = join(dir, `${name}-work`);
      for (const [rel, text] of Object.entries(files)) {
        mkdirSync(join(work, rel, ".."), { recursive: true });
        await Bun.write(join(work, rel), text);
      }
      await sh(["git", "init", "-q", "-b", "main", work]);
      await sh(["git", "add", "-A"], work);
      await sh(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init"], work);
      await sh(["git", "clone", "-q", "--bare", work, join(dir, `${name}.git`)]);
      return `http://127.0.0.1:${server.port}/${name}.git`;
    },
    stop: () => server.stop(true),
  };
}

export const DEBIAN_CACHE = process.env.LJ_TEST_WORLD_CACHE ?? "/var/cache/lightjail-test-worlds";

/**
 * A Debian bookworm world (debootstrap, ~40 s) made once and kept in DEBIAN_CACHE across
 * runs, linked into the current LIGHTJAIL_ROOT as worlds/bookworm.
 */
export async function debianWorld(root: string): Promise<string> {
  const cached = join(DEBIAN_CACHE, "worlds", "bookworm");
  if (!existsSync(join(cached, ".lj-world.json"))) {
    const saved = process.env.LIGHTJAIL_ROOT;
    process.env.LIGHTJAIL_ROOT = DEBIAN_CACHE;
    try {
      mkdirSync(DEBIAN_CACHE, { recursive: true });
      await createWorld("bookworm", "debootstrap:bookworm", { force: existsSync(cached) });
    } finally {
      process.env.LIGHTJAIL_ROOT = saved;
    }
  }
  mkdirSync(join(root, "worlds"), { recursive: true });
  if (!existsSync(join(root, "worlds", "bookworm"))) symlinkSync(cached, join(root, "worlds", "bookworm"));
  return "bookworm";
}

export async function freePort(): Promise<number> {
  const s = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  const p = s.port ?? 0;
  s.stop(true);
  return p;
}

/** Fetches URL until it answers (or the deadline passes). */
export async function waitForHttp(url: string, ms = 20000): Promise<Response> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      return await fetch(url);
    } catch (e) {
      last = e;
      await Bun.sleep(100);
    }
  }
  throw new Error(`${url} never answered: ${String(last)}`);
}

export interface SlugLike {
  worldPath: string;
  worldMounts: { src: string; dst: string; readonly: boolean }[];
  overlays: { path: string }[];
  path: string;
  cwd: string;
  env: Record<string, string>;
  processes: Record<string, { command: string }>;
}

/** Runs a slug's process the way the PaaS does: layers world + overlays + slug, cwd /app. */
export function runSlug(slug: SlugLike, proc: string, port: number) {
  const command = slug.processes[proc]?.command;
  if (!command) throw new Error(`no process ${proc}`);
  return spawnJail({
    argv: ["/bin/sh", "-c", command],
    layers: [slug.worldPath, ...slug.overlays.map((o) => o.path), slug.path],
    mounts: slug.worldMounts,
    cwd: slug.cwd,
    env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", ...slug.env, PORT: String(port) },
    net: "host",
    uid: 65534,
    gid: 65534,
    stdio: ["ignore", "pipe", "pipe"],
    limits: { memoryBytes: 512 * 1048576, pids: 256 },
  });
}
