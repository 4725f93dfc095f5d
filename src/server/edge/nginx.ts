/**
 * The nginx edge: lj serve runs its own nginx master (a child, `daemon off`, its prefix
 * STATE/edge/nginx 0700) as the data path for HTTP and HTTPS, and stays the one owner of what
 * it serves: routes, custom domains and certificates become a generated configuration
 * (nginx-config.ts); the access log's rotation, the app-log lines and the API stay here.
 *
 * Applying a change: the configuration is written beside the live one, checked with `nginx -t`
 * (a bad one is logged and never applied: the edge keeps serving the old), renamed into place,
 * and the master gets SIGHUP. The new file carries a generation number served on a loopback
 * port; `synced()` resolves once that generation answers and every worker of the old
 * configuration has stopped accepting, so a deploy stops its old instances only after nginx no
 * longer sends them new requests. Changes that arrive while a reload runs go out together in
 * the next one.
 *
 * The master never outlives lj serve: it is started under `setpriv --pdeathsig TERM` (its
 * SIGTERM ends its workers too), and a start first ends every nginx process left in the prefix
 * (found by their working directory), so a restart after `kill -9` leaves exactly one.
 */
import {
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Server, Subprocess, WebSocketHandler } from "bun";
import { procStat } from "../../jail/owner.ts";
import { type LogRotation, logRotation } from "../../paas/rotate.ts";
import type { CertManager } from "./certs.ts";
import { type NginxSettings, type NginxTables, renderNginxConfig } from "./nginx-config.ts";
import { Overflow, type OverflowTables, workerUser } from "./overflow.ts";
import { freePort, privateListener } from "./private.ts";
import { DEFAULT_PER_INSTANCE, type Target, type WsData } from "./router.ts";
import { type EdgeScheduling, edgeScheduling, scheduled } from "./scheduling.ts";

export interface NginxEdgeOptions {
  /** The nginx binary. */
  nginx: string;
  /** nginx's prefix (configuration, pid file, temp paths); made 0700. */
  prefix: string;
  hostname: string;
  /** 0 picks a free one. */
  port: number;
  /** HTTPS port (listened on once a certificate exists); undefined: none; 0 picks one. */
  httpsPort?: number;
  domain: string;
  trustedProxies?: readonly string[];
  maxBodyBytes: number;
  /** Bun's cap on lj serve's private listener, above every limit of lj serve's own. */
  maxRequestBodySize: number;
  /** `worker_processes`; default "auto". */
  workers?: string;
  /**
   * Idle keep-alive connections kept per app and worker (toward its instances and the overflow
   * listener alike); default 64.
   */
  keepalive?: number;
  /** How the workers are scheduled (scheduling.ts); default edgeScheduling()'s. */
  scheduling?: EdgeScheduling;
  /**
   * Requests each worker has in flight toward one instance (`max_conns`, counted per worker as
   * nginx does without a shared zone; default the router's DEFAULT_PER_INSTANCE); the rest go
   * to lj serve's router (overflow.ts), which lets as many through again and queues the others.
   * At most (workers + 1) x perInstance are in flight toward one instance. A worker's share is
   * the router's whole bound, not a split of it: split (16 each of two workers), a plain run of
   * 50 client connections already sent a quarter of its requests through the overflow, and the
   * edge fell from parity with nginx to 0.90x (bench/README.md).
   */
  perInstance?: number;
  routes(): Record<string, Target[]>;
  domains(): Record<string, string>;
  certs?: CertManager;
  other(req: Request, server: Server<WsData>): Response | Promise<Response>;
  websocket?: WebSocketHandler<WsData>;
  accessLog: string;
  accessLogRotation?: LogRotation;
  appLog?(app: string, line: string): void;
  log(line: string): void;
}

interface Rendered {
  tables: OverflowTables;
  body: string;
  full(generation: number): string;
  tls: boolean;
}

/** How long access-log lines wait in nginx's buffers (flush() waits this long). */
const FLUSH_MS = 250;
/** The report log (lines for apps' logs) is emptied once read past this size. */
const REPORT_MAX = 1024 * 1024;

