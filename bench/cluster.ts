/**
 * The cost of going through Kubernetes: on the two-node test cluster (test/kube-cluster.ts:
 * a real control plane, two `lj node` agents in network namespaces of their own), the time
 * from creating a Deployment of N replicas to all of them Ready, and each pod's latency from
 * Scheduled (the API says it is bound to a node) to Ready; against the same process started N
 * times at once by lj serve's process manager (src/paas/supervisor.ts: an Instance is up when
 * its port accepts connections), in this process, on this machine. Then the same server as a
 * release image (`lj.local/bench:v1`, built by an `lj serve` in this process with the node
 * plugin over the host world): once with the nodes' caches empty (each node pulls the
 * release's layers from lj serve first) and once warm.
 *
 *   bun bench/cluster.ts [--replicas 20]
 *
 * Needs root and .tools/kube (scripts/kube-tools.sh). Last line: JSON.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createWorld } from "../src/build/worlds.ts";
import { Instance } from "../src/paas/supervisor.ts";
import { type RunningServer, startServer } from "../src/server/serve.ts";
import { worldMounts, worldPath } from "../src/store/worlds.ts";
import { createApp, deployDir } from "../test/fixtures/paas/helpers.ts";
import { lj } from "../test/helpers/jail-env.ts";
import {
  type Cluster,
  type NodeAgentProcess,
  nodeNetwork,
  nodesReady,
  startCluster,
  startNodeAgent,
  waitFor,
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

/** N pods of the server: from the host world with its command, or as the release image. */
function deployment(name: string, image: "world" | "release"): unknown {
  const container =
    image === "world"
      ? {
          image: "lj.local/world:host",
          command: ["node", "-e", SERVER],
          ports: [{ containerPort: 8080 }],
          readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
        }
      : {
          // No command: the release's web process (node server.js on PORT 5000).
          image: "lj.local/bench:v1",
          ports: [{ containerPort: 5000 }],
          readinessProbe: { tcpSocket: { port: 5000 }, periodSeconds: 1 },
        };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name },
    spec: {
      replicas: N,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          nodeSelector: { "lightjail/node": "true" },
          tolerations: [{ key: "lightjail/node", operator: "Exists", effect: "NoSchedule" }],
          terminationGracePeriodSeconds: 2,
          containers: [{ name: "web", resources: { limits: { memory: "64Mi", cpu: "100m" } }, ...container }],
        },
      },
    },
  };
}

