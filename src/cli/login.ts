/**
 * `lj login [URL]`, `lj logout [NAME]`, `lj servers` and `lj git-credential`: the client's
 * stored servers (servers.ts) and the git credential helper that hands a server's token to
 * `git push lj main`, so the token never sits in a remote's URL.
 */
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { defineCommand } from "citty";
import { LjError, usageError } from "../errors.ts";
import { paths } from "../store/paths.ts";
import { DEFAULT_PORT, failure, out, printJson, serverRecordFile, table } from "./client.ts";
import {
  clientConfigFile,
  findServer,
  normaliseUrl,
  readClientConfig,
  type Server,
  writeClientConfig,
} from "./servers.ts";

function localServer(): { url?: string; token?: string } {
  const r: { url?: string; token?: string } = {};
  try {
    r.url = JSON.parse(readFileSync(serverRecordFile(), "utf8")).url;
  } catch {}
  try {
    if (existsSync(paths.paasToken())) r.token = readFileSync(paths.paasToken(), "utf8").trim();
  } catch {}
  return r;
}

/** Reads a line from the terminal without echoing it. */
async function promptHidden(question: string): Promise<string> {
  process.stderr.write(question);
  const stdin = process.stdin;
  stdin.setRawMode(true);
  stdin.resume();
  let text = "";
  try {
    await new Promise<void>((resolve, reject) => {
      const onData = (b: Buffer) => {
        for (const ch of b.toString("utf8")) {
          if (ch === "\r" || ch === "\n") return done(resolve);
          if (ch === "\u0003") return done(() => reject(usageError("cancelled")));
          if (ch === "\u007f") text = text.slice(0, -1);
          else text += ch;
        }
      };
      const done = (then: () => void) => {
        stdin.off("data", onData);
        then();
      };
      stdin.on("data", onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write("\n");
  }
  return text.trim();
}

/** The token for `url`: LJ_TOKEN, a piped stdin, the local server's token file, or a prompt. */
async function tokenFor(url: string): Promise<string> {
  if (process.env.LJ_TOKEN) return process.env.LJ_TOKEN;
  if (!process.stdin.isTTY) {
    const text = (await Bun.stdin.text()).trim();
    if (text) return text.split("\n")[0]!.trim();
  }
  const local = localServer();
  if (local.token && local.url && normaliseUrl(local.url) === url) return local.token;
  if (!process.stdin.isTTY)
    throw usageError("no token given", "pipe it in (`lj login URL < token-file`) or set LJ_TOKEN");
  return promptHidden(`token for ${url} (lj serve printed it): `);
}

/** Checks the token against the server (the app list needs it). */
async function verify(url: string, token: string): Promise<void> {
  let res: Response;
  try {
    res = await fetch(`${url}/api/v1/apps`, { headers: { authorization: `Bearer ${token}` } });
  } catch (e) {
    throw new LjError("unavailable", "no-server", `cannot reach ${url}: ${(e as Error).message}`, {
      hint: "is `lj serve` running there, and is the URL right?",
    });
  }
  if (res.status === 401)
    throw new LjError("permission", "bad-token", `${url} refused the token`, {
      hint: "the server's token is in its root (paas/token), printed by `lj serve` at its first start",
    });
  if (!res.ok) throw await failure(res);
}

const login = defineCommand({
  meta: {
    name: "login",
    description: "Store a server and its token (read from stdin, LJ_TOKEN, or asked for): lj login [URL]",
  },
  args: {
    url: { type: "positional", required: false, description: "server URL (default: the local server)" },
    name: { type: "string", description: "name for this server (default: its host)" },
    json: { type: "boolean", description: "print JSON" },
  },
  async run({ args }) {
    const url = normaliseUrl(
      args.url || process.env.LJ_REMOTE || localServer().url || `http://127.0.0.1:${DEFAULT_PORT}`,
    );
    const name = args.name || new URL(url).host;
    if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$/.test(name))
      throw usageError(`"${name}" is not a server name`, "letters, digits, . _ : -");
    const token = await tokenFor(url);
    if (!token) throw usageError("the token is empty");
    await verify(url, token);
    const cfg = readClientConfig();
    // One entry per URL: logging in again under another name renames it.
    for (const [n, s] of Object.entries(cfg.servers)) if (normaliseUrl(s.url) === url) delete cfg.servers[n];
    cfg.servers[name] = { url, token };
    cfg.current = name;
    writeClientConfig(cfg);
    if (args.json) return printJson({ name, url, file: clientConfigFile() });
    out(`logged in to ${url} as "${name}" (stored in ${clientConfigFile()})`);
  },
});

const logout = defineCommand({
  meta: { name: "logout", description: "Forget a stored server and its token: lj logout [NAME|URL]" },
  args: { server: { type: "positional", required: false, description: "server (default: the current one)" } },
  run({ args }) {
    const cfg = readClientConfig();
    const which = args.server || cfg.current;
    const found = which ? findServer(cfg, which) : undefined;
    if (!found) throw usageError(which ? `no server "${which}" is stored` : "not logged in to any server");
    delete cfg.servers[found[0]];
    if (cfg.current === found[0]) cfg.current = Object.keys(cfg.servers)[0];
    writeClientConfig(cfg);
    out(`logged out of ${found[1].url}${cfg.current ? ` (current server: ${cfg.current})` : ""}`);
  },
});

const use = defineCommand({
  meta: { name: "use", description: "Make a stored server the current one: lj servers use NAME" },
  args: { server: { type: "positional", required: true, description: "server name or URL" } },
  run({ args }) {
    const cfg = readClientConfig();
    const found = findServer(cfg, args.server);
    if (!found)
      throw usageError(`no server "${args.server}" is stored`, "`lj login URL --name NAME` adds one");
    cfg.current = found[0];
    writeClientConfig(cfg);
    out(`current server: ${found[0]} (${found[1].url})`);
  },
});

const servers = defineCommand({
  meta: { name: "servers", description: "List the servers `lj login` stored (* is the current one)" },
  args: { json: { type: "boolean", description: "print JSON" } },
  subCommands: { use },
  run({ args, rawArgs }) {
    if (rawArgs.some((a) => !a.startsWith("-"))) return; // `servers use` ran
    const cfg = readClientConfig();
    if (args.json)
      return printJson({
        current: cfg.current ?? null,
        servers: Object.entries(cfg.servers).map(([name, s]) => ({ name, url: s.url })),
      });
    const rows = Object.entries(cfg.servers).map(([n, s]) => [n === cfg.current ? "*" : "", n, s.url]);
    if (rows.length === 0) return out("no servers yet: lj login URL");
    table([["", "NAME", "URL"], ...rows]);
  },
});

/** git's credential protocol: key=value lines up to a blank line or the end. */
export function parseCredentialRequest(text: string): Record<string, string> {
  const r: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (line === "") break;
    const eq = line.indexOf("=");
    if (eq > 0) r[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return r;
}

/** The stored token for a git request's server (a login, else a readable local server's). */
export function credentialFor(req: Record<string, string>): Server | undefined {
  if (!req.protocol || !req.host) return undefined;
  const origin = `${req.protocol}://${req.host}`;
  const login = findServer(readClientConfig(), origin)?.[1];
  if (login) return login;
  const local = localServer();
  if (local.url && local.token && normaliseUrl(local.url) === normaliseUrl(origin))
    return { url: local.url, token: local.token };
  return undefined;
}

const gitCredential = defineCommand({
  meta: {
    name: "git-credential",
    description: "git credential helper: answers `get` with a stored server's token",
  },
  args: { action: { type: "positional", required: true, description: "get, store or erase" } },
  async run({ args }) {
    const req = parseCredentialRequest(await Bun.stdin.text());
    // store and erase: the logins are lj's to keep, not git's.
    if (args.action !== "get") return;
    const s = credentialFor(req);
    if (s) process.stdout.write(`username=lj\npassword=${s.token}\n`);
  },
});

/** How git should call this very lj: the interpreter and the script, quoted for its shell. */
export function selfCommand(): string {
  const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
  let script = process.argv[1] ?? "lj";
  try {
    script = realpathSync(script);
  } catch {}
  return `${q(process.execPath)} ${q(script)}`;
}

export const loginCommand = login;
export const logoutCommand = logout;
export const serversCommand = servers;
export const gitCredentialCommand = gitCredential;