/** The `nginx` binary on PATH (or the usual sbin places), or null. */
export function findNginx(): string | null {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin", "/sbin"];
  for (const d of dirs) {
    if (!d) continue;
    const f = join(d, "nginx");
    try {
      if (statSync(f).isFile()) return f;
    } catch {}
  }
  return null;
}

/** Processes whose working directory is `dir` (nginx's master and workers run in the prefix). */
function processesIn(dir: string): number[] {
  if (process.platform !== "linux") return [];
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (
        readlinkSync(`/proc/${d}/cwd`) === dir &&
        readFileSync(`/proc/${d}/comm`, "utf8").trim() === "nginx"
      )
        out.push(Number(d));
    } catch {}
  }
  return out;
}

/**
 * Rotates a log nginx keeps open: FILE.1 ... shift up (the oldest dropped), FILE's lines are
 * copied to FILE.1 and FILE is emptied in place. nginx's workers cannot open the file again
 * themselves (they run unprivileged, the log directory is root's alone), and a reload to have
 * the master reopen it would end every idle client connection; nginx appends (O_APPEND), so
 * after the truncation its writes start the file again. What nginx writes between the copy and
 * the truncation (one buffer at most, within microseconds) is lost.
 */
export function copyTruncate(file: string, keep: number): void {
  if (keep > 0) {
    rmSync(`${file}.${keep}`, { force: true });
    for (let n = keep - 1; n >= 1; n--) {
      try {
        renameSync(`${file}.${n}`, `${file}.${n + 1}`);
      } catch {}
    }
    copyFileSync(file, `${file}.1`);
    chmodSync(`${file}.1`, 0o600);
  }
  truncateSync(file, 0);
}

/** The hard limit on open files this process runs under (nginx's workers may raise theirs to it). */
function openFilesLimit(): number {
  try {
    const m = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m && m[1] !== "unlimited") return Math.min(Number(m[1]), 1 << 20);
  } catch {}
  return 65536;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The master's workers that still accept connections (a worker shutting down says so in its title). */
function acceptingWorkers(master: number): number[] {
  if (process.platform !== "linux") return [];
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (procStat(Number(d))?.ppid !== master) continue;
      const title = readFileSync(`/proc/${d}/cmdline`, "utf8");
      if (title.includes("worker process") && !title.includes("shutting down")) out.push(Number(d));
    } catch {}
  }
  return out;
}

export class NginxEdge {
  private master: Subprocess | null = null;
  private inner!: Server<WsData>;
  private spill: Overflow | null = null;
  private settings!: NginxSettings;
  private readonly scheduling: EdgeScheduling;
  private readonly conf: string;
  /** The configuration text being served (without its generation), and whether it has TLS. */
  private current = "";
  private tls = false;
  private generation = 0;
  /** Changes asked for / applied (synced() waits for the first to reach the second). */
  private requested = 0;
  private applied = 0;
  private waiters: { want: number; done: () => void }[] = [];
  private running: Promise<void> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private stopping = false;
  private restartDelay = 100;
  private reportAt = 0;
  private readonly rotation: LogRotation;

  private constructor(private readonly o: NginxEdgeOptions) {
    this.conf = join(o.prefix, "nginx.conf");
    this.rotation = o.accessLogRotation ?? logRotation();
    this.scheduling = o.scheduling ?? edgeScheduling();
  }

  /** Starts nginx; resolves once it serves the first configuration. */
  static async start(o: NginxEdgeOptions): Promise<NginxEdge> {
    const e = new NginxEdge(o);
    try {
      await e.begin();
    } catch (err) {
      await e.stop();
      throw err;
    }
    return e;
  }