/** An lj serve in this process that built the release the nodes fetch. */
async function releaseServer(host: string): Promise<{ s: RunningServer; root: string; tokenFile: string }> {
  const root = mkdtempSync(join(tmpdir(), "lj-bench-serve-"));
  process.env.LIGHTJAIL_ROOT = root;
  process.env.LJ_SUBNET = "10.218.8.0/24";
  await createWorld("host", "host");
  const s = await startServer({ hostname: host, healthTimeoutMs: 60_000 });
  const app = mkdtempSync(join(tmpdir(), "lj-bench-app-"));
  writeFileSync(join(app, "package.json"), '{"name": "bench", "version": "1.0.0", "private": true}\n');
  writeFileSync(join(app, "server.js"), SERVER.replace("8080", "process.env.PORT"));
  writeFileSync(join(app, "lj.toml"), 'world = "host"\n');
  await createApp(s, "bench");
  const d = await deployDir(s, "bench", app);
  rmSync(app, { recursive: true, force: true });
  if (d.deploy?.status !== "succeeded") throw new Error(`deploy failed:\n${d.log}`);
  const t = await lj(["node", "token"], { LIGHTJAIL_ROOT: root });
  const tokenFile = join(root, "node-token.txt");
  writeFileSync(tokenFile, t.stdout, { mode: 0o600 });
  return { s, root, tokenFile };
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
  name: string,
  image: "world" | "release",
): Promise<{ total: number; perPod: number[]; nodes: Record<string, number> }> {
  const abort = new AbortController();
  const res = await fetch(
    `${cluster.server}/api/v1/namespaces/default/pods?watch=true&labelSelector=app%3D${name}`,
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
  await cluster.api("POST", "/apis/apps/v1/namespaces/default/deployments", deployment(name, image));
  const timeout = Bun.sleep(180_000).then(() => {
    throw new Error(`only ${ready.size} of ${N} pods Ready after 180 s`);
  });
  const total = await Promise.race([allReady, timeout]);
  abort.abort();
  const perPod = [...ready].map(([name, t]) => t - scheduled.get(name)!);
  await cluster.api(
    "DELETE",
    `/apis/apps/v1/namespaces/default/deployments/${name}?propagationPolicy=Foreground`,
  );
  // The next run starts on quiet nodes.
  await waitFor(`${name}'s pods gone`, 60_000, async () => {
    const l = await cluster.api<{ items: unknown[] }>(
      "GET",
      `/api/v1/namespaces/default/pods?labelSelector=app%3D${name}`,
    );
    return l.items.length === 0;
  });
  return { total, perPod, nodes };
}

const net = nodeNetwork(`ljb${process.pid % 10000}`, "10.218");
let cluster: Cluster | undefined;
let serve: Awaited<ReturnType<typeof releaseServer>> | undefined;
const agents: NodeAgentProcess[] = [];
try {
  const local = await localStarts();
  await net.remove();
  await net.make();
  serve = await releaseServer(net.hostAddress);
  cluster = await startCluster({ apiAddress: net.hostAddress, nodes: net.nodes.map((n) => n.name) });
  for (const n of net.nodes)
    agents.push(
      await startNodeAgent(cluster, n, [
        `--release-server=${serve.s.url}`,
        `--node-token-file=${serve.tokenFile}`,
      ]),
    );
  await nodesReady(cluster, agents, 60_000);
  const kube = await clusterStarts(cluster, "bench", "world");
  const cold = await clusterStarts(cluster, "bench-cold", "release");
  const warm = await clusterStarts(cluster, "bench-warm", "release");
  const m = { world: median(kube.perPod), cold: median(cold.perPod), warm: median(warm.perPod) };
  const result = {
    replicas: N,
    kubernetes: {
      create_to_all_ready_ms: kube.total,
      scheduled_to_ready_ms: { median: m.world, p90: p90(kube.perPod) },
      pods_per_node: kube.nodes,
    },
    release_image: {
      cold: {
        create_to_all_ready_ms: cold.total,
        scheduled_to_ready_ms: { median: m.cold, p90: p90(cold.perPod) },
      },
      warm: {
        create_to_all_ready_ms: warm.total,
        scheduled_to_ready_ms: { median: m.warm, p90: p90(warm.perPod) },
      },
    },
    lj_serve_alone: {
      start_to_all_up_ms: local.total,
      start_to_up_ms: { median: median(local.perProcess), p90: p90(local.perProcess) },
    },
    ratios: {
      pod_scheduled_to_ready_over_local_start: m.world / median(local.perProcess),
      all_ready_over_all_up: kube.total / local.total,
      release_warm_over_world_image: m.warm / m.world,
      release_cold_over_world_image: m.cold / m.world,
      release_warm_over_local_start: m.warm / median(local.perProcess),
    },
    targets: { pod_scheduled_to_ready_over_local_start: "< 2" },
  };
  const ms = (x: number) => `${x.toFixed(0)} ms`;
  console.log(`${N} replicas`);
  console.log(
    `  world image: Deployment created -> all Ready   ${ms(kube.total)} (pods per node ${JSON.stringify(kube.nodes)})`,
  );
  console.log(
    `  world image: per pod Scheduled -> Ready, median  ${ms(m.world)} (p90 ${ms(p90(kube.perPod))})`,
  );
  console.log(`  release image, cold caches: median           ${ms(m.cold)} (all Ready ${ms(cold.total)})`);
  console.log(`  release image, warm caches: median           ${ms(m.warm)} (all Ready ${ms(warm.total)})`);
  console.log(`  lj serve alone: all ${N} up                     ${ms(local.total)}`);
  console.log(`  per process start -> up, median              ${ms(median(local.perProcess))}`);
  console.log(
    `  ratios: world pod / process ${result.ratios.pod_scheduled_to_ready_over_local_start.toFixed(2)}, warm release / world ${result.ratios.release_warm_over_world_image.toFixed(2)}, cold release / world ${result.ratios.release_cold_over_world_image.toFixed(2)}`,
  );
  console.log(JSON.stringify(result));
} finally {
  for (const a of agents) await a.stop();
  await cluster?.stop();
  await serve?.s.stop();
  if (serve) rmSync(serve.root, { recursive: true, force: true });
  await net.remove();
}
