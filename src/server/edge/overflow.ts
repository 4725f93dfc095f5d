/**
 * The nginx edge's overflow listener. Each nginx worker holds a bounded number of requests in
 * flight toward an instance (`max_conns`); when every instance of an app is at its bound, nginx
 * falls to the upstream's backup server, this Unix socket, and lj serve's router queues the
 * request per instance (router.ts's gate) and proxies it. Open-source nginx has no upstream
 * queue of its own: without this, a burst opened a connection per request toward the app and
 * overflowed its listen queue.
 *
 * Only nginx writes here, so the router trusts the forwarding headers it finds (nginx set them
 * from the client, with forwarding.ts's semantics) and routes by Host as the built-in edge does,
 * over the same tables nginx serves. The router logs nothing itself: each answer names its
 * instance in a header that nginx puts in its own access-log line and drops.
 *
 * Who can connect: nginx's workers run as an unprivileged user (nobody), so the socket cannot
 * sit in the edge's prefix (root's, 0700). It lives in a directory of its own under the system's
 * runtime directory (root's, 0711: passable, not listable), and the socket is the workers'
 * user's alone (0600): root and the workers connect, no other uid does, and a jail does not see
 * the path at all. When lj serve does not run as root, nginx's workers run as lj serve's user and
 * the socket sits in the prefix.
 */

import { dlopen, FFIType } from "bun:ffi";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
} from "node:fs";
import { join } from "node:path";
import type { Server } from "bun";
import { LjError } from "../../errors.ts";
import { PAGES, page, Router, type Target, type WsData } from "./router.ts";

/** The response header naming the instance an overflowed request went to. */
export const INSTANCE_HEADER = "x-lj-instance";

/** What nginx serves: the overflow router routes by the same tables. */
export interface OverflowTables {
  routes: Record<string, Target[]>;
  domains: Record<string, string>;
}

export interface OverflowOptions {
  /** The edge's prefix (the socket's directory is named after it). */
  prefix: string;
  domain: string;
  maxBodyBytes: number;
  maxRequestBodySize: number;
  /** Requests the router has in flight toward one instance (the rest queue). */
  perInstance: number;
  /** The workers' user (lj serve runs as root), else undefined. */
  user?: WorkerUser;
}

export interface WorkerUser {
  name: string;
  group: string;
  uid: number;
  gid: number;
}

/**
 * The user nginx's workers run as when lj serve is root: nobody, nginx's own default, named
 * in the configuration so that the socket can be given to it. Null when lj serve is not root.
 */
export function workerUser(): WorkerUser | null {
  if (process.getuid?.() !== 0) return null;
  const entry = (file: string, match: (f: string[]) => boolean) => {
    try {
      return (
        readFileSync(file, "utf8")
          .split("\n")
          .map((l) => l.split(":"))
          .find(match) ?? null
      );
    } catch {
      return null;
    }
  };
  const pw = entry("/etc/passwd", (f) => f[0] === "nobody");
  if (!pw)
    throw new LjError(
      "config",
      "no-nobody",
      "the nginx edge runs its workers as nobody, and /etc/passwd has no such user",
    );
  const uid = Number(pw[2]);
  const gid = Number(pw[3]);
  const group = entry("/etc/group", (f) => Number(f[2]) === gid)?.[0] ?? String(gid);
  return { name: "nobody", group, uid, gid };
}

/** The socket's directory: under the runtime directory (root), in the prefix (otherwise). */
function socketDir(prefix: string, user: WorkerUser | undefined): string {
  if (!user) return prefix;
  // Its own directory: /run/lightjail is the jails' (0700).
  const run = process.platform === "linux" ? "/run/lightjail-edge" : "/var/run/lightjail-edge";
  mkdirSync(run, { recursive: true, mode: 0o711 });
  const st = lstatSync(run);
  if (!st.isDirectory() || st.uid !== 0)
    throw new LjError("config", "bad-run-dir", `${run} must be a directory of root's`);
  chmodSync(run, 0o711);
  return join(run, createHash("sha256").update(prefix).digest("hex").slice(0, 16));
}

