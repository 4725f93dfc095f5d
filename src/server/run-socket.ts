/**
 * Interactive one-off runs (`lj run`): a WebSocket upgrade of GET /api/v1/apps/:app/run.
 *
 * Query: `command` (a shell command line), and for a terminal `tty=1`, `rows`, `cols`, `term`.
 * Client to server: binary frames are stdin; text frames are JSON controls:
 *   {"resize":{"rows":R,"cols":C}}   the terminal's new size (tty)
 *   {"eof":true}                     stdin ended (without a tty; with one, send ^D)
 *   {"signal":"SIGINT"}              SIGINT, SIGTERM, SIGHUP or SIGQUIT to the process
 * Server to client: binary frames are output, their first byte the stream (1 stdout, 2
 * stderr; a terminal's output is all 1); the last text frame is {"exit":N,"reason":...}.
 * Closing the socket kills the jail. `?check=1` without an upgrade answers {"ok":true} or the
 * error a run would meet (no app, no release), which a failed upgrade cannot carry.
 */
import { closeSync, createReadStream, createWriteStream } from "node:fs";
import type { Server, ServerWebSocket } from "bun";
import { LjError } from "../errors.ts";
import type { JailPty } from "../jail/pty.ts";
import { setWindowSize } from "../jail/pty.ts";
import type { Jail } from "../jail/spawn.ts";
import type { Runs } from "../paas/runs.ts";

export interface RunWsData {
  kind: "run";
  jail: Jail;
  pty: JailPty | null;
  /** Input that came before the output pumps: none is lost. */
  write?: (b: Uint8Array) => void;
}

const STDOUT = 1;
const STDERR = 2;
const SIGNALS = new Set(["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"]);
const TERM_RE = /^[A-Za-z0-9._+-]{1,64}$/;

/** Bun's fs streams may have closed it already, autoClose or not. */
function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}

function frame(stream: number, chunk: Uint8Array): Uint8Array {
  const out = new Uint8Array(chunk.length + 1);
  out[0] = stream;
  out.set(chunk, 1);
  return out;
}

/**
 * Starts the run and upgrades the request to a WebSocket carrying it. Errors before the
 * upgrade (no app, no release, bad query) are thrown, so the API answers them as JSON.
 */
export async function upgradeRun(
  runs: Runs,
  server: Server<unknown> | undefined,
  req: Request,
  app: string,
): Promise<Response> {
  const q = new URL(req.url).searchParams;
  if (q.get("check") === "1") {
    runs.checkRunnable(app);
    return Response.json({ ok: true });
  }
  const command = q.get("command");
  if (!command) throw new LjError("usage", "bad-request", "give the command as ?command=...");
  if (req.headers.get("upgrade")?.toLowerCase() !== "websocket" || !server) {
    throw new LjError("usage", "needs-websocket", "interactive runs need a WebSocket upgrade", {
      httpStatus: 426,
      hint: "POST /api/v1/apps/APP/run runs without input (docs/api.md)",
    });
  }
  runs.checkRunnable(app);
  let data: RunWsData;
  if (q.get("tty") === "1") {
    const term = q.get("term") ?? "";
    const size = { rows: Number(q.get("rows") ?? 24), cols: Number(q.get("cols") ?? 80) };
    const { jail, pty } = await runs.onTerminal(app, command, size, TERM_RE.test(term) ? term : "xterm");
    data = { kind: "run", jail, pty };
  } else {
    data = { kind: "run", jail: runs.once(app, command, { stdin: true }), pty: null };
  }
  if (!server.upgrade(req, { data })) {
    data.jail.kill("SIGKILL");
    if (data.pty) closeQuietly(data.pty.master);
    throw new LjError("usage", "upgrade-failed", "the WebSocket upgrade failed");
  }
  return new Response(null);
}

/** Sends a stream's chunks as frames of `stream` until it ends. */
async function pump(ws: ServerWebSocket<RunWsData>, s: AsyncIterable<Uint8Array> | null, stream: number) {
  if (!s) return;
  try {
    for await (const chunk of s) ws.send(frame(stream, chunk));
  } catch {
    // A terminal's master reads EIO once the last process holding the terminal is gone.
  }
}

/** Output of a terminal until it is closed, or a moment after the process ended. */
async function pumpTerminal(ws: ServerWebSocket<RunWsData>, pty: JailPty, jail: Jail): Promise<void> {
  const rs = createReadStream("", { fd: pty.master, autoClose: false, highWaterMark: 64 * 1024 });
  const done = pump(ws, rs as AsyncIterable<Uint8Array>, STDOUT);
  // A background process may keep the terminal open after the command ended: stop anyway.
  await Promise.race([done, jail.exited.then(() => Bun.sleep(300))]);
  rs.destroy();
}

export const runWebsocket = {
  open(ws: ServerWebSocket<RunWsData>) {
    const { jail, pty } = ws.data;
    let out: Promise<unknown>;
    let input: ReturnType<typeof createWriteStream> | undefined;
    if (pty) {
      input = createWriteStream("", { fd: pty.master, autoClose: false });
      input.on("error", () => {});
      ws.data.write = (b) => input?.write(b);
      out = pumpTerminal(ws, pty, jail);
    } else {
      ws.data.write = (b) => void jail.stdin?.write(b);
      out = Promise.all([pump(ws, jail.stdout, STDOUT), pump(ws, jail.stderr, STDERR)]);
    }
    void Promise.all([jail.exited, out]).then(([r]) => {
      ws.data.write = undefined;
      input?.destroy();
      if (pty) closeQuietly(pty.master);
      ws.send(JSON.stringify({ exit: r.status, reason: r.reason, ...(r.error ? { error: r.error } : {}) }));
      ws.close(1000, "exited");
    });
  },
  message(ws: ServerWebSocket<RunWsData>, msg: string | Buffer) {
    const d = ws.data;
    if (typeof msg !== "string") {
      d.write?.(new Uint8Array(msg));
      return;
    }
    let m: { resize?: { rows?: number; cols?: number }; eof?: boolean; signal?: string };
    try {
      m = JSON.parse(msg);
    } catch {
      return;
    }
    if (m.resize && d.pty) {
      try {
        setWindowSize(d.pty.master, { rows: Number(m.resize.rows), cols: Number(m.resize.cols) });
      } catch {}
    }
    if (m.eof && !d.pty) void d.jail.stdin?.end();
    if (m.signal && SIGNALS.has(m.signal)) d.jail.kill(m.signal as NodeJS.Signals);
  },
  close(ws: ServerWebSocket<RunWsData>) {
    // The client is gone: so is whatever it was running (a hangup, as a terminal would give).
    ws.data.jail.kill("SIGKILL");
  },
};
