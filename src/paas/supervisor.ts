/**
 * The process manager. An Instance is one process of an app (web.1, worker.2) in its own jail;
 * it restarts its jail with exponential backoff when it ends unexpectedly and calls a run of
 * quick crashes a crash loop. A ProcessSet is every instance of one release of one app: a deploy
 * starts a new set, health-checks it, makes it the app's active set, then stops the old one.
 */
import { readFileSync } from "node:fs";
import { LjError } from "../errors.ts";
import { fdUse, type LimitCounters, limitCounters, memoryUsage } from "../jail/cgroup-usage.ts";
import { describeEnd } from "../jail/ended.ts";
import { waitForPort } from "../jail/net.ts";
import { parseIp, vethName } from "../jail/net-alloc.ts";
import { type Jail, type SpawnOptions, spawnJail } from "../jail/spawn.ts";
import type { JailSpec } from "../jail/spec.ts";
import { pumpLines } from "../lines.ts";

export type InstanceState = "starting" | "up" | "crashed" | "crash-loop" | "stopped";

export interface InstanceInfo {
  name: string;
  type: string;
  release: number;
  state: InstanceState;
  restarts: number;
  address: string | null;
  port: number | null;
  memoryBytes: number | null;
  startedAt: string | null;
  lastExit: string | null;
  /** What its limits held back in its latest run (null: never started). */
  limits: LimitsSeen | null;
  /** The Kubernetes node it runs on (the Kubernetes scheduler's processes only). */
  node?: string | null;
}

/** What a process's limits held back in one run of its jail, as its samples saw it. */
export interface LimitsSeen {
  /** Forks refused at its pids limit. */
  pidsRefused: number;
  /** Scheduler periods in which it had used up its CPU quota, and the time it waited. */
  cpuThrottled: number;
  cpuThrottledMs: number;
  /** Descriptors its busiest process held at the latest sample, and that process's limit. */
  fds: number | null;
  fdLimit: number | null;
  /** A sample found a process holding every descriptor it may. */
  fdsExhausted: boolean;
}

export interface SupervisorHooks {
  log(source: string, line: string): void;
  /** The instance's state changed (the router re-reads its targets). */
  changed(): void;
  /** After the port opens: resolves once the jail's server is ready (a service's health command). */
  ready?(jail: Jail, deadline: number): Promise<void>;
  /** How often a running process's limits are sampled (default LIMITS_SAMPLE_MS). */
  sampleMs?: number;
}

/**
 * How the PaaS starts jails and learns that one serves: real jails by default; the unit tests
 * pass a fake that runs no jail, so the supervisor's logic is tested in milliseconds.
 */
export interface Spawner {
  spawn(spec: JailSpec, opts?: SpawnOptions): Jail;
  /** Resolves once the jail accepts connections on `port`; throws at the deadline or its end. */
  listening(jail: Jail, port: number, deadline: number): Promise<void>;
}

export const jailSpawner: Spawner = {
  spawn: spawnJail,
  async listening(jail, port, deadline) {
    await wired(jail, deadline);
    await waitForPort(jail, port, { timeoutMs: Math.max(1, deadline - performance.now()) });
  },
};

export const WEB_PORT = 5000;
const BACKOFF_START_MS = 250;
const BACKOFF_MAX_MS = 30_000;
/** A process that ran this long before ending is not crash-looping: backoff starts over. */
const STABLE_MS = 30_000;
const LOOP_CRASHES = 5;
const LOOP_WINDOW_MS = 60_000;
const STOP_GRACE_MS = 5_000;
/** Limits are sampled this often: a few file reads per process, off every spawn's path. */
export const LIMITS_SAMPLE_MS = 5_000;

/**
 * Run-time limits a PaaS process (app process or service) gets unless its formation says
 * otherwise: a CPU quota and a descriptor limit well above a bare jail's 1024.
 */
export const PROCESS_DEFAULTS = { cpus: 1, nofile: 16384 };

