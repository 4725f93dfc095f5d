/**
 * `lj node`: a lightjail machine as a Kubernetes node (the Virtual Kubelet pattern). The agent
 * registers a Node (capacity from the machine less a reserve, the label lightjail/node=true, a
 * taint only pods that tolerate it get past, its jail subnet as podCIDR), renews its Lease and
 * reports its conditions, runs the pods bound to it as jails (pod.ts) and reports their status,
 * serves their logs (kubelet-server.ts), and routes the other nodes' pod subnets (routes.ts).
 */
import { availableParallelism, totalmem } from "node:os";
import { join } from "node:path";
// V1MicroTime: a Date the API reads (six fractional digits where toISOString writes three).
import { V1MicroTime as MicroTime, type V1Node, type V1Pod } from "@kubernetes/client-node";
import pkg from "../../package.json" with { type: "json" };
import { LjError } from "../errors.ts";
import { netConfig, publishPorts } from "../jail/net.ts";
import { paths } from "../store/paths.ts";
import type { ContainerLog } from "./container-log.ts";
import { connect, describe, type Kube, listWatch, mergePatch, statusOf } from "./kube.ts";
import { type KubeletServer, startKubeletServer } from "./kubelet-server.ts";
import { PodRunner } from "./pod.ts";
import { formatBytes, formatCpus } from "./quantity.ts";
import { ReleaseImages, type ReleaseSource } from "./release-images.ts";
import { interfaceOf, RouteTable } from "./routes.ts";

export const NODE_LABEL = "lightjail/node";
/** Pods must tolerate this taint to land on a lightjail node. */
export const NODE_TAINT = { key: NODE_LABEL, value: "true", effect: "NoSchedule" };
export const LEASE_NAMESPACE = "kube-node-lease";

export interface NodeOptions {
  kubeconfig: string;
  name: string;
  /** The node's address on the cluster network (InternalIP): the API server reaches it there. */
  address: string;
  kubeletPort: number;
  /** Verifies clients of the kubelet endpoint (default: the kubeconfig's cluster CA). */
  clientCaFile?: string;
  reserve: { cpus: number; memoryBytes: number };
  maxPods: number;
  /** Lease renewal period; the node's status is reported every few of them. */
  heartbeatSeconds: number;
  /** The lj serve release images come from, and the node token (none: world images only). */
  releases?: ReleaseSource;
  /** How long a cached release layer no pod uses is kept (default 600 s). */
  imageGraceSeconds?: number;
  log?: (line: string) => void;
}

export class NodeAgent {
  private readonly kube: Kube;
  private readonly pods = new Map<string, PodRunner>();
  private readonly reporting = new Map<string, Promise<void>>();
  private readonly dirty = new Set<string>();
  private server: KubeletServer | null = null;
  private stops: (() => void)[] = [];
  private timers: ReturnType<typeof setInterval>[] = [];
  private routes: RouteTable | null = null;
  private uplink = "";
  private readonly podCidr: string;
  private readonly log: (line: string) => void;
  /** The cache of release layers (null without a release server). */
  readonly images: ReleaseImages | null;

  constructor(private readonly opts: NodeOptions) {
    this.kube = connect(opts.kubeconfig);
    this.podCidr = netConfig().subnet.cidr;
    this.log = opts.log ?? ((l) => process.stderr.write(`lj node: ${l}\n`));
    this.images = opts.releases ? new ReleaseImages(opts.releases, this.log) : null;
  }

  /** Collects cached release layers no pod has used for the grace period. */
  collectImages(leftovers = false): Promise<string[]> {
    const grace = (this.opts.imageGraceSeconds ?? 600) * 1000;
    return this.images?.collect(grace, leftovers) ?? Promise.resolve([]);
  }