  private async begin(): Promise<void> {
    const o = this.o;
    for (const d of [o.prefix, join(o.prefix, "tmp"), join(o.prefix, "logs")]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      chmodSync(d, 0o700);
    }
    mkdirSync(join(o.accessLog, ".."), { recursive: true, mode: 0o700 });
    this.createLog();
    await this.endLeftovers();
    this.inner = privateListener(o);
    const user = workerUser() ?? undefined;
    const workers = o.workers ?? "auto";
    const perWorker = Math.max(1, o.perInstance ?? DEFAULT_PER_INSTANCE);
    this.spill = new Overflow({
      prefix: o.prefix,
      domain: o.domain,
      maxBodyBytes: o.maxBodyBytes,
      maxRequestBodySize: o.maxRequestBodySize,
      perInstance: perWorker,
      user,
    });
    this.settings = {
      prefix: o.prefix,
      hostname: o.hostname,
      port: o.port === 0 ? freePort(o.hostname) : o.port,
      httpsPort: o.httpsPort === 0 ? freePort(o.hostname) : o.httpsPort,
      generationPort: freePort("127.0.0.1"),
      otherPort: this.inner.port!,
      domain: o.domain,
      trustedProxies: o.trustedProxies ?? [],
      maxBodyBytes: o.maxBodyBytes,
      workers,
      priority: this.scheduling.nice,
      keepalive: o.keepalive ?? 64,
      perWorker,
      overflow: this.spill.socket,
      user,
      accessLog: o.accessLog,
      reportLog: join(o.prefix, "logs", "report.log"),
      flushMs: FLUSH_MS,
      openFiles: openFilesLimit(),
    };
    const text = this.render();
    const bad = await this.check(text);
    if (bad) throw new Error(`nginx refused the edge's configuration: ${bad}`);
    renameSync(`${this.conf}.new`, this.conf);
    this.spill.serve(text.tables);
    this.serving(text);
    await this.spawnMaster();
    this.ticker = setInterval(() => this.tick(), 1000);
    this.ticker.unref?.();
  }

  /** nginx processes a dead lj serve left in the prefix (its master's pid file, their cwd). */
  private async endLeftovers(): Promise<void> {
    const pidFile = join(this.o.prefix, "nginx.pid");
    const pids = new Set(processesIn(this.o.prefix));
    try {
      const pid = Number(readFileSync(pidFile, "utf8").trim());
      const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      if (pid > 1 && comm === "nginx" && readlinkSync(`/proc/${pid}/cwd`) === this.o.prefix) pids.add(pid);
    } catch {}
    if (pids.size === 0) return;
    this.o.log(`edge: ending the nginx processes a previous lj serve left (${[...pids].join(", ")})`);
    for (const p of pids) {
      try {
        process.kill(p, "SIGTERM");
      } catch {}
    }
    const until = Date.now() + 3000;
    while ([...pids].some(alive) && Date.now() < until) await Bun.sleep(25);
    for (const p of pids) {
      try {
        process.kill(p, "SIGKILL");
      } catch {}
    }
    while ([...pids].some(alive)) await Bun.sleep(10);
    rmSync(pidFile, { force: true });
  }

  private tables(): NginxTables {
    const certs = (this.o.certs?.active() ?? []).map(([name, c]) => ({
      name,
      notAfter: c.notAfter,
      ...this.o.certs!.files(name),
    }));
    return { routes: this.o.routes(), domains: this.o.domains(), certs };
  }

  /** The configuration of the tables as they are now (`body`: without its generation). */
  private render(): Rendered {
    const t = this.tables();
    return {
      tables: { routes: t.routes, domains: t.domains },
      body: renderNginxConfig(this.settings, t, 0),
      full: (g) => renderNginxConfig(this.settings, t, g),
      tls: this.settings.httpsPort !== undefined && t.certs.length > 0,
    };
  }

  private serving(text: Rendered): void {
    this.current = text.body;
    this.tls = text.tls;
  }