export class Instance {
  jail: Jail | null = null;
  state: InstanceState = "starting";
  restarts = 0;
  startedAt: number | null = null;
  lastExit: string | null = null;
  private wanted = true;
  private crashes: number[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private backoff = BACKOFF_START_MS;
  private healthy: Promise<void> | null = null;
  /** The jail ended for failing its health check (not a crash of its own). */
  private unhealthy: Jail | null = null;
  /** In a crash loop (said once in the log) until a run lasts STABLE_MS. */
  private looping = false;
  /** The latest run's limits, sampled while it runs. */
  private watch: LimitWatch | null = null;

  constructor(
    readonly type: string,
    readonly index: number,
    readonly release: number,
    private readonly spec: () => JailSpec,
    private readonly hooks: SupervisorHooks,
    private readonly healthTimeoutMs: number,
    /** The port a health check waits for; null: up once started. */
    readonly port: number | null = type === "web" ? WEB_PORT : null,
    private readonly spawner: Spawner = jailSpawner,
  ) {}

  get name(): string {
    return `${this.type}.${this.index}`;
  }

  start(): void {
    if (!this.wanted) return;
    let jail: Jail;
    let spec: JailSpec;
    try {
      spec = this.spec();
      jail = this.spawner.spawn(spec);
    } catch (e) {
      this.lastExit = `could not start: ${(e as Error).message}`;
      this.hooks.log("lj", `${this.name}: ${this.lastExit}`);
      this.crashed();
      return;
    }
    this.jail = jail;
    this.startedAt = Date.now();
    const say = (what: string) => this.hooks.log("lj", `${this.name} (v${this.release}) ${what}`);
    const watch = new LimitWatch(jail, spec, say, this.hooks.sampleMs ?? LIMITS_SAMPLE_MS);
    this.watch = watch;
    this.setState("starting");
    void pumpLines(jail.stdout, (l) => this.hooks.log(this.name, l));
    void pumpLines(jail.stderr, (l) => this.hooks.log(this.name, l));
    this.healthy = this.checkHealth(jail);
    this.healthy.catch(() => {});
    void jail.exited.then((r) => {
      // Before its cgroups go (or serve another jail): a fork bomb may have lasted no sample.
      watch.finish();
      if (this.jail !== jail) return;
      this.jail = null;
      const how = this.unhealthy === jail ? "killed: it failed its health check" : describeEnd(r);
      this.lastExit = how;
      if (!this.wanted) return;
      this.hooks.log("lj", `${this.name} (v${this.release}) ${how}`);
      this.crashed();
    });
  }

  /**
   * Web processes (and services) are up once their port accepts connections (and services once
   * their health command passes, after every start, restarts too); others once started.
   */
  private async checkHealth(jail: Jail): Promise<void> {
    if (this.port !== null) {
      const deadline = performance.now() + this.healthTimeoutMs;
      try {
        await this.spawner.listening(jail, this.port, deadline);
        if (this.hooks.ready) await this.hooks.ready(jail, deadline);
      } catch (e) {
        // A process that never became healthy is not left running unready: it ends, and like
        // any end it is restarted (with backoff) unless it is no longer wanted.
        if (this.jail === jail && this.wanted) {
          this.hooks.log(
            "lj",
            `${this.name} (v${this.release}) failed its health check: ${(e as Error).message}`,
          );
          this.unhealthy = jail;
          jail.kill("SIGKILL");
        }
        throw e;
      }
    }
    if (this.jail === jail && this.wanted) this.setState("up");
  }

  /** Resolves when this instance's current jail passed its health check. */
  waitHealthy(): Promise<void> {
    if (!this.healthy)
      return Promise.reject(
        new LjError("unavailable", "not-started", `${this.name} never started`, {
          hint: this.lastExit ?? undefined,
        }),
      );
    return this.healthy.catch((e: Error) => {
      throw new LjError(
        "unavailable",
        "health-check-failed",
        `${this.name} failed its health check: ${e.message}`,
        {
          hint: this.lastExit
            ? `last exit: ${this.lastExit}; see \`lj logs\``
            : "see `lj logs` for its output",
        },
      );
    });
  }

  private crashed(): void {
    const t = Date.now();
    if (this.startedAt !== null && t - this.startedAt > STABLE_MS) {
      this.backoff = BACKOFF_START_MS;
      this.looping = false;
    }
    this.crashes = this.crashes.filter((c) => t - c < LOOP_WINDOW_MS);
    this.crashes.push(t);
    const looping = this.crashes.length >= LOOP_CRASHES;
    if (looping && !this.looping) {
      this.hooks.log("lj", `${this.name} is crash-looping: ${this.crashes.length} crashes in a minute`);
    }
    this.looping = looping;
    this.setState(looping ? "crash-loop" : "crashed");
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.wanted) return;
      this.restarts++;
      this.start();
    }, delay);
  }

  private setState(s: InstanceState): void {
    if (this.state === s) return;
    this.state = s;
    this.hooks.changed();
  }

  /** SIGTERM, then SIGKILL after a grace period; resolves once the jail is gone for good. */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    this.wanted = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const jail = this.jail;
    this.setState("stopped");
    if (!jail) return;
    jail.kill("SIGTERM");
    const killer = setTimeout(() => jail.kill("SIGKILL"), graceMs);
    await jail.exited;
    clearTimeout(killer);
    jail.kill("SIGKILL"); // anything the payload left behind in the jail
    await jail.closed;
  }

  memoryBytes(): number | null {
    const jail = this.jail;
    if (!jail) return null;
    try {
      return memoryUsage(jail.cgroups);
    } catch {
      return null;
    }
  }

  info(): InstanceInfo {
    return {
      name: this.name,
      type: this.type,
      release: this.release,
      state: this.state,
      restarts: this.restarts,
      address: this.jail?.address ?? null,
      port: this.port,
      memoryBytes: this.memoryBytes(),
      startedAt: this.startedAt && this.jail ? new Date(this.startedAt).toISOString() : null,
      lastExit: this.lastExit,
      limits: this.watch ? this.watch.now() : null,
    };
  }
}

