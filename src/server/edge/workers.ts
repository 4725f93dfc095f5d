/**
 * The edge on every core: N worker processes (worker.ts), each an Edge with its own Router,
 * all listening on the same HTTP and HTTPS ports (SO_REUSEPORT: the kernel spreads the
 * connections), as nginx runs its worker_processes. lj serve stays the one owner of routes,
 * custom domains, certificates and the access log: it sends each worker a copy of the tables
 * at start and again after every change (to every worker at once), and takes back the log
 * lines. Requests that are not for an app (the API, git, ACME challenges) are forwarded by the
 * workers to a private loopback listener of lj serve, so the API, the supervisor and builds run
 * in one process and app traffic never waits behind them. A worker that dies is started again.
 */
import { setPriority } from "node:os";
import { join } from "node:path";
import type { Server, Subprocess, WebSocketHandler } from "bun";
import type { EdgeCerts } from "./edge.ts";
import { freePort, privateListener } from "./private.ts";
import { DEFAULT_PER_INSTANCE, type Target, type WsData } from "./router.ts";
import { type EdgeScheduling, edgeScheduling, scheduled } from "./scheduling.ts";

type Routes = Record<string, Target[]>;
type Domains = Record<string, string>;
type CertCopy = [string, { cert: string; key: string; notAfter: number }][];

/** What a worker is told once, at start. */
export interface WorkerConfig {
  hostname: string;
  port: number;
  httpsPort?: number;
  domain: string;
  trustedProxies: readonly string[];
  perInstance?: number;
  maxBodyBytes?: number;
  maxRequestBodySize: number;
  appLogAll?: boolean;
  /** lj serve's private listener for requests that are not for an app. */
  otherPort: number;
}

export type ToWorker =
  | { t: "start"; config: WorkerConfig; routes: Routes; domains: Domains; certs: CertCopy }
  | { t: "routes"; seq: number; routes: Routes; domains: Domains }
  | { t: "certs"; seq: number; certs: CertCopy }
  | { t: "flush"; seq: number }
  | { t: "stop" };

export type FromWorker =
  | { t: "ready"; port: number; httpsPort: number | null }
  | { t: "applied"; seq: number; httpsPort: number | null }
  | { t: "access"; text: string; lines: number }
  | { t: "app-log"; app: string; line: string }
  | { t: "failed"; message: string }
  | { t: "stopped" };

export interface EdgeWorkersOptions {
  /** Worker processes (at least 1). */
  count: number;
  hostname: string;
  /** 0 picks one (the first worker binds it, the others join it). */
  port: number;
  /** HTTPS port; undefined: no HTTPS listener; 0 picks one. */
  httpsPort?: number;
  domain: string;
  trustedProxies?: readonly string[];
  /** Requests in flight toward one instance, over all workers together (default as the router's). */
  perInstance?: number;
  maxBodyBytes?: number;
  maxRequestBodySize: number;
  appLogAll?: boolean;
  /** How the workers are scheduled (scheduling.ts); default edgeScheduling()'s. */
  scheduling?: EdgeScheduling;
  /** Every app's web targets (apps without a healthy instance: []). */
  routes(): Routes;
  /** Custom domains: name -> app. */
  domains(): Domains;
  certs?: EdgeCerts;
  /** Requests that are not for an app (the API, git), on lj serve's private listener. */
  other(req: Request, server: Server<WsData>): Response | Promise<Response>;
  websocket?: WebSocketHandler<WsData>;
  /** A batch of access-log lines from a worker. */
  access?(text: string): void;
  appLog?(app: string, line: string): void;
  log(line: string): void;
}

interface Slot {
  proc: Subprocess | null;
  startedAt: number;
  /** Requests this slot's processes served (from their access-log batches). */
  requests: number;
  httpsPort: number | null;
  applied: number;
  restartDelay: number;
  /** A worker of this slot has listened (a later one that fails is retried, not fatal). */
  served?: boolean;
  ready?: (port: number) => void;
  failed?: (e: Error) => void;
  stopped?: () => void;
}

const ENTRY = join(import.meta.dir, "worker.ts");