  /**
   * Writes nginx.conf.new with the next generation and has nginx check it: the error text, or
   * null when it is good (the generation is then taken).
   */
  private async check(text: Rendered): Promise<string | null> {
    const gen = this.generation + 1;
    const next = `${this.conf}.new`;
    writeFileSync(next, text.full(gen), { mode: 0o600 });
    const p = Bun.spawn([this.o.nginx, "-t", "-q", "-p", this.o.prefix, "-c", next], {
      cwd: this.o.prefix,
      stdio: ["ignore", "ignore", "pipe"],
    });
    const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
    if (code === 0) {
      this.generation = gen;
      return null;
    }
    rmSync(next, { force: true });
    return (err || `exit ${code}`).trim().split("\n").slice(-3).join("; ");
  }

  private spawnMaster(): Promise<void> {
    const argv = [this.o.nginx, "-p", this.o.prefix, "-c", this.conf, "-g", "daemon off; master_process on;"];
    // The master gets SIGTERM when lj serve dies, however it dies (Linux; elsewhere the next
    // start ends what is left). It starts under the workers' scheduling policy, which they
    // inherit; their nice value is worker_priority's.
    const wrap = process.platform === "linux" && existsSync("/usr/bin/setpriv");
    const run = scheduled(this.scheduling, argv);
    const proc: Subprocess = Bun.spawn(wrap ? ["/usr/bin/setpriv", "--pdeathsig", "TERM", ...run] : run, {
      cwd: this.o.prefix,
      stdio: ["ignore", "ignore", "inherit"],
      onExit: (_p, code, signal): void => this.onExit(proc, code, signal),
    });
    this.master = proc;
    return this.waitGeneration(this.generation, 10_000).then((ok) => {
      if (!ok) throw new Error("nginx did not start serving within 10 s (see its messages above)");
      this.restartDelay = 100;
    });
  }

  private onExit(proc: Subprocess, code: number | null, signal: string | number | null): void {
    if (this.master !== proc) return;
    this.master = null;
    if (this.stopping) return;
    this.o.log(`edge: nginx ended (${signal ?? `code ${code}`}); starting it again`);
    const delay = this.restartDelay;
    this.restartDelay = Math.min(this.restartDelay * 2, 5000);
    setTimeout(() => {
      if (this.stopping) return;
      this.endLeftovers()
        .then(() => this.spawnMaster())
        .catch((e) => this.o.log(`edge: ${(e as Error).message}`));
    }, delay);
  }

  /** Polls the generation port (a new connection each time) until it answers `gen`. */
  private async waitGeneration(gen: number, ms: number): Promise<boolean> {
    const end = performance.now() + ms;
    while (performance.now() < end && !this.stopping) {
      try {
        const r = await fetch(`http://127.0.0.1:${this.settings.generationPort}/lj-generation`, {
          headers: { connection: "close" },
          keepalive: false,
        } as RequestInit);
        if ((await r.text()) === String(gen)) return true;
      } catch {}
      await Bun.sleep(10);
    }
    return false;
  }

