/**
 * The Kubernetes scheduler (`lj serve --scheduler kubernetes --kubeconfig FILE`): an app's
 * formation becomes, in the namespace `lj-APP` (one tenant on every node), a Deployment per
 * process type whose pods run the release image `lj.local/APP:vN` on lightjail nodes (the
 * nodes fetch it from this server: artefacts.ts). Kubernetes places, restarts and rolls the
 * pods; this side keeps the PaaS's promises:
 *
 * - A release is started by a rolling update of its Deployments (new pods must pass their
 *   readiness probe - the health check - before old ones go) and is recorded as current only
 *   once every rollout is complete. A rollout not complete within the health timeout is
 *   undone (each Deployment gets its previous pod template and replicas back, or is deleted
 *   when it is new) and the deploy fails: the pods of the release before keep serving.
 * - The edge's upstreams are the ready pods of the app's `web` Deployment (pod IP and PORT),
 *   from a watch on the pods: the lj serve machine must route the nodes' pod subnets.
 */
import type { V1Deployment, V1Pod } from "@kubernetes/client-node";
import { LjError } from "../errors.ts";
import { releaseNamespace } from "../node/image.ts";
import { connect, describe, type Kube, listWatch, statusOf } from "../node/kube.ts";
import type { ReleaseOf } from "../paas/process-spec.ts";
import type { Counts, Log, Scheduler, SchedulerParts, Staged, Target } from "../paas/scheduler.ts";
import { type InstanceInfo, WEB_PORT } from "../paas/supervisor.ts";

export const APP_LABEL = "lightjail/app";
const PROCESS_LABEL = "lightjail/process";
const RELEASE_LABEL = "lightjail/release";
const NODE_LABEL = "lightjail/node";
const RESTARTED = "lightjail/restarted-at";
const POLL_MS = 250;

export interface KubeSchedulerOptions {
  kubeconfig: string;
  log?: Log;
}

/** Reads the kubeconfig now (a bad one is refused before the server starts). */
export function kubeScheduler(o: KubeSchedulerOptions) {
  const kube = connect(o.kubeconfig);
  return (parts: SchedulerParts): Scheduler => new KubeScheduler(parts, kube, o.log);
}

/**
 * The app's namespace: every app is a tenant of its own on the nodes, and the only namespace
 * where nodes run its release images.
 */
export const namespaceOf = releaseNamespace;
/** A process type as a Kubernetes name (they take no underscore). */
export const kubeName = (type: string) => type.replace(/_/g, "-");

interface KubeStaged extends Staged {
  types: string[];
}

export class KubeScheduler implements Scheduler {
  private readonly kube: Kube;
  private readonly pods = new Map<string, V1Pod>();
  /** Apps whose release serves (after activate or recover): their targets are pods. */
  private readonly serving = new Map<string, number>();
  private readonly stopWatch: () => void;
  private readonly log: Log;

  constructor(
    private readonly p: SchedulerParts,
    kube: Kube,
    log?: Log,
  ) {
    this.kube = kube;
    this.log = log ?? ((l) => process.stderr.write(`lj serve: ${l}\n`));
    const w = listWatch<V1Pod>(this.kube, {
      path: "/api/v1/pods",
      query: { labelSelector: APP_LABEL },
      list: () => this.kube.core.listPodForAllNamespaces({ labelSelector: APP_LABEL }),
      sync: (items) => {
        this.pods.clear();
        for (const pod of items) this.pods.set(pod.metadata?.uid ?? "", pod);
        this.p.changed();
      },
      event: (type, pod) => {
        const uid = pod.metadata?.uid ?? "";
        if (type === "DELETED") this.pods.delete(uid);
        else this.pods.set(uid, pod);
        this.p.changed();
      },
      error: (e) => this.log(`kubernetes pods: ${describe(e)}`),
    });
    this.stopWatch = w.stop;
  }

