/**
 * git push over smart HTTP: requests under /git/APP.git/ go to `git http-backend` (CGI), one
 * bare repository per app. Its pre-receive hook (src/server/git-hook.ts) streams the pushed
 * tree to this server's tarball deploy, so the build log reaches the client as `remote:` lines
 * and a failed deploy rejects the push.
 */
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { git } from "../build/git.ts";
import { LjError } from "../errors.ts";
import { paths } from "../store/paths.ts";

const HOOK_SCRIPT = join(import.meta.dir, "git-hook.ts");

/** The app's bare repository, created on first use with its deploy hook. */
export async function ensureRepo(app: string): Promise<string> {
  const dir = join(paths.paasGit(), `${app}.git`);
  if (existsSync(join(dir, "hooks", "pre-receive"))) return dir;
  mkdirSync(paths.paasGit(), { recursive: true, mode: 0o700 });
  await git(["init", "--quiet", "--bare", "--initial-branch=main", dir]);
  await git(["config", "http.receivepack", "true"], dir);
  await git(["config", "receive.denyDeletes", "true"], dir);
  const hook = join(dir, "hooks", "pre-receive");
  writeFileSync(
    hook,
    '#!/bin/sh\n# lightjail: deploy the pushed tree; a failed deploy rejects the push\nexec "$LJ_BUN" "$LJ_HOOK_SCRIPT"\n',
  );
  chmodSync(hook, 0o755);
  return dir;
}

export interface GitRequest {
  app: string;
  /** Path after APP.git, e.g. "/info/refs" or "/git-receive-pack". */
  rest: string;
  req: Request;
  remoteAddr: string;
  /** Where the hook reaches this server's API, and with what token. */
  hookUrl: string;
  token: string;
}

const ALLOWED = new Set(["/info/refs", "/git-upload-pack", "/git-receive-pack", "/HEAD"]);

export async function gitHttpBackend(g: GitRequest): Promise<Response> {
  if (!ALLOWED.has(g.rest)) {
    throw new LjError("not-found", "git-path", `no git endpoint ${g.rest}`, {
      hint: `use http://HOST:PORT/git/${g.app}.git as the remote`,
    });
  }
  await ensureRepo(g.app);
  const url = new URL(g.req.url);
  const h = g.req.headers;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    GIT_PROJECT_ROOT: paths.paasGit(),
    GIT_HTTP_EXPORT_ALL: "1",
    PATH_INFO: `/${g.app}.git${g.rest}`,
    QUERY_STRING: url.search.replace(/^\?/, ""),
    REQUEST_METHOD: g.req.method,
    CONTENT_TYPE: h.get("content-type") ?? "",
    REMOTE_USER: "lj",
    REMOTE_ADDR: g.remoteAddr,
    GIT_HTTP_MAX_REQUEST_BUFFER: "100M",
    LJ_APP: g.app,
    LJ_HOOK_URL: g.hookUrl,
    LJ_HOOK_TOKEN: g.token,
    LJ_BUN: process.execPath,
    LJ_HOOK_SCRIPT: HOOK_SCRIPT,
  };
  const enc = h.get("content-encoding");
  if (enc) env.HTTP_CONTENT_ENCODING = enc;
  const proto = h.get("git-protocol");
  if (proto) env.GIT_PROTOCOL = proto;
  const len = h.get("content-length");
  if (len) env.CONTENT_LENGTH = len;
  const p = Bun.spawn(["git", "http-backend"], {
    env,
    stdin: g.req.body ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  void new Response(p.stderr).text().then((t) => {
    if (t.trim()) process.stderr.write(`git http-backend: ${t.trim()}\n`);
  });
  return cgiResponse(p.stdout);
}

/** Splits CGI output into a status, headers and the streamed rest. */
async function cgiResponse(out: ReadableStream<Uint8Array>): Promise<Response> {
  const reader = out.getReader();
  let buf = new Uint8Array(0);
  let end = -1;
  let sepLen = 0;
  while (end < 0) {
    const { value, done } = await reader.read();
    if (done) break;
    const next = new Uint8Array(buf.length + value.length);
    next.set(buf);
    next.set(value, buf.length);
    buf = next;
    const text = new TextDecoder("latin1").decode(buf);
    const crlf = text.indexOf("\r\n\r\n");
    const lf = text.indexOf("\n\n");
    if (crlf >= 0 && (lf < 0 || crlf < lf)) {
      end = crlf;
      sepLen = 4;
    } else if (lf >= 0) {
      end = lf;
      sepLen = 2;
    }
  }
  if (end < 0) throw new LjError("internal", "git-backend", "git http-backend gave no response");
  const head = new TextDecoder("latin1").decode(buf.subarray(0, end));
  const rest = buf.subarray(end + sepLen);
  const headers = new Headers();
  let status = 200;
  for (const line of head.split(/\r?\n/)) {
    const c = line.indexOf(":");
    if (c < 0) continue;
    const k = line.slice(0, c).trim();
    const v = line.slice(c + 1).trim();
    if (k.toLowerCase() === "status") status = Number.parseInt(v, 10) || 200;
    else headers.append(k, v);
  }
  const body = new ReadableStream<Uint8Array>({
    start(ctl) {
      if (rest.length) ctl.enqueue(rest);
    },
    async pull(ctl) {
      const { value, done } = await reader.read();
      if (done) ctl.close();
      else ctl.enqueue(value);
    },
    cancel() {
      void reader.cancel();
    },
  });
  return new Response(body, { status, headers });
}