export class EdgeWorkers {
  private slots: Slot[] = [];
  private config!: WorkerConfig;
  private inner!: Server<WsData>;
  private seq = 0;
  private stopping = false;
  private pending: { seq: number; done: () => void }[] = [];
  private publishQueued = false;
  private certNames = "";

  private readonly scheduling: EdgeScheduling;

  private constructor(private readonly o: EdgeWorkersOptions) {
    this.scheduling = o.scheduling ?? edgeScheduling();
  }

  /** Starts the workers; resolves once every one listens (rejects when the first cannot). */
  static async start(o: EdgeWorkersOptions): Promise<EdgeWorkers> {
    const w = new EdgeWorkers(o);
    try {
      await w.begin();
    } catch (e) {
      await w.stop();
      throw e;
    }
    return w;
  }

  private async begin(): Promise<void> {
    const o = this.o;
    if (!Number.isInteger(o.count) || o.count < 1) throw new Error(`edge workers: ${o.count} is not a count`);
    this.inner = privateListener(o);
    this.config = {
      hostname: o.hostname,
      port: o.port,
      httpsPort: o.httpsPort === 0 ? freePort(o.hostname) : o.httpsPort,
      domain: o.domain,
      trustedProxies: o.trustedProxies ?? [],
      perInstance: Math.max(1, Math.ceil((o.perInstance ?? DEFAULT_PER_INSTANCE) / o.count)),
      maxBodyBytes: o.maxBodyBytes,
      maxRequestBodySize: o.maxRequestBodySize,
      appLogAll: o.appLogAll,
      otherPort: this.inner.port!,
    };
    this.certNames = this.certKey();
    // The first worker binds the port (maybe picking it); the others join it.
    const first = this.newSlot();
    this.config.port = await this.spawn(first);
    await Promise.all(Array.from({ length: o.count - 1 }, () => this.spawn(this.newSlot())));
  }

  private newSlot(): Slot {
    const s: Slot = { proc: null, startedAt: 0, requests: 0, httpsPort: null, applied: 0, restartDelay: 50 };
    this.slots.push(s);
    return s;
  }

