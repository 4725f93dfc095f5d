/**
 * The cost of going through Kubernetes: on the two-node test cluster (test/kube-cluster.ts:
 * a real control plane, two `lj node` agents in network namespaces of their own), the time
 * from creating a Deployment of N replicas to all of them Ready, and each pod's latency from
 * Scheduled (the API says it is bound to a node) to Ready; against the same process started N
 * times at once by lj serve's process manager (src/paas/supervisor.ts: an Instance is up when
 * its port accepts connections), in this process, on this machine.
 *
 *   bun bench/cluster.ts [--replicas 20]
 *
 * Needs root and .tools/kube (scripts/kube-tools.sh). Last line: JSON.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createWorld } from "../src/build/worlds.ts";
import { Instance } from "../src/paas/supervisor.ts";
import { worldMounts, worldPath } from "../src/store/worlds.ts";
import {
  type Cluster,
  type NodeAgentProcess,
  nodeNetwork,
  nodesReady,
  startCluster,
  startNodeAgent,
} from "../test/kube-cluster.ts";

const { values } = parseArgs({ options: { replicas: { type: "string", default: "20" } } });
const N = Number(values.replicas);

const SERVER = `require("http").createServer((q, s) => s.end("ok\\n")).listen(8080);`;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : Number.NaN;
};
const p90 = (xs: number[]) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))]!;

/** lj serve's process manager starting the same server N times at once. */
async function localStarts(): Promise<{ total: number; perProcess: number[] }> {
  const root = mkdtempSync(join(tmpdir(), "lj-bench-cluster-"));
  process.env.LIGHTJAIL_ROOT = root;
  process.env.LJ_SUBNET = "10.218.9.0/24";
  await createWorld("host", "host");
  const world = worldPath("host");
  const mounts = await worldMounts("host");
  const ups: number[] = [];
  const t0 = performance.now();
  const instances: Instance[] = [];
  await new Promise<void>((resolve) => {
    for (let i = 1; i <= N; i++) {
      const started = performance.now();
      let done = false;
      const inst: Instance = new Instance(
        "web",
        i,
        1,
        () => ({
          argv: ["node", "-e", SERVER],
          layers: [world],
          mounts,
          env: { PATH: "/usr/bin:/bin" },
          net: "private",
          limits: { memoryBytes: 64 * 1024 * 1024, pids: 512, cpus: 0.1 },
          stdio: ["ignore", "pipe", "pipe"],
        }),
        {
          log: () => {},
          changed: () => {
            if (!done && inst.state === "up") {
              done = true;
              ups.push(performance.now() - started);
              if (ups.length === N) resolve();
            }
          },
        },
        60_000,
        8080,
      );
      instances.push(inst);
      inst.start();
    }
  });
  const total = performance.now() - t0;
  await Promise.all(instances.map((i) => i.stop()));
  rmSync(root, { recursive: true, force: true });
  delete process.env.LIGHTJAIL_ROOT;
  return { total, perProcess: ups };
}

function deployment(): unknown {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "bench" },
    spec: {
      replicas: N,
      selector: { matchLabels: { app: "bench" } },
      template: {
        metadata: { labels: { app: "bench" } },
        spec: {
          nodeSelector: { "lightjail/node": "true" },
          tolerations: [{ key: "lightjail/node", operator: "Exists", effect: "NoSchedule" }],
          terminationGracePeriodSeconds: 2,
          containers: [
            {
              name: "web",
              image: "lj.local/world:host",
              command: ["node", "-e", SERVER],
              ports: [{ containerPort: 8080 }],
              resources: { limits: { memory: "64Mi", cpu: "100m" } },
              readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
            },
          ],
        },
      },
    },
  };
}

interface PodEvent {
  type: string;
  object: {
    metadata: { name: string; labels?: Record<string, string> };
    spec: { nodeName?: string };
    status: { conditions?: { type: string; status: string }[] };
  };
}