  async start(): Promise<void> {
    const o = this.opts;
    this.uplink = await interfaceOf(o.address);
    const caFile = o.clientCaFile ?? this.kube.caFile;
    if (!caFile) {
      throw new LjError(
        "config",
        "no-client-ca",
        "the kubeconfig names no CA file to verify the API server's client certificate",
        {
          hint: "pass --client-ca FILE",
        },
      );
    }
    this.server = await startKubeletServer({
      address: o.address,
      port: o.kubeletPort,
      stateDir: join(paths.run(), "kube-node"),
      clientCaFile: caFile,
      logs: { containerLog: (ns, pod, c) => this.containerLog(ns, pod, c) },
    });
    try {
      await this.register();
      await this.renewLease();
    } catch (e) {
      await this.server.stop();
      throw e;
    }
    this.routes = new RouteTable(o.name, this.log);
    // Before any pod holds a layer: what the last run left unused a grace period ago goes.
    await this.collectImages(true).catch((e) => this.log(`release layers: ${describe(e)}`));
    const graceMs = (o.imageGraceSeconds ?? 600) * 1000;
    this.timers.push(
      setInterval(
        () => void this.collectImages().catch((e) => this.log(`release layers: ${describe(e)}`)),
        Math.min(Math.max(graceMs / 2, 1000), 60_000),
      ),
      setInterval(
        () => void this.renewLease().catch((e) => this.log(`lease: ${describe(e)}`)),
        o.heartbeatSeconds * 1000,
      ),
      setInterval(
        () => void this.reportNode().catch((e) => this.log(`node status: ${describe(e)}`)),
        o.heartbeatSeconds * 3000,
      ),
    );
    const known = new Map<string, V1Node>();
    const nodes = listWatch<V1Node>(this.kube, {
      path: "/api/v1/nodes",
      query: {},
      list: () => this.kube.core.listNode(),
      sync: (items) => {
        known.clear();
        for (const n of items) known.set(n.metadata?.name ?? "", n);
        void this.routes?.sync([...known.values()]);
      },
      event: (type, n) => {
        if (type === "DELETED") known.delete(n.metadata?.name ?? "");
        else known.set(n.metadata?.name ?? "", n);
        void this.routes?.sync([...known.values()]);
      },
      error: (e) => this.log(`nodes: ${describe(e)}`),
    });
    const selector = `spec.nodeName=${o.name}`;
    const pods = listWatch<V1Pod>(this.kube, {
      path: "/api/v1/pods",
      query: { fieldSelector: selector },
      list: () => this.kube.core.listPodForAllNamespaces({ fieldSelector: selector }),
      sync: (items) => this.syncPods(items),
      event: (type, pod) => this.podEvent(type, pod),
      error: (e) => this.log(`pods: ${describe(e)}`),
    });
    this.stops.push(nodes.stop, pods.stop);
    this.log(
      `node ${o.name} ready: pods on ${this.podCidr}, kubelet endpoint https://${o.address}:${this.server.port}`,
    );
  }

  /** Stops watching, stops every pod (within `graceMs`), and the log endpoint. */
  async stop(graceMs = 5000): Promise<void> {
    for (const s of this.stops) s();
    for (const t of this.timers) clearInterval(t);
    await Promise.all([...this.pods.values()].map((p) => p.stop(graceMs)));
    await this.server?.stop();
    await this.routes?.clear();
  }

  private containerLog(ns: string, pod: string, container: string): ContainerLog | null {
    for (const p of this.pods.values()) {
      if (p.name === `${ns}/${pod}` && p.container?.name === container) return p.log;
    }
    return null;
  }

  private capacity(): { capacity: Record<string, string>; allocatable: Record<string, string> } {
    const cpus = availableParallelism();
    const mem = totalmem();
    const { reserve, maxPods } = this.opts;
    return {
      capacity: { cpu: formatCpus(cpus), memory: formatBytes(mem), pods: String(maxPods) },
      allocatable: {
        cpu: formatCpus(Math.max(cpus - reserve.cpus, 0)),
        memory: formatBytes(Math.max(mem - reserve.memoryBytes, 0)),
        pods: String(maxPods),
      },
    };
  }

