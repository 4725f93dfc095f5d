/**
 * One pod on a lightjail node: its container runs as a jail (container-spec.ts), restarted by
 * the pod's restart policy with backoff, probed (probes.ts), and its state is what the node
 * reports as the pod's status. The pod keeps its address across restarts of its container, as
 * a pod's sandbox does. Pods have one container here: more (and init containers) are refused
 * with a status that says so.
 */
import type { V1Container, V1ContainerState, V1Pod, V1PodCondition, V1Probe } from "@kubernetes/client-node";
import type { Published } from "../jail/net.ts";
import { type Jail, type JailResult, spawnJail } from "../jail/spawn.ts";
import type { JailSpec } from "../jail/spec.ts";
import { pumpLines } from "../lines.ts";
import { wired } from "../paas/supervisor.ts";
import { ContainerLog } from "./container-log.ts";
import { type ContainerJail, containerJail } from "./container-spec.ts";
import { ImageError } from "./image.ts";
import { type ProbeTarget, probeTiming, runProbe } from "./probes.ts";
import type { ReleaseImages } from "./release-images.ts";

export interface PodHost {
  nodeName: string;
  hostIP: string;
  /** Where release images come from (null: the node runs world images only). */
  releases: ReleaseImages | null;
  /** The pod's status changed: report it (the host batches reports). */
  changed(pod: PodRunner): void;
  /** Opens a running container's ports to the node network. */
  publish(address: string, ports: number[]): Promise<Published | null>;
  log(line: string): void;
}

const BACKOFF_START_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** Probe retry before a probe's first pass (then its own period). */
const FIRST_PASS_RETRY_MS = 100;
/** A run this long resets the backoff. */
const STABLE_MS = 60_000;

type Phase = "Pending" | "Running" | "Succeeded" | "Failed";

const now = () => new Date().toISOString();

export class PodRunner {
  readonly uid: string;
  readonly log = new ContainerLog();
  private phase: Phase = "Pending";
  private reason: string | undefined;
  private message: string | undefined;
  private state: V1ContainerState = { waiting: { reason: "ContainerCreating" } };
  private lastState: V1ContainerState = {};
  private restarts = 0;
  private ready = false;
  private started = false;
  private jail: Jail | null = null;
  private made: ContainerJail | null = null;
  private address: string | undefined;
  private startTime = now();
  private conditionTimes = new Map<string, string>();
  private backoff = BACKOFF_START_MS;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private wanted = true;
  private runStarted = 0;
  /** Cancels the current run's probes. */
  private stopProbes: (() => void) | null = null;
  private killedForLiveness = false;
  private done: Promise<void> = Promise.resolve();

  constructor(
    private pod: V1Pod,
    private readonly host: PodHost,
  ) {
    this.uid = pod.metadata?.uid ?? "";
  }

  get name(): string {
    return `${this.pod.metadata?.namespace}/${this.pod.metadata?.name}`;
  }

  get container(): V1Container | undefined {
    return this.pod.spec?.containers?.[0];
  }

  get podIP(): string | undefined {
    return this.address;
  }

  get finished(): boolean {
    return this.phase === "Succeeded" || this.phase === "Failed";
  }

  /** The pod object as last seen (its deletion timestamp, grace period). */
  update(pod: V1Pod): void {
    this.pod = pod;
  }

  start(): void {
    const spec = this.pod.spec;
    if ((spec?.containers?.length ?? 0) !== 1 || (spec?.initContainers?.length ?? 0) > 0) {
      this.fail("Unsupported", "lightjail nodes run pods of exactly one container (no init containers)");
      return;
    }
    if (spec?.hostNetwork) {
      this.fail(
        "Unsupported",
        "lightjail nodes do not run pods on the host network: every pod has its own address",
      );
      return;
    }
    void this.run();
  }

  private fail(reason: string, message: string): void {
    this.phase = "Failed";
    this.reason = reason;
    this.message = message;
    this.state = { terminated: { exitCode: 1, reason, message } };
    this.host.changed(this);
  }