  private spawn(slot: Slot): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      slot.ready = resolve;
      slot.failed = reject;
      slot.startedAt = performance.now();
      slot.applied = this.seq;
      const proc: Subprocess = Bun.spawn(scheduled(this.scheduling, [process.execPath, ENTRY]), {
        stdio: ["ignore", "inherit", "inherit"],
        serialization: "json",
        ipc: (m: FromWorker) => this.onMessage(slot, m),
        onExit: (_p, code, signal): void => this.onExit(slot, proc, code, signal),
      });
      slot.proc = proc;
      if (this.scheduling.nice !== 0) {
        try {
          setPriority(proc.pid, this.scheduling.nice);
        } catch (e) {
          this.o.log(`edge worker ${proc.pid}: cannot set its nice value: ${(e as Error).message}`);
        }
      }
      const start: ToWorker = {
        t: "start",
        config: this.config,
        routes: this.o.routes(),
        domains: this.o.domains(),
        certs: this.certCopy(),
      };
      proc.send(start);
    });
  }

  private onMessage(slot: Slot, m: FromWorker): void {
    switch (m.t) {
      case "ready":
        slot.served = true;
        slot.httpsPort = m.httpsPort;
        slot.ready?.(m.port);
        slot.ready = slot.failed = undefined;
        break;
      case "applied":
        slot.applied = Math.max(slot.applied, m.seq);
        slot.httpsPort = m.httpsPort;
        this.settle();
        break;
      case "access":
        slot.requests += m.lines;
        this.o.access?.(m.text);
        break;
      case "app-log":
        this.o.appLog?.(m.app, m.line);
        break;
      case "failed":
        this.o.log(`edge worker ${slot.proc?.pid}: ${m.message}`);
        slot.failed?.(new Error(`edge worker: ${m.message}`));
        slot.ready = slot.failed = undefined;
        break;
      case "stopped":
        slot.stopped?.();
        break;
    }
  }

  private onExit(slot: Slot, proc: Subprocess, code: number | null, signal: string | number | null): void {
    if (slot.proc !== proc) return;
    slot.proc = null;
    slot.httpsPort = null;
    slot.stopped?.();
    if (slot.failed) {
      slot.failed(new Error(`edge worker exited (${signal ?? `code ${code}`}) before it listened`));
      slot.ready = slot.failed = undefined;
      // At start that fails lj serve; a replacement that cannot listen is tried again below.
      if (!slot.served) return;
    }
    if (this.stopping) return;
    // Started again at once; one that keeps dying young waits longer each time (at most 5 s).
    const young = performance.now() - slot.startedAt < 2000;
    slot.restartDelay = young ? Math.min(slot.restartDelay * 2, 5000) : 50;
    this.o.log(`edge worker ${proc.pid} ended (${signal ?? `code ${code}`}); starting another`);
    setTimeout(() => {
      if (this.stopping) return;
      this.spawn(slot).catch((e) => this.o.log((e as Error).message));
    }, slot.restartDelay);
  }

  private certCopy(): CertCopy {
    return (this.o.certs?.active() ?? []).map(([n, c]) => [
      n,
      { cert: c.cert, key: c.key, notAfter: c.notAfter },
    ]);
  }

  private certKey(): string {
    return (this.o.certs?.active() ?? []).map(([n, c]) => `${n}@${c.notAfter}`).join(",");
  }

  private broadcast(m: ToWorker): void {
    for (const s of this.slots) {
      try {
        // A worker still starting gets it too, after its start message (IPC keeps the order).
        s.proc?.send(m);
      } catch {}
    }
  }

  /**
   * Routes, domains or certificates changed: every worker gets the new tables (changes in one
   * tick go out together). Workers still starting get them in their start message.
   */
  publish(): void {
    if (this.publishQueued || this.stopping) return;
    this.publishQueued = true;
    queueMicrotask(() => {
      this.publishQueued = false;
      if (this.stopping) return;
      this.broadcast({ t: "routes", seq: ++this.seq, routes: this.o.routes(), domains: this.o.domains() });
      const key = this.certKey();
      if (key !== this.certNames) {
        this.certNames = key;
        this.broadcast({ t: "certs", seq: ++this.seq, certs: this.certCopy() });
      }
    });
  }

  /** Every worker's buffered access-log lines, sent now (resolves when they have arrived). */
  flush(): Promise<void> {
    this.broadcast({ t: "flush", seq: ++this.seq });
    return this.synced();
  }

  /** Resolves once every running worker has applied everything published so far. */
  synced(): Promise<void> {
    return new Promise<void>((done) => {
      queueMicrotask(() => {
        this.pending.push({ seq: this.seq, done });
        this.settle();
      });
    });
  }

  private settle(): void {
    const live = this.slots.filter((s) => s.proc && !s.ready);
    this.pending = this.pending.filter((p) => {
      if (live.some((s) => s.applied < p.seq)) return true;
      p.done();
      return false;
    });
  }

  get port(): number {
    return this.config.port;
  }

  /** The HTTPS port while the workers' HTTPS listeners run (they need a certificate). */
  get httpsPort(): number | undefined {
    return this.slots.find((s) => s.httpsPort !== null)?.httpsPort ?? undefined;
  }

  /** lj serve's private listener (the API behind the workers). */
  get server(): Server<WsData> {
    return this.inner;
  }

  /** Each worker's pid and the requests its slot served. */
  stats(): { pid: number | null; requests: number }[] {
    return this.slots.map((s) => ({ pid: s.proc && !s.ready ? s.proc.pid : null, requests: s.requests }));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.slots.map(async (s) => {
        const p = s.proc;
        if (!p) return;
        const stopped = new Promise<void>((r) => {
          s.stopped = r;
        });
        try {
          p.send({ t: "stop" } satisfies ToWorker);
        } catch {}
        await Promise.race([stopped, Bun.sleep(2000)]);
        p.kill("SIGKILL");
        await p.exited;
      }),
    );
    for (const p of this.pending) p.done();
    this.pending = [];
    this.inner?.stop(true);
  }
}