  async start(app: string, rel: ReleaseOf, counts: Counts, log: Log): Promise<Staged> {
    await this.namespace(app);
    const ns = namespaceOf(app);
    const before = new Map<string, V1Deployment | null>();
    const types = Object.keys(counts);
    log(`-----> Rolling out lj.local/${app}:v${rel.version} on Kubernetes (namespace ${ns})`);
    try {
      for (const type of types) {
        before.set(type, await this.read(ns, type));
        await this.apply(app, rel, type, counts[type]!, before.get(type) ?? null);
      }
      await this.rolledOut(app, types, performance.now() + this.p.healthTimeoutMs);
    } catch (e) {
      log(`-----> Rollout of v${rel.version} failed: undoing it`);
      await this.undo(ns, before);
      throw e;
    }
    return { release: rel.version, types } as KubeStaged;
  }

  async activate(app: string, staged: Staged, log: Log): Promise<void> {
    const ns = namespaceOf(app);
    const keep = new Set((staged as KubeStaged).types.map(kubeName));
    const prev = this.serving.get(app);
    this.serving.set(app, staged.release);
    this.p.changed();
    await this.p.edgeSynced();
    // Types the new release no longer has go; the others rolled over already.
    const list = await this.kube.apps.listNamespacedDeployment({ namespace: ns, labelSelector: APP_LABEL });
    for (const d of list.items) {
      const name = d.metadata?.name ?? "";
      if (!keep.has(name)) await this.deleteDeployment(ns, name);
    }
    if (prev !== undefined) log(`-----> v${prev} pods replaced by v${staged.release}`);
  }

  async scale(app: string, rel: ReleaseOf, counts: Counts, remake: boolean): Promise<void> {
    const ns = namespaceOf(app);
    await this.namespace(app);
    const types = Object.keys(counts);
    for (const type of types) {
      await this.apply(app, rel, type, counts[type]!, await this.read(ns, type), remake);
    }
    this.serving.set(app, rel.version);
    await this.rolledOut(app, types, performance.now() + this.p.healthTimeoutMs).catch((e: Error) =>
      this.p.logs.write(app, "lj", `scale: ${e.message}`),
    );
  }

  targets(app: string): Target[] | null {
    if (!this.serving.has(app)) return null;
    return this.appPods(app)
      .filter((p) => p.metadata?.labels?.[PROCESS_LABEL] === "web" && ready(p) && p.status?.podIP)
      .map((p) => ({ address: p.status!.podIP!, port: WEB_PORT }));
  }

  ps(app: string): InstanceInfo[] {
    return this.appPods(app)
      .map((p) => {
        const c = p.status?.containerStatuses?.[0];
        const state = p.metadata?.deletionTimestamp
          ? "stopped"
          : ready(p)
            ? "up"
            : c?.state?.waiting?.reason === "CrashLoopBackOff"
              ? "crash-loop"
              : c?.lastState?.terminated
                ? "crashed"
                : "starting";
        const last = c?.lastState?.terminated;
        return {
          name: p.metadata?.name ?? "",
          type: p.metadata?.labels?.[PROCESS_LABEL] ?? "",
          release: Number((p.metadata?.labels?.[RELEASE_LABEL] ?? "v0").slice(1)),
          state,
          restarts: c?.restartCount ?? 0,
          address: p.status?.podIP ?? null,
          port: p.metadata?.labels?.[PROCESS_LABEL] === "web" ? WEB_PORT : null,
          memoryBytes: null,
          startedAt: c?.state?.running?.startedAt ? new Date(c.state.running.startedAt).toISOString() : null,
          lastExit: last ? `${last.reason ?? "exited"} (${last.exitCode})` : null,
          limits: null,
          node: p.spec?.nodeName ?? null,
        } satisfies InstanceInfo;
      })
      .sort((a, b) => a.type.localeCompare(b.type) || a.name.localeCompare(b.name));
  }

  async recover(app: string, rel: ReleaseOf, counts: Counts): Promise<void> {
    // The cluster kept running: the Deployments are made to match, without a restart.
    this.serving.set(app, rel.version);
    await this.namespace(app);
    const ns = namespaceOf(app);
    for (const [type, n] of Object.entries(counts))
      await this.apply(app, rel, type, n, await this.read(ns, type));
    this.p.changed();
  }