  private async run(): Promise<void> {
    if (!this.wanted) return;
    const c = this.container!;
    let spec: JailSpec;
    try {
      this.made ??= await containerJail(this.pod, c, {
        hostIP: this.host.hostIP,
        releases: this.host.releases,
      });
      if (!this.wanted) {
        this.giveBack();
        return;
      }
      spec = { ...this.made.spec, ...(this.address ? { address: this.address } : {}) };
    } catch (e) {
      const reason =
        e instanceof ImageError ? e.reason : ((e as { reason?: string }).reason ?? "CreateContainerError");
      this.state = { waiting: { reason, message: (e as Error).message } };
      this.host.changed(this);
      this.retryLater();
      return;
    }
    if (!this.wanted) return;
    let jail: Jail;
    try {
      jail = spawnJail(spec);
    } catch (e) {
      this.state = { waiting: { reason: "CreateContainerError", message: (e as Error).message } };
      this.host.changed(this);
      this.retryLater();
      return;
    }
    this.jail = jail;
    this.address = jail.address;
    this.runStarted = Date.now();
    this.log.newRun();
    void pumpLines(jail.stdout, (l) => this.log.write(l));
    void pumpLines(jail.stderr, (l) => this.log.write(l));
    this.phase = "Running";
    this.state = { running: { startedAt: new Date(this.runStarted) } };
    this.ready = false;
    this.started = !c.startupProbe;
    if (jail.address) {
      const ports = (c.ports ?? [])
        .filter((p) => (p.protocol ?? "TCP") === "TCP")
        .map((p) => p.containerPort);
      if (ports.length) {
        this.host
          .publish(jail.address, ports)
          .catch((e) => this.host.log(`${this.name}: publish: ${e.message}`));
      }
    }
    this.stopProbes = this.probe(jail, c, spec);
    this.host.changed(this);
    this.done = jail.exited.then((r) => this.ended(jail, r));
  }

  private async ended(jail: Jail, r: JailResult): Promise<void> {
    this.stopProbes?.();
    this.stopProbes = null;
    this.log.endRun();
    const finishedAt = new Date();
    const reason =
      r.reason === "oom"
        ? "OOMKilled"
        : r.reason === "setup"
          ? "StartError"
          : r.status === 0
            ? "Completed"
            : "Error";
    const terminated: V1ContainerState = {
      terminated: {
        exitCode: r.status,
        ...(r.signal !== null ? { signal: r.signal } : {}),
        reason,
        ...(r.error ? { message: r.error } : {}),
        startedAt: new Date(this.runStarted),
        finishedAt,
      },
    };
    this.ready = false;
    // The address is given back with the jail: the next run asks for the same one.
    await jail.closed;
    this.jail = null;
    const policy = this.pod.spec?.restartPolicy ?? "Always";
    const again =
      this.wanted &&
      (policy === "Always" || (policy === "OnFailure" && (r.status !== 0 || this.killedForLiveness)));
    this.killedForLiveness = false;
    if (!again) {
      this.giveBack();
      this.state = terminated;
      if (this.wanted) this.phase = r.status === 0 ? "Succeeded" : "Failed";
      this.host.changed(this);
      return;
    }
    this.lastState = terminated;
    this.restarts++;
    if (Date.now() - this.runStarted > STABLE_MS) this.backoff = BACKOFF_START_MS;
    this.state = {
      waiting: {
        reason: "CrashLoopBackOff",
        message: `back-off ${this.backoff / 1000}s restarting failed container`,
      },
    };
    this.host.changed(this);
    this.retryLater();
  }