/**
 * Samples what one run's limits hold back: forks refused at the pids limit, CPU throttling,
 * and the descriptors its busiest process holds against its limit. Each is said once in the
 * app's log when first seen. The cgroup counters outlive the jail (cgroups are used again), so
 * they are counted from the run's start; a last sample is taken as the jail ends.
 */
class LimitWatch {
  readonly seen: LimitsSeen = {
    pidsRefused: 0,
    cpuThrottled: 0,
    cpuThrottledMs: 0,
    fds: null,
    fdLimit: null,
    fdsExhausted: false,
  };
  private readonly base: LimitCounters;
  private timer: ReturnType<typeof setInterval> | null;

  constructor(
    private readonly jail: Jail,
    private readonly spec: JailSpec,
    private readonly say: (what: string) => void,
    everyMs: number,
  ) {
    this.base = limitCounters(jail.cgroups);
    this.timer = setInterval(() => this.sample(true), everyMs);
    this.timer.unref?.();
  }

  /** What was seen, with the descriptors as they are now while the jail runs. */
  now(): LimitsSeen {
    if (this.timer) this.sample(true);
    return { ...this.seen };
  }

  finish(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
    this.sample(false);
  }

  private sample(live: boolean): void {
    try {
      this.counters();
      if (live) this.descriptors();
    } catch {
      // A reading that fails (the jail ending meanwhile) is taken again next time.
    }
  }

  private counters(): void {
    const now = limitCounters(this.jail.cgroups);
    const s = this.seen;
    // Gone cgroups read as zero: what was seen stays.
    const refused = Math.max(s.pidsRefused, now.pidsRefused - this.base.pidsRefused);
    if (refused > 0 && s.pidsRefused === 0) this.say(`hit its pids limit (${this.spec.limits?.pids})`);
    s.pidsRefused = refused;
    const throttled = now.throttled - this.base.throttled;
    if (throttled > s.cpuThrottled) {
      if (s.cpuThrottled === 0) {
        this.say(`was CPU-throttled ${throttled} times (its quota: ${this.spec.limits?.cpus} CPU)`);
      }
      s.cpuThrottled = throttled;
      s.cpuThrottledMs = Math.round((now.throttledUs - this.base.throttledUs) / 1000);
    }
  }