  private nodeStatus(): Record<string, unknown> {
    const t = new Date().toISOString();
    const cond = (type: string, status: string, reason: string, message: string) => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: t,
      lastTransitionTime: this.startedAt,
    });
    return {
      ...this.capacity(),
      addresses: [
        { type: "InternalIP", address: this.opts.address },
        { type: "Hostname", address: this.opts.name },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: this.server?.port ?? this.opts.kubeletPort } },
      nodeInfo: {
        machineID: "",
        systemUUID: "",
        bootID: "",
        kernelVersion: "",
        osImage: "lightjail",
        containerRuntimeVersion: `lightjail://${pkg.version}`,
        kubeletVersion: `lightjail-${pkg.version}`,
        kubeProxyVersion: "",
        operatingSystem: "linux",
        architecture: process.arch === "x64" ? "amd64" : process.arch,
      },
      conditions: [
        cond("Ready", "True", "LightjailReady", "lightjail node agent is running"),
        cond("MemoryPressure", "False", "LightjailNoPressure", "jails have cgroup memory limits"),
        cond("DiskPressure", "False", "LightjailNoPressure", ""),
        cond("PIDPressure", "False", "LightjailNoPressure", ""),
        cond("NetworkUnavailable", "False", "LightjailRoutes", "pod subnets routed by lj node"),
      ],
    };
  }

  private readonly startedAt = new Date().toISOString();

  private async register(): Promise<void> {
    const o = this.opts;
    const labels = {
      [NODE_LABEL]: "true",
      "kubernetes.io/hostname": o.name,
      "kubernetes.io/os": "linux",
      "kubernetes.io/arch": process.arch === "x64" ? "amd64" : process.arch,
    };
    const body = {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: o.name, labels },
      spec: { podCIDR: this.podCidr, podCIDRs: [this.podCidr], taints: [NODE_TAINT] },
      status: this.nodeStatus(),
    };
    try {
      await this.kube.core.createNode({ body: body as V1Node });
    } catch (e) {
      if (statusOf(e) !== 409)
        throw new LjError("unavailable", "node-register", `registering node ${o.name}: ${describe(e)}`);
      const existing = await this.kube.core.readNode({ name: o.name });
      const cidr = existing.spec?.podCIDR;
      if (cidr && cidr !== this.podCidr) {
        throw new LjError(
          "config",
          "pod-cidr-changed",
          `node ${o.name} is registered with pod subnet ${cidr}, this root uses ${this.podCidr}`,
          {
            hint: "use the same subnet (LJ_SUBNET / [net] subnet), or delete the Node object first",
          },
        );
      }
      // A node may change its labels, not its taints or pod subnet (NodeRestriction admission).
      await this.kube.core.patchNode({ name: o.name, body: { metadata: { labels } } }, mergePatch);
      if (!existing.spec?.taints?.some((t) => t.key === NODE_TAINT.key && t.effect === NODE_TAINT.effect)) {
        this.log(`node ${o.name} exists without the ${NODE_TAINT.key} taint: any pod may land here`);
      }
    }
    await this.reportNode();
  }

  private reportNode(): Promise<unknown> {
    return this.kube.core.patchNodeStatus(
      { name: this.opts.name, body: { status: this.nodeStatus() } },
      mergePatch,
    );
  }

  private async renewLease(): Promise<void> {
    const name = this.opts.name;
    const renew = () =>
      this.kube.leases.patchNamespacedLease(
        {
          name,
          namespace: LEASE_NAMESPACE,
          body: { spec: { holderIdentity: name, renewTime: new MicroTime() } },
        },
        mergePatch,
      );
    try {
      await renew();
    } catch (e) {
      if (statusOf(e) !== 404) throw e;
      const node = await this.kube.core.readNode({ name });
      await this.kube.leases.createNamespacedLease({
        namespace: LEASE_NAMESPACE,
        body: {
          metadata: {
            name,
            namespace: LEASE_NAMESPACE,
            ownerReferences: [{ apiVersion: "v1", kind: "Node", name, uid: node.metadata!.uid! }],
          },
          spec: {
            holderIdentity: name,
            leaseDurationSeconds: Math.max(this.opts.heartbeatSeconds * 4, 10),
            renewTime: new MicroTime(),
          },
        },
      });
    }
  }

  // -- pods --------------------------------------------------------------------------------

  private syncPods(items: V1Pod[]): void {
    const seen = new Set<string>();
    for (const p of items) {
      seen.add(p.metadata?.uid ?? "");
      this.podEvent("MODIFIED", p);
    }
    for (const [uid, r] of this.pods) if (!seen.has(uid)) this.forget(uid, r, 0);
  }

  private podEvent(type: string, pod: V1Pod): void {
    const uid = pod.metadata?.uid;
    if (!uid) return;
    const runner = this.pods.get(uid);
    if (type === "DELETED") {
      if (runner) this.forget(uid, runner, 0);
      return;
    }
    if (pod.metadata?.deletionTimestamp) {
      void this.terminate(pod, runner);
      return;
    }
    if (runner) {
      runner.update(pod);
      return;
    }
    const phase = pod.status?.phase;
    if (phase === "Succeeded" || phase === "Failed") return;
    const r = new PodRunner(pod, this.host());
    this.pods.set(uid, r);
    r.start();
  }

  private terminating = new Set<string>();

  /** A pod being deleted: stop it within its grace period, report, then let the API drop it. */
  private async terminate(pod: V1Pod, runner: PodRunner | undefined): Promise<void> {
    const uid = pod.metadata!.uid!;
    if (this.terminating.has(uid)) return;
    this.terminating.add(uid);
    try {
      if (runner) {
        runner.update(pod);
        await runner.stop((pod.metadata?.deletionGracePeriodSeconds ?? 30) * 1000);
        await this.reporting.get(uid);
      }
      await this.kube.core
        .deleteNamespacedPod({
          name: pod.metadata!.name!,
          namespace: pod.metadata!.namespace!,
          // With a body the API server reads the options from it alone (not the query).
          body: { gracePeriodSeconds: 0, preconditions: { uid } },
        })
        .catch((e) => {
          if (statusOf(e) !== 404 && statusOf(e) !== 409)
            this.log(`deleting pod ${pod.metadata?.name}: ${describe(e)}`);
        });
    } finally {
      this.pods.delete(uid);
      this.terminating.delete(uid);
    }
  }

  private forget(uid: string, r: PodRunner, graceMs: number): void {
    this.pods.delete(uid);
    void r.stop(graceMs);
  }

  private host() {
    return {
      nodeName: this.opts.name,
      hostIP: this.opts.address,
      releases: this.images,
      changed: (p: PodRunner) => this.report(p),
      // A node on loopback (one machine, tests) reaches its jails directly: nothing to publish.
      publish: async (address: string, ports: number[]) =>
        this.uplink === "lo" ? null : publishPorts(address, ports, this.uplink),
      log: this.log,
    };
  }

  /** Reports a pod's status; changes while a report is under way go in the next one. */
  private report(p: PodRunner): void {
    if (this.reporting.has(p.uid)) {
      this.dirty.add(p.uid);
      return;
    }
    const send = async () => {
      do {
        this.dirty.delete(p.uid);
        const [namespace, name] = p.name.split("/") as [string, string];
        await this.kube.core
          .patchNamespacedPodStatus({ name, namespace, body: { status: p.status() } }, mergePatch)
          .catch((e) => {
            if (statusOf(e) !== 404) this.log(`status of ${p.name}: ${describe(e)}`);
          });
      } while (this.dirty.has(p.uid));
      this.reporting.delete(p.uid);
    };
    this.reporting.set(p.uid, send());
  }
}