  async remove(app: string): Promise<void> {
    this.serving.delete(app);
    this.p.changed();
    await this.p.edgeSynced();
    await this.kube.core.deleteNamespace({ name: namespaceOf(app) }).catch((e) => {
      if (statusOf(e) !== 404) throw e;
    });
  }

  async close(): Promise<void> {
    // The pods keep running: the cluster holds them, not this process.
    this.stopWatch();
  }

  // -- Kubernetes objects ------------------------------------------------------------------

  private appPods(app: string): V1Pod[] {
    const ns = namespaceOf(app);
    return [...this.pods.values()].filter(
      (p) => p.metadata?.namespace === ns && p.metadata?.labels?.[APP_LABEL] === app,
    );
  }

  private async namespace(app: string): Promise<void> {
    const name = namespaceOf(app);
    try {
      await this.kube.core.createNamespace({
        body: { metadata: { name, labels: { [APP_LABEL]: app } } },
      });
    } catch (e) {
      if (statusOf(e) !== 409) throw kubeError(`creating namespace ${name}`, e);
    }
  }

  private async read(ns: string, type: string): Promise<V1Deployment | null> {
    try {
      return await this.kube.apps.readNamespacedDeployment({ name: kubeName(type), namespace: ns });
    } catch (e) {
      if (statusOf(e) === 404) return null;
      throw kubeError(`reading deployment ${ns}/${kubeName(type)}`, e);
    }
  }

  /** Creates or replaces the Deployment of `type` for `rel`; returns once the API took it. */
  private async apply(
    app: string,
    rel: ReleaseOf,
    type: string,
    replicas: number,
    existing: V1Deployment | null,
    restart = false,
  ): Promise<void> {
    const ns = namespaceOf(app);
    const body = this.deployment(app, rel, type, replicas);
    const annotations = body.spec!.template.metadata!.annotations!;
    const was = existing?.spec?.template.metadata?.annotations?.[RESTARTED];
    if (restart) annotations[RESTARTED] = new Date().toISOString();
    else if (was) annotations[RESTARTED] = was;
    try {
      if (!existing) {
        await this.kube.apps.createNamespacedDeployment({ namespace: ns, body });
      } else {
        body.metadata!.resourceVersion = existing.metadata?.resourceVersion;
        await this.kube.apps.replaceNamespacedDeployment({ name: kubeName(type), namespace: ns, body });
      }
    } catch (e) {
      throw kubeError(`applying deployment ${ns}/${kubeName(type)}`, e);
    }
  }