  /** Routes, domains or certificates changed: the next reload carries them (batched). */
  publish(): void {
    if (this.stopping) return;
    this.requested++;
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.running) return;
    // Changes in quick succession (instances coming up one by one) go out in one reload.
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.applyAll().finally(() => {
        this.running = null;
        if (this.applied < this.requested) this.schedule();
        else this.settle();
      });
    }, 20);
  }

  private async applyAll(): Promise<void> {
    while (this.applied < this.requested && !this.stopping) {
      const upTo = this.requested;
      try {
        await this.apply();
      } catch (e) {
        this.o.log(`edge: ${(e as Error).message}`);
      }
      this.applied = upTo;
      this.settle();
    }
  }

  private async apply(): Promise<void> {
    const text = this.render();
    if (text.body === this.current) return;
    const bad = await this.check(text);
    if (bad) {
      this.o.log(`edge: nginx refused the new configuration, the old one keeps serving: ${bad}`);
      return;
    }
    renameSync(`${this.conf}.new`, this.conf);
    // The overflow router routes by the new tables from now: an old worker's request for an
    // instance that went is sent to one that is there.
    this.spill?.serve(text.tables);
    const master = this.master;
    if (!master) {
      // Not running (being restarted): it starts with the file just written.
      this.serving(text);
      return;
    }
    const old = acceptingWorkers(master.pid);
    master.kill("SIGHUP");
    const served = await this.waitGeneration(this.generation, 10_000);
    if (this.stopping) return;
    if (!served) throw new Error("nginx did not take the new configuration within 10 s");
    // The master tells the old workers to stop accepting only after the new ones started.
    const until = performance.now() + 5000;
    while (old.some((p) => acceptingWorkers(master.pid).includes(p)) && performance.now() < until)
      await Bun.sleep(10);
    if (process.platform !== "linux") await Bun.sleep(300);
    this.serving(text);
  }

  private settle(): void {
    this.waiters = this.waiters.filter((w) => {
      if (this.applied < w.want && !this.stopping) return true;
      w.done();
      return false;
    });
  }

  /** Resolves once nginx serves everything published so far (a refused change counts as done). */
  synced(): Promise<void> {
    return new Promise<void>((done) => {
      this.waiters.push({ want: this.requested, done });
      this.settle();
    });
  }

  /** Access-log lines nginx buffered are written within FLUSH_MS: waits that long. */
  async flush(): Promise<void> {
    await Bun.sleep(FLUSH_MS + 100);
    this.readReport();
  }

  /**
   * Once a second: the access log rotated when full (it can pass its size by a second's lines),
   * the report lines passed to apps' logs.
   */
  private tick(): void {
    this.readReport();
    let size = 0;
    try {
      size = statSync(this.o.accessLog).size;
    } catch {}
    if (size >= this.rotation.maxBytes) copyTruncate(this.o.accessLog, this.rotation.keep);
  }

  /** The access log exists before nginx opens it, so that it keeps its mode 0600. */
  private createLog(): void {
    writeFileSync(this.o.accessLog, "", { mode: 0o600, flag: "a" });
  }

  private readReport(): void {
    const file = this.settings.reportLog;
    let fd: number;
    try {
      fd = openSync(file, "r+");
    } catch {
      return;
    }
    try {
      const size = fstatSync(fd).size;
      if (size < this.reportAt) this.reportAt = 0;
      if (size === this.reportAt) return;
      const buf = Buffer.alloc(size - this.reportAt);
      const n = readSync(fd, buf, 0, buf.length, this.reportAt);
      const text = buf.subarray(0, n).toString("utf8");
      const end = text.lastIndexOf("\n") + 1;
      this.reportAt += Buffer.byteLength(text.slice(0, end));
      for (const line of text.slice(0, end).split("\n")) {
        const sp = line.indexOf(" ");
        if (sp > 0) this.o.appLog?.(line.slice(0, sp), line.slice(sp + 1));
      }
      if (this.reportAt >= REPORT_MAX) {
        ftruncateSync(fd, 0);
        this.reportAt = 0;
      }
    } finally {
      closeSync(fd);
    }
  }

  get port(): number {
    return this.settings.port;
  }

  /** The HTTPS port while nginx listens on it (once a certificate exists). */
  get httpsPort(): number | undefined {
    return this.tls ? this.settings.httpsPort : undefined;
  }

  /** lj serve's private listener (the API behind nginx). */
  get server(): Server<WsData> {
    return this.inner;
  }

  /** lj serve's overflow listener behind nginx (overflow.ts). */
  get overflow(): Overflow {
    return this.spill!;
  }

  /** The master's pid (null while it is being restarted). */
  get pid(): number | null {
    return this.master?.pid ?? null;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.ticker) clearInterval(this.ticker);
    const m = this.master;
    if (m) {
      // A fast shutdown: the master ends its workers and exits (their buffers written).
      m.kill("SIGTERM");
      const killed = setTimeout(() => m.kill("SIGKILL"), 5000);
      await m.exited;
      clearTimeout(killed);
      this.master = null;
    }
    this.readReport();
    this.settle();
    this.inner?.stop(true);
    this.spill?.stop();
  }
}
