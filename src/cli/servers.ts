/**
 * The client's servers: `lj login` stores each server's URL and token under a name in
 * $XDG_CONFIG_HOME/lightjail/client.json (default ~/.config/lightjail), mode 0600, and marks
 * one current. The file of earlier versions ({remote, token}) reads as one server, "default".
 *
 * Also how a checkout names its app: the `lj` git remote (http://HOST:PORT/git/APP.git), which
 * `lj apps create` adds.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { LjError } from "../errors.ts";

export interface Server {
  url: string;
  token: string;
}

export interface ClientConfig {
  current?: string;
  servers: Record<string, Server>;
}

export function clientConfigDir(): string {
  const base = process.env.XDG_CONFIG_HOME || join(homedir(), ".config");
  return join(base, "lightjail");
}

export const clientConfigFile = () => join(clientConfigDir(), "client.json");

export function normaliseUrl(url: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `http://${url}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new LjError("usage", "bad-url", `"${url}" is not a server URL`, {
      hint: "e.g. http://127.0.0.1:7080 or https://lj.example.com",
    });
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    throw new LjError("usage", "bad-url", `"${url}": only http and https servers are supported`);
  return u.origin;
}

export function readClientConfig(): ClientConfig {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(clientConfigFile(), "utf8"));
  } catch {
    return { servers: {} };
  }
  if (raw.servers && typeof raw.servers === "object") {
    return { current: raw.current as string | undefined, servers: raw.servers as Record<string, Server> };
  }
  if (typeof raw.remote === "string") {
    return { current: "default", servers: { default: { url: raw.remote, token: String(raw.token ?? "") } } };
  }
  return { servers: {} };
}

/** Written whole through a temporary file, readable by its owner only (it holds tokens). */
export function writeClientConfig(cfg: ClientConfig): void {
  const file = clientConfigFile();
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(cfg, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/** A stored server by name, or the one whose URL is `url`. */
export function findServer(cfg: ClientConfig, nameOrUrl: string): [string, Server] | undefined {
  const byName = cfg.servers[nameOrUrl];
  if (byName) return [nameOrUrl, byName];
  let origin: string;
  try {
    origin = normaliseUrl(nameOrUrl);
  } catch {
    return undefined;
  }
  return Object.entries(cfg.servers).find(([, s]) => normaliseUrl(s.url) === origin);
}

export interface LjRemote {
  /** The server's origin (http://HOST:PORT). */
  server: string;
  app: string;
}

/** Parses a remote URL of the form ORIGIN/git/APP.git. */
export function parseGitUrl(url: string): LjRemote | undefined {
  const m = /^(https?:\/\/)(?:[^@/]*@)?([^/]+)\/git\/([a-z][a-z0-9-]{0,30})\.git\/?$/.exec(url.trim());
  return m ? { server: `${m[1]}${m[2]}`, app: m[3]! } : undefined;
}

/** The `lj` remote of the checkout around `dir`, when there is one. */
export function ljRemote(dir = process.cwd()): LjRemote | undefined {
  const p = Bun.spawnSync(["git", "-C", dir, "remote", "get-url", "lj"], {
    stdout: "pipe",
    stderr: "ignore",
  });
  if (p.exitCode !== 0) return undefined;
  return parseGitUrl(p.stdout.toString());
}

/** Is `dir` inside a git work tree? */
export function inGitCheckout(dir = process.cwd()): boolean {
  const p = Bun.spawnSync(["git", "-C", dir, "rev-parse", "--is-inside-work-tree"], {
    stdout: "pipe",
    stderr: "ignore",
  });
  return p.exitCode === 0 && p.stdout.toString().trim() === "true";
}