/** Watches the bench's pods from before the Deployment exists, noting when each is bound and Ready. */
async function clusterStarts(
  cluster: Cluster,
): Promise<{ total: number; perPod: number[]; nodes: Record<string, number> }> {
  const abort = new AbortController();
  const res = await fetch(
    `${cluster.server}/api/v1/namespaces/default/pods?watch=true&labelSelector=app%3Dbench`,
    {
      headers: { authorization: `Bearer ${cluster.adminToken}` },
      tls: { ca: Bun.file(cluster.caFile) },
      signal: abort.signal,
    },
  );
  const scheduled = new Map<string, number>();
  const ready = new Map<string, number>();
  const nodes: Record<string, number> = {};
  const t0 = performance.now();
  const allReady = (async () => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of res.body!) {
      buf += dec.decode(chunk, { stream: true });
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const ev = JSON.parse(buf.slice(0, nl)) as PodEvent;
        buf = buf.slice(nl + 1);
        const p = ev.object;
        const now = performance.now();
        if (p.spec.nodeName && !scheduled.has(p.metadata.name)) scheduled.set(p.metadata.name, now);
        const isReady = p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        if (isReady && !ready.has(p.metadata.name)) {
          ready.set(p.metadata.name, now);
          nodes[p.spec.nodeName!] = (nodes[p.spec.nodeName!] ?? 0) + 1;
          if (ready.size === N) return performance.now() - t0;
        }
      }
    }
    throw new Error("the watch ended before every pod was Ready");
  })();
  await cluster.api("POST", "/apis/apps/v1/namespaces/default/deployments", deployment());
  const timeout = Bun.sleep(180_000).then(() => {
    throw new Error(`only ${ready.size} of ${N} pods Ready after 180 s`);
  });
  const total = await Promise.race([allReady, timeout]);
  abort.abort();
  const perPod = [...ready].map(([name, t]) => t - scheduled.get(name)!);
  await cluster.api(
    "DELETE",
    "/apis/apps/v1/namespaces/default/deployments/bench?propagationPolicy=Foreground",
  );
  return { total, perPod, nodes };
}

const net = nodeNetwork(`ljb${process.pid % 10000}`, "10.218");
let cluster: Cluster | undefined;
const agents: NodeAgentProcess[] = [];
try {
  const local = await localStarts();
  await net.remove();
  await net.make();
  cluster = await startCluster({ apiAddress: net.hostAddress, nodes: net.nodes.map((n) => n.name) });
  for (const n of net.nodes) agents.push(await startNodeAgent(cluster, n));
  await nodesReady(cluster, agents, 60_000);
  const kube = await clusterStarts(cluster);
  const result = {
    replicas: N,
    kubernetes: {
      create_to_all_ready_ms: kube.total,
      scheduled_to_ready_ms: { median: median(kube.perPod), p90: p90(kube.perPod) },
      pods_per_node: kube.nodes,
    },
    lj_serve_alone: {
      start_to_all_up_ms: local.total,
      start_to_up_ms: { median: median(local.perProcess), p90: p90(local.perProcess) },
    },
    ratios: {
      pod_scheduled_to_ready_over_local_start: median(kube.perPod) / median(local.perProcess),
      all_ready_over_all_up: kube.total / local.total,
    },
    targets: { pod_scheduled_to_ready_over_local_start: "< 2" },
  };
  console.log(`${N} replicas`);
  console.log(
    `  Deployment created -> all Ready      ${kube.total.toFixed(0)} ms (pods per node ${JSON.stringify(kube.nodes)})`,
  );
  console.log(
    `  per pod Scheduled -> Ready, median   ${median(kube.perPod).toFixed(0)} ms (p90 ${p90(kube.perPod).toFixed(0)})`,
  );
  console.log(`  lj serve alone: all ${N} up          ${local.total.toFixed(0)} ms`);
  console.log(
    `  per process start -> up, median      ${median(local.perProcess).toFixed(0)} ms (p90 ${p90(local.perProcess).toFixed(0)})`,
  );
  console.log(
    `  ratio (median per pod / per process) ${result.ratios.pod_scheduled_to_ready_over_local_start.toFixed(2)}`,
  );
  console.log(JSON.stringify(result));
} finally {
  for (const a of agents) await a.stop();
  await cluster?.stop();
  await net.remove();
}