  private descriptors(): void {
    const use = fdUse(this.jail.cgroups);
    if (!use) return;
    const s = this.seen;
    s.fds = use.open;
    s.fdLimit = use.limit;
    if (use.limit !== null && use.open >= use.limit && !s.fdsExhausted) {
      s.fdsExhausted = true;
      this.say(`used all ${use.limit} file descriptors`);
    }
  }
}

/**
 * Resolves once the jail's veth is up at both ends. Until then a connection to its address
 * follows the host's default route, and where that leads to something accepting any TCP
 * connection (as on our VMs), a port check would pass before the jail even has its address.
 */
export async function wired(jail: Jail, deadline: number): Promise<void> {
  const ip = jail.address ? parseIp(jail.address) : null;
  if (ip === null) return;
  const state = `/sys/class/net/${vethName(ip)}/operstate`;
  let ended = false;
  void jail.exited.then(() => (ended = true));
  for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
    try {
      if (readFileSync(state, "utf8").trim() === "up") return;
    } catch {}
    if (ended)
      throw new LjError("unavailable", "jail-ended", `the jail at ${jail.address} ended before it was wired`);
    if (performance.now() > deadline) {
      throw new LjError("unavailable", "net-timeout", `the jail at ${jail.address} was not wired in time`);
    }
    await Bun.sleep(delay);
  }
}

export type SpecFactory = (type: string, index: number) => JailSpec;

/** All instances of one release of one app. */
export class ProcessSet {
  readonly instances: Instance[] = [];

  constructor(
    readonly app: string,
    readonly release: number,
    private readonly specFor: SpecFactory,
    private readonly hooks: SupervisorHooks,
    private readonly healthTimeoutMs: number,
    private readonly spawner: Spawner = jailSpawner,
  ) {}

  /** Starts instances up to `counts` (and stops the surplus); returns the new instances. */
  async scale(counts: Record<string, number>): Promise<Instance[]> {
    const started: Instance[] = [];
    const stopping: Promise<void>[] = [];
    for (const [type, count] of Object.entries(counts)) {
      const mine = this.instances.filter((i) => i.type === type).sort((a, b) => a.index - b.index);
      for (let index = mine.length + 1; index <= count; index++) {
        const inst = new Instance(
          type,
          index,
          this.release,
          () => this.specFor(type, index),
          this.hooks,
          this.healthTimeoutMs,
          type === "web" ? WEB_PORT : null,
          this.spawner,
        );
        this.instances.push(inst);
        inst.start();
        started.push(inst);
      }
      for (const extra of mine.slice(count)) {
        this.instances.splice(this.instances.indexOf(extra), 1);
        stopping.push(extra.stop());
      }
    }
    for (const inst of [...this.instances]) {
      if (counts[inst.type] === undefined) {
        this.instances.splice(this.instances.indexOf(inst), 1);
        stopping.push(inst.stop());
      }
    }
    await Promise.all(stopping);
    this.hooks.changed();
    return started;
  }

  /** Resolves when every instance passed its health check; throws the first failure. */
  async healthy(instances: Instance[] = this.instances): Promise<void> {
    await Promise.all(instances.map((i) => i.waitHealthy()));
  }

  webTargets(): Instance[] {
    return this.instances.filter((i) => i.type === "web" && i.state === "up" && i.jail?.address);
  }

  async stop(): Promise<void> {
    const all = this.instances.splice(0);
    await Promise.all(all.map((i) => i.stop()));
    this.hooks.changed();
  }

  info(): InstanceInfo[] {
    return this.instances.map((i) => i.info());
  }
}