  private retryLater(): void {
    if (!this.wanted) return;
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, delay);
  }

  /** Startup, readiness and liveness probes of one run; returns their cancel. */
  private probe(jail: Jail, c: V1Container, spec: JailSpec): () => void {
    let live = true;
    const target: ProbeTarget = {
      address: jail.address ?? "127.0.0.1",
      jail,
      uid: spec.uid ?? 0,
      gid: spec.gid ?? 0,
      env: spec.env ?? {},
      cwd: spec.cwd,
      ports: c.ports ?? [],
    };
    // Probes wait for the jail's network: before its veth is up, the pod's address routes
    // nowhere it should (wired(), src/paas/supervisor.ts).
    const net = wired(jail, performance.now() + 60_000);
    net.catch(() => {});
    const loop = (p: V1Probe, gate: () => boolean, onResult: (ok: boolean) => void, eager = false) => {
      const t = probeTiming(p);
      let ok = 0;
      let bad = 0;
      let everPassed = false;
      const tick = async () => {
        if (!live) return;
        if (gate()) {
          const passed = await runProbe(p, target, t.timeoutMs);
          if (!live) return;
          if (passed) {
            everPassed = true;
            ok++;
            bad = 0;
            if (ok >= t.successThreshold) onResult(true);
          } else {
            bad++;
            ok = 0;
            if (bad >= t.failureThreshold) onResult(false);
          }
        }
        // Until a readiness probe first passes, the node asks again sooner than its period: a
        // pod is Ready as soon as it serves, not up to a period later. (A failure there changes
        // nothing: the pod is not ready yet. Startup and liveness probes count failures, so
        // they keep their period.)
        setTimeout(tick, eager && !everPassed ? Math.min(t.periodMs, FIRST_PASS_RETRY_MS) : t.periodMs);
      };
      net.then(
        () => setTimeout(tick, t.initialDelayMs),
        () => {},
      );
    };
    if (c.startupProbe) {
      loop(
        c.startupProbe,
        () => !this.started,
        (ok) => {
          if (ok) {
            this.started = true;
            if (!c.readinessProbe) this.setReady(true);
            this.host.changed(this);
          } else this.killForProbe(jail, "startup");
        },
      );
    }
    if (c.readinessProbe)
      loop(
        c.readinessProbe,
        () => this.started,
        (ok) => this.setReady(ok),
        true,
      );
    else if (!c.startupProbe) this.setReady(true);
    if (c.livenessProbe) {
      loop(
        c.livenessProbe,
        () => this.started,
        (ok) => {
          if (!ok) this.killForProbe(jail, "liveness");
        },
      );
    }
    return () => {
      live = false;
    };
  }

  private setReady(ready: boolean): void {
    if (this.ready === ready || !this.jail) return;
    this.ready = ready;
    this.host.changed(this);
  }

  private killForProbe(jail: Jail, which: string): void {
    if (this.jail !== jail) return;
    this.host.log(`${this.name}: container failed its ${which} probe, restarting it`);
    this.killedForLiveness = true;
    this.stopProbes?.();
    this.stopGracefully(jail, this.graceMs());
  }

  private graceMs(): number {
    return (
      (this.pod.metadata?.deletionGracePeriodSeconds ?? this.pod.spec?.terminationGracePeriodSeconds ?? 30) *
      1000
    );
  }

  private stopGracefully(jail: Jail, graceMs: number): void {
    jail.kill("SIGTERM");
    const t = setTimeout(() => jail.kill("SIGKILL"), graceMs);
    void jail.closed.then(() => clearTimeout(t));
  }

  /** Stops the pod within its grace period; resolves once its jail is gone. */
  async stop(graceMs = this.graceMs()): Promise<void> {
    this.wanted = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const jail = this.jail;
    if (jail) {
      this.stopGracefully(jail, graceMs);
      await jail.closed;
    }
    await this.done;
    this.giveBack();
  }

  /** The pod is done with its image: its cached layers may go. */
  private giveBack(): void {
    this.made?.image.release();
    this.made = null;
  }

  private condition(type: string, ok: boolean): V1PodCondition {
    const status = ok ? "True" : "False";
    const key = `${type}=${status}`;
    if (!this.conditionTimes.has(key)) {
      this.conditionTimes.delete(`${type}=${ok ? "False" : "True"}`);
      this.conditionTimes.set(key, now());
    }
    return { type, status, lastTransitionTime: this.conditionTimes.get(key) as unknown as Date };
  }

  /** The pod's status as the API takes it (a JSON merge patch of `status`). */
  status(): Record<string, unknown> {
    const c = this.container;
    const running = this.jail !== null && this.state.running !== undefined;
    const ready = running && this.ready;
    return {
      phase: this.phase,
      ...(this.reason ? { reason: this.reason, message: this.message } : { reason: null, message: null }),
      hostIP: this.host.hostIP,
      hostIPs: [{ ip: this.host.hostIP }],
      ...(this.address ? { podIP: this.address, podIPs: [{ ip: this.address }] } : {}),
      startTime: this.startTime,
      conditions: [
        this.condition("PodReadyToStartContainers", this.address !== undefined),
        this.condition("Initialized", true),
        this.condition("ContainersReady", ready),
        this.condition("Ready", ready),
        this.condition("PodScheduled", true),
      ],
      containerStatuses: c
        ? [
            {
              name: c.name,
              image: c.image,
              imageID: c.image,
              ...(this.jail ? { containerID: `lightjail://${this.jail.id}` } : {}),
              ready,
              started: running && this.started,
              restartCount: this.restarts,
              state: this.state,
              lastState: this.lastState,
            },
          ]
        : [],
    };
  }
}
