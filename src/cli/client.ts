/**
 * The API client behind `lj apps|deploy|config|ps|...`: finds the server (--remote NAME|URL,
 * LJ_REMOTE, the checkout's `lj` git remote, the current `lj login`, or the local server's
 * record) and the token (LJ_TOKEN, the login stored for that server, or the local server's
 * token file when readable), and turns error bodies into LjErrors.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { LjError, usageError } from "../errors.ts";
import { NAME_RE } from "../store/names.ts";
import { paths } from "../store/paths.ts";
import { findServer, ljRemote, normaliseUrl, readClientConfig } from "./servers.ts";

export const DEFAULT_PORT = 7080;

export const clientArgs = {
  remote: {
    type: "string",
    description: "server name (lj login --name) or URL (default: LJ_REMOTE, the lj git remote, the login)",
  },
  json: { type: "boolean", description: "print JSON" },
} as const;

function readJson(file: string): Record<string, string> {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return {};
  }
}

/** Where a local `lj serve` says it listens (written at its start). */
export const serverRecordFile = () => join(paths.paas(), "server.json");

export const APP_RE = NAME_RE;

/**
 * The app a command is about and the words after it: the first word when it can be an app
 * name (and `isArg` does not claim it), else the app of the checkout's `lj` remote.
 */
export function appAndRest(
  words: string[],
  isArg: (w: string) => boolean = () => false,
  minRest = 0,
): { app: string; rest: string[] } {
  const first = words[0];
  let remote: ReturnType<typeof ljRemote> | null | undefined;
  const r = () => {
    if (remote === undefined) remote = ljRemote() ?? null;
    return remote;
  };
  // With too few words left after it, the first is an argument when the checkout names the app.
  const tooFew = words.length - 1 < minRest && r() !== null;
  if (first !== undefined && APP_RE.test(first) && !isArg(first) && !tooFew)
    return { app: first, rest: words.slice(1) };
  const found = r();
  if (found) return { app: found.app, rest: words };
  throw usageError(
    first === undefined ? "name the app" : `"${first}" is not an app name`,
    "give the app's name, or run this in a checkout with an `lj` git remote (`lj apps create` adds it)",
  );
}

/** The server URL and token a command talks to (see the file's comment for the order). */
export function resolveServer(given?: string): { remote: string; token: string } {
  const cfg = readClientConfig();
  const chosen = given || process.env.LJ_REMOTE;
  let url: string | undefined;
  let token = process.env.LJ_TOKEN || "";
  if (chosen) {
    const found = findServer(cfg, chosen);
    if (!found && !/[:/.]/.test(chosen))
      throw usageError(
        `no server named "${chosen}"`,
        "`lj login URL --name NAME` adds one; `lj servers` lists them",
      );
    url = found ? found[1].url : normaliseUrl(chosen);
    token ||= found?.[1].token ?? "";
  } else {
    const remote = ljRemote();
    const current = cfg.current ? cfg.servers[cfg.current] : undefined;
    const login = remote ? findServer(cfg, remote.server)?.[1] : current;
    url = remote?.server ?? current?.url;
    token ||= login?.token ?? "";
  }
  url ??= readJson(serverRecordFile()).url || `http://127.0.0.1:${DEFAULT_PORT}`;
  if (!token && existsSync(paths.paasToken())) {
    try {
      token = readFileSync(paths.paasToken(), "utf8").trim();
    } catch {}
  }
  return { remote: url.replace(/\/+$/, ""), token };
}

export interface Client {
  remote: string;
  token: string;
  request(method: string, path: string, body?: unknown, init?: RequestInit): Promise<Response>;
  json<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T>;
}

export async function failure(res: Response): Promise<LjError> {
  const text = await res.text();
  let e: { code?: string; message?: string; hint?: string } | undefined;
  try {
    e = (JSON.parse(text) as { error?: typeof e }).error;
  } catch {}
  const kind =
    res.status === 404
      ? "not-found"
      : res.status === 409
        ? "conflict"
        : res.status === 401 || res.status === 403
          ? "permission"
          : res.status === 503
            ? "unavailable"
            : res.status === 422
              ? "invalid"
              : res.status < 500
                ? "usage"
                : "internal";
  return new LjError(
    kind,
    e?.code ?? `http-${res.status}`,
    e?.message ?? `HTTP ${res.status}: ${text.slice(0, 200)}`,
    {
      hint: e?.hint,
      httpStatus: res.status,
    },
  );
}

export function client(args: { remote?: string }): Client {
  const { remote, token } = resolveServer(args.remote);
  const request = async (method: string, path: string, body?: unknown, init: RequestInit = {}) => {
    const headers: Record<string, string> = {
      authorization: `Bearer ${token}`,
      ...(init.headers as Record<string, string>),
    };
    let payload = init.body;
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(body);
    }
    try {
      return await fetch(`${remote}${path}`, { ...init, method, headers, body: payload } as RequestInit);
    } catch (e) {
      throw new LjError(
        "unavailable",
        "no-server",
        `cannot reach the lightjail server at ${remote}: ${(e as Error).message}`,
        {
          hint: "start it with `lj serve`, or pass --remote URL (or set LJ_REMOTE)",
        },
      );
    }
  };
  return {
    remote,
    token,
    request,
    async json<T>(method: string, path: string, body?: unknown): Promise<T> {
      const res = await request(method, path, body);
      if (!res.ok) throw await failure(res);
      return (await res.json()) as T;
    },
  };
}

export function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

/** Left-aligned columns. */
export function table(rows: string[][]): void {
  if (rows.length === 0) return;
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  for (const r of rows)
    out(
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join("  ")
        .trimEnd(),
    );
}

/** Streams a response body to stdout as it arrives. */
export async function pipeToStdout(res: Response): Promise<void> {
  if (!res.body) return;
  for await (const chunk of res.body) process.stdout.write(chunk);
}

export function mb(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined ? "-" : `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
