/**
 * `lj run [APP] [--] CMD...`: a one-off process in a fresh jail of the app's release, over a
 * WebSocket (src/server/run-socket.ts): stdin goes to it; from a terminal it gets a terminal
 * of its own (raw mode here, window size following); its exit status is lj's. Every word
 * after APP (or after `--`) is the command's, untouched. --json keeps the NDJSON transcript.
 */
import { defineCommand } from "citty";
import { LjError, usageError } from "../errors.ts";
import { pumpLines } from "../lines.ts";
import { APP_RE, appAndRest, type Client, client, clientArgs, failure } from "./client.ts";

/** lj's own flags that take a value: their value is not the app. */
const VALUE_FLAGS = new Set(["--remote"]);

/** Splits `run`'s raw arguments into lj's flags, the app, and the command's words. */
export function splitRunArgs(raw: string[]): { flags: string[]; app?: string; words: string[] } {
  const flags: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    const a = raw[i]!;
    if (a === "--") return { flags, words: raw.slice(i + 1) };
    if (a.startsWith("-")) {
      flags.push(a);
      if (VALUE_FLAGS.has(a) && i + 1 < raw.length) flags.push(raw[++i]!);
      continue;
    }
    const rest = raw.slice(i + 1);
    const dd = rest.indexOf("--");
    // `lj run APP -- CMD`, or `lj run APP CMD ARGS...` with ARGS as given (-la and all).
    if (dd === 0) return { flags, app: a, words: rest.slice(1) };
    return { flags, app: a, words: rest };
  }
  return { flags, words: [] };
}

function ownFlags(flags: string[]): { json: boolean; tty?: boolean; remote?: string } {
  const r: { json: boolean; tty?: boolean; remote?: string } = { json: false };
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i]!;
    if (f === "--json") r.json = true;
    else if (f === "--tty") r.tty = true;
    else if (f === "--no-tty") r.tty = false;
    else if (f === "--remote") r.remote = flags[++i];
    else if (f.startsWith("--remote=")) r.remote = f.slice("--remote=".length);
  }
  return r;
}

/** One shell command line: a single word as it is (it may be a pipeline), more words quoted. */
export function commandLine(words: string[]): string {
  return words.length === 1 ? words[0]! : words.map((w) => `'${w.replace(/'/g, "'\\''")}'`).join(" ");
}

export const runCommand = defineCommand({
  meta: {
    name: "run",
    description: "Run a one-off command in a fresh jail of the app's release: lj run [APP] -- CMD",
  },
  args: {
    ...clientArgs,
    app: { type: "positional", required: false, description: "app name (default: the lj git remote's)" },
    tty: { type: "boolean", description: "a terminal for the command (default: when lj has one)" },
  },
  async run({ rawArgs }) {
    const split = splitRunArgs(rawArgs);
    const app =
      split.app !== undefined && APP_RE.test(split.app)
        ? split.app
        : appAndRest(split.app ? [split.app] : []).app;
    const words =
      split.app !== undefined && !APP_RE.test(split.app) ? [split.app, ...split.words] : split.words;
    if (words.length === 0) throw usageError("give the command after --, e.g. lj run APP -- ls");
    // lj's own flags are those before the command: citty also read the command's words.
    const own = ownFlags(split.flags);
    const c = client({ remote: own.remote });
    const command = commandLine(words);
    if (own.json) return transcript(c, app, command);
    const tty = own.tty ?? (process.stdin.isTTY === true && process.stdout.isTTY === true);
    process.exitCode = await interactive(c, app, command, tty);
  },
});

/** The NDJSON route: output frames as they come, for scripts. */
async function transcript(c: Client, app: string, command: string): Promise<void> {
  const res = await c.request("POST", `/api/v1/apps/${app}/run`, { command });
  if (!res.ok || !res.body) throw await failure(res);
  let status = 1;
  // Frames are one JSON object a line, however long: no line is cut.
  await pumpLines(
    res.body,
    (line) => {
      process.stdout.write(`${line}\n`);
      const f = JSON.parse(line) as { exit?: number };
      if (f.exit !== undefined) status = f.exit;
    },
    Number.POSITIVE_INFINITY,
  );
  process.exitCode = status;
}

function wsUrl(c: Client, app: string, q: Record<string, string>): string {
  const u = new URL(`${c.remote}/api/v1/apps/${app}/run`);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.search = new URLSearchParams(q).toString();
  return u.toString();
}

/** Runs the command with stdin forwarded (and a terminal when `tty`); returns its exit status. */
async function interactive(c: Client, app: string, command: string, tty: boolean): Promise<number> {
  // A failed upgrade carries no reason: ask first, so "no such app" reads as itself.
  const check = await c.request("GET", `/api/v1/apps/${app}/run?check=1`);
  if (!check.ok) throw await failure(check);
  const q: Record<string, string> = { command };
  if (tty) {
    q.tty = "1";
    q.rows = String(process.stdout.rows || 24);
    q.cols = String(process.stdout.columns || 80);
    q.term = process.env.TERM || "xterm";
  }
  const ws = new WebSocket(wsUrl(c, app, q), {
    headers: { authorization: `Bearer ${c.token}` },
  } as unknown as string[]);
  ws.binaryType = "arraybuffer";
  const stdin = process.stdin;
  let status: number | undefined;
  let opened = false;
  const cleanups: (() => void)[] = [];
  return new Promise<number>((resolve, reject) => {
    const finish = () => {
      for (const f of cleanups.splice(0)) f();
      if (status !== undefined) resolve(status);
      else
        reject(
          new LjError(
            "unavailable",
            "run-lost",
            opened
              ? "the connection to the server was lost; the command was stopped"
              : "the server refused the run",
            { hint: opened ? undefined : "try again with --debug, or see the server's log" },
          ),
        );
    };
    ws.onopen = () => {
      opened = true;
      const onData = (b: Buffer) => ws.send(new Uint8Array(b));
      stdin.on("data", onData);
      cleanups.push(() => {
        stdin.off("data", onData);
        stdin.pause();
      });
      if (tty) {
        stdin.setRawMode(true);
        cleanups.push(() => stdin.setRawMode(false));
        const onResize = () =>
          ws.send(JSON.stringify({ resize: { rows: process.stdout.rows, cols: process.stdout.columns } }));
        process.stdout.on("resize", onResize);
        cleanups.push(() => process.stdout.off("resize", onResize));
      } else {
        const onEnd = () => ws.send(JSON.stringify({ eof: true }));
        stdin.on("end", onEnd);
        cleanups.push(() => stdin.off("end", onEnd));
        for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const) {
          const h = () => ws.send(JSON.stringify({ signal: sig }));
          process.on(sig, h);
          cleanups.push(() => process.off(sig, h));
        }
      }
      stdin.resume();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        const m = JSON.parse(ev.data) as { exit?: number; error?: string };
        if (m.error) process.stderr.write(`lj run: ${m.error}\n`);
        if (m.exit !== undefined) status = m.exit;
        return;
      }
      const b = new Uint8Array(ev.data as ArrayBuffer);
      (b[0] === 2 ? process.stderr : process.stdout).write(b.subarray(1));
    };
    ws.onclose = finish;
    ws.onerror = () => {};
  });
}