  /** The Deployment of one process type of a release (docs/cluster.md shows one). */
  private deployment(app: string, rel: ReleaseOf, type: string, replicas: number): V1Deployment {
    const spec = this.p.specs.processSpec(app, rel, type, `${type}.1`);
    const memMb = Math.ceil((spec.limits?.memoryBytes ?? 512 * 1024 * 1024) / 1024 / 1024);
    const cpuMilli = Math.max(10, Math.round((spec.limits?.cpus ?? 1) * 1000));
    const name = kubeName(type);
    const select = { [APP_LABEL]: app, [PROCESS_LABEL]: type };
    const web = type === "web";
    return {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name, namespace: namespaceOf(app), labels: select },
      spec: {
        replicas,
        selector: { matchLabels: select },
        // New pods must be ready before old ones go: the health check, then the switch.
        strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: "25%", maxUnavailable: 0 } },
        progressDeadlineSeconds: Math.max(Math.ceil(this.p.healthTimeoutMs / 1000), 10),
        revisionHistoryLimit: 5,
        template: {
          metadata: { labels: { ...select, [RELEASE_LABEL]: `v${rel.version}` }, annotations: {} },
          spec: {
            nodeSelector: { [NODE_LABEL]: "true" },
            tolerations: [{ key: NODE_LABEL, operator: "Exists", effect: "NoSchedule" }],
            terminationGracePeriodSeconds: 5,
            automountServiceAccountToken: false,
            enableServiceLinks: false,
            containers: [
              {
                // No command: the node runs the release's process type named like the container.
                name,
                image: `lj.local/${app}:v${rel.version}`,
                ...(web ? { ports: [{ containerPort: WEB_PORT, protocol: "TCP" }] } : {}),
                resources: {
                  limits: { memory: `${memMb}Mi`, cpu: `${cpuMilli}m` },
                  // Scheduling weight: small, so that a rolling update's extra pods fit.
                  requests: { memory: `${Math.min(memMb, 64)}Mi`, cpu: "10m" },
                },
                ...(web
                  ? {
                      readinessProbe: {
                        tcpSocket: { port: WEB_PORT as never },
                        periodSeconds: 1,
                        failureThreshold: 3,
                      },
                    }
                  : {}),
              },
            ],
          },
        },
      },
    };
  }

  /** Resolves once every Deployment of `types` runs only its current template, all ready. */
  private async rolledOut(app: string, types: string[], deadline: number): Promise<void> {
    const ns = namespaceOf(app);
    for (;;) {
      const pending: string[] = [];
      for (const type of types) {
        const d = await this.read(ns, type);
        if (!d) throw new LjError("unavailable", "rollout-failed", `deployment ${ns}/${type} is gone`);
        const want = d.spec?.replicas ?? 0;
        const s = d.status ?? {};
        const done =
          (s.observedGeneration ?? 0) >= (d.metadata?.generation ?? 1) &&
          (s.updatedReplicas ?? 0) === want &&
          (s.replicas ?? 0) === want &&
          (s.availableReplicas ?? 0) === want;
        if (!done) pending.push(`${type} (${s.availableReplicas ?? 0}/${want} ready)`);
      }
      if (!pending.length) return;
      if (performance.now() > deadline) {
        throw new LjError(
          "unavailable",
          "rollout-failed",
          `the rollout did not complete in ${Math.round(this.p.healthTimeoutMs / 1000)} s: ${pending.join(", ")}`,
          { hint: this.why(app) ?? "see `lj ps` and `kubectl -n lj-APP describe pods`" },
        );
      }
      await Bun.sleep(POLL_MS);
    }
  }

  /** What the newest pods that are not ready say (a waiting reason, an exit). */
  private why(app: string): string | null {
    const says = new Set<string>();
    for (const p of this.appPods(app)) {
      if (ready(p)) continue;
      const c = p.status?.containerStatuses?.[0];
      const w = c?.state?.waiting;
      const t = c?.lastState?.terminated;
      if (w?.reason) says.add(`${w.reason}${w.message ? `: ${w.message}` : ""}`);
      else if (t) says.add(`exited ${t.exitCode} (${t.reason})`);
      else if (p.status?.phase === "Pending") says.add("not scheduled yet");
      else says.add("running, not ready (readiness probe failing)");
    }
    return says.size ? `pods: ${[...says].slice(0, 3).join("; ")}` : null;
  }

  /** Puts each Deployment back as it was before a failed rollout. */
  private async undo(ns: string, before: Map<string, V1Deployment | null>): Promise<void> {
    for (const [type, prev] of before) {
      try {
        if (!prev) {
          await this.deleteDeployment(ns, kubeName(type));
          continue;
        }
        const now = await this.read(ns, type);
        if (!now) continue;
        now.spec!.template = prev.spec!.template;
        now.spec!.replicas = prev.spec!.replicas;
        await this.kube.apps.replaceNamespacedDeployment({ name: kubeName(type), namespace: ns, body: now });
      } catch (e) {
        this.log(`undoing the rollout of ${ns}/${type}: ${describe(e)}`);
      }
    }
  }

  private async deleteDeployment(ns: string, name: string): Promise<void> {
    await this.kube.apps.deleteNamespacedDeployment({ name, namespace: ns }).catch((e) => {
      if (statusOf(e) !== 404) throw kubeError(`deleting deployment ${ns}/${name}`, e);
    });
  }
}

function ready(p: V1Pod): boolean {
  if (p.metadata?.deletionTimestamp) return false;
  return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}

function kubeError(what: string, e: unknown): LjError {
  return new LjError("unavailable", "kubernetes", `${what}: ${describe(e)}`);
}