/**
 * Raises the listen backlog of the Unix socket at `path` (listening in this process) to the
 * kernel's most. Bun listens with 512; a connect() to a Unix socket whose backlog is full fails
 * at once (EAGAIN, where TCP would retry), and nginx answers that request 502. A burst of a few
 * thousand requests beyond the bound arrives faster than the router accepts: measured at 3,000
 * connections, 37 to 182 such 502s per 12 s run. Calling listen() again on a listening socket
 * only changes its backlog. Linux only (found through /proc); elsewhere it stays Bun's.
 */
function raiseBacklog(path: string): void {
  if (process.platform !== "linux") return;
  try {
    // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; St 01 is listening.
    const inode = readFileSync("/proc/net/unix", "utf8")
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .find((f) => f[7] === path && f[5] === "01")?.[6];
    if (!inode) return;
    const fd = readdirSync("/proc/self/fd").find((d) => {
      try {
        return readlinkSync(`/proc/self/fd/${d}`) === `socket:[${inode}]`;
      } catch {
        return false;
      }
    });
    if (fd === undefined) return;
    const max = Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8").trim()) || 4096;
    const libc = dlopen("libc.so.6", { listen: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
    try {
      libc.symbols.listen(Number(fd), max);
    } finally {
      libc.close();
    }
  } catch {}
}

export class Overflow {
  readonly socket: string;
  readonly router: Router;
  private readonly server: Server<WsData>;
  private readonly dir: string;
  private readonly prefix: string;
  /** The tables as maps (an app or domain is never looked up among an object's own keys). */
  private routes = new Map<string, Target[]>();
  private domains = new Map<string, string>();
  /** Requests taken (tests and the bench read it). */
  taken = 0;

  constructor(o: OverflowOptions) {
    this.prefix = o.prefix;
    this.dir = socketDir(o.prefix, o.user);
    if (this.dir !== o.prefix) {
      // A dead server's socket and directory go; the directory stays closed until the socket
      // is the workers' alone.
      rmSync(this.dir, { recursive: true, force: true });
      mkdirSync(this.dir, { mode: 0o700 });
    }
    this.socket = join(this.dir, "overflow.sock");
    rmSync(this.socket, { force: true });
    this.router = new Router({
      domain: o.domain,
      targets: (app) => this.routes.get(app) ?? null,
      domains: { appFor: (host) => this.domains.get(host) ?? null },
      maxBodyBytes: o.maxBodyBytes,
      perInstance: o.perInstance,
      behindEdge: { instanceHeader: INSTANCE_HEADER },
    });
    const router = this.router;
    this.server = Bun.serve<WsData>({
      unix: this.socket,
      maxRequestBodySize: o.maxRequestBodySize,
      // nginx's timeouts govern (an idle connection toward here closes after 1 s); a request
      // waiting in the router's queue shows no traffic meanwhile. (Bun takes it on a Unix
      // socket too; its types list it for TCP listeners only.)
      ...({ idleTimeout: 0 } as object),
      fetch: (req, srv) => {
        this.taken++;
        const host = req.headers.get("host");
        const app = router.appFor(host);
        if (app) return router.fetch(req, srv, app);
        return page(404, PAGES.noSuchApp(host ?? ""));
      },
      websocket: router.websocket,
    });
    raiseBacklog(this.socket);
    chmodSync(this.socket, 0o600);
    if (o.user) {
      chownSync(this.socket, o.user.uid, o.user.gid);
      chmodSync(this.dir, 0o711);
    }
  }

  /** The tables nginx is about to serve. */
  serve(t: OverflowTables): void {
    this.routes = new Map(Object.entries(t.routes));
    this.domains = new Map(Object.entries(t.domains));
    this.router.invalidate();
  }

  stop(): void {
    this.server.stop(true);
    this.router.close();
    rmSync(this.dir === this.prefix ? this.socket : this.dir, { recursive: true, force: true });
  }
}
