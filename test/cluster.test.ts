/**
 * lightjail machines as Kubernetes nodes, against a real control plane (test/kube-cluster.ts):
 * two `lj node` agents, each in a network namespace of its own with its own state root and pod
 * subnet, joined by a bridge (in a namespace of its own) to this process's namespace, which
 * plays the edge: it routes to both pod subnets and hosts the API server.
 *
 *   test ns 10.219.0.1 --- bridge --- node a 10.219.0.2 (pods 10.219.1.0/24)
 *                                \--- node b 10.219.0.3 (pods 10.219.2.0/24)
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { runCommand } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";
import {
  type Cluster,
  kubeTools,
  type NodeAgentProcess,
  nodeNetwork,
  nodesReady,
  startCluster,
  startNodeAgent,
  waitFor,
} from "./kube-cluster.ts";

const net = nodeNetwork(`ljk${process.pid % 10000}`, "10.219");
const { nodes } = net;

let cluster: Cluster;
const agents = new Map<string, NodeAgentProcess>();

interface Pod {
  metadata: { name: string; uid: string; deletionTimestamp?: string; labels?: Record<string, string> };
  spec: { nodeName?: string };
  status: {
    phase: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { ready: boolean; restartCount: number }[];
  };
}

const isReady = (p: Pod) =>
  p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;

async function pods(selector: string): Promise<Pod[]> {
  const l = await cluster.api<{ items: Pod[] }>(
    "GET",
    `/api/v1/namespaces/default/pods?labelSelector=${encodeURIComponent(selector)}`,
  );
  return l.items;
}

// Node's HTTP server: Python's resolves its own name at start, which in a namespace without
// a resolver waits for the DNS timeout.
const APP = `
const http = require("http");
http.createServer((req, res) => {
  const ok = req.url === "/" || req.url === "/healthz";
  console.log("served " + req.url);
  res.writeHead(ok ? 200 : 404);
  res.end("hello from " + process.env.POD_NAME + " on " + process.env.NODE + "\\n");
}).listen(8080, () => console.log("listening on 8080 as uid " + process.getuid()));
`;

function deployment(name: string, readinessPath = "/healthz", version = "v1"): unknown {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name },
    spec: {
      replicas: 3,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name, version } },
        spec: {
          nodeSelector: { "lightjail/node": "true" },
          tolerations: [{ key: "lightjail/node", operator: "Exists", effect: "NoSchedule" }],
          topologySpreadConstraints: [
            {
              maxSkew: 1,
              topologyKey: "kubernetes.io/hostname",
              whenUnsatisfiable: "DoNotSchedule",
              nodeTaintsPolicy: "Honor",
              labelSelector: { matchLabels: { app: name } },
            },
          ],
          terminationGracePeriodSeconds: 5,
          containers: [
            {
              name: "web",
              image: "lj.local/world:host",
              command: ["node", "-e", APP],
              env: [
                { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
                { name: "NODE", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
                { name: "VERSION", value: version },
              ],
              ports: [{ containerPort: 8080, name: "http" }],
              resources: { limits: { memory: "128Mi", cpu: "500m" } },
              readinessProbe: { httpGet: { path: readinessPath, port: "http" }, periodSeconds: 1 },
              livenessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 2, failureThreshold: 3 },
            },
          ],
        },
      },
    },
  };
}

async function get(ip: string): Promise<string> {
  const r = await fetch(`http://${ip}:8080/`, { signal: AbortSignal.timeout(3000) });
  return r.text();
}

beforeAll(async () => {
  if (!isRoot()) return;
  if (!existsSync(join(kubeTools, "kube")))
    throw new Error(`${kubeTools}/kube is missing: run scripts/kube-tools.sh`);
  await net.remove();
  await net.make();
  cluster = await startCluster({
    apiAddress: net.hostAddress,
    nodes: nodes.map((n) => n.name),
    nodeGraceSeconds: 5,
    evictAfterSeconds: 2,
  });
  for (const n of nodes) agents.set(n.name, await startNodeAgent(cluster, n));
  await nodesReady(cluster, [...agents.values()], 60_000);
}, 240_000);

afterAll(async () => {
  if (!isRoot()) return;
  for (const a of agents.values()) await a.stop();
  await cluster?.stop();
  await net.remove();
}, 60_000);

describe("lightjail nodes in a Kubernetes cluster", () => {
  rootTest(
    "nodes register with the label, the taint, their podCIDRs and a lease",
    async () => {
      for (const n of nodes) {
        const node = await cluster.api<{
          metadata: { labels: Record<string, string> };
          spec: { podCIDR: string; taints: { key: string; effect: string }[] };
          status: { allocatable: Record<string, string>; addresses: { type: string; address: string }[] };
        }>("GET", `/api/v1/nodes/${n.name}`);
        expect(node.metadata.labels["lightjail/node"]).toBe("true");
        expect(node.spec.podCIDR).toBe(n.pods);
        expect(node.spec.taints).toContainEqual(
          expect.objectContaining({ key: "lightjail/node", effect: "NoSchedule" }),
        );
        expect(node.status.addresses).toContainEqual({ type: "InternalIP", address: n.address });
        expect(Number(node.status.allocatable.pods)).toBe(110);
        const lease = await cluster.api<{ spec: { holderIdentity: string; renewTime: string } }>(
          "GET",
          `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${n.name}`,
        );
        expect(lease.spec.holderIdentity).toBe(n.name);
        expect(Date.now() - Date.parse(lease.spec.renewTime)).toBeLessThan(10_000);
      }
    },
    30_000,
  );

  rootTest(
    "a Deployment of 3 spreads over both nodes and answers; kubectl logs works; a failing rollout keeps the old pods; a killed node's pods move; nothing is left",
    async () => {
      await cluster.api("POST", "/apis/apps/v1/namespaces/default/deployments", deployment("web"));
      let running: Pod[] = [];
      let lastPods: Pod[] | undefined;
      await waitFor(
        "3 ready pods",
        90_000,
        async () => {
          lastPods = await pods("app=web");
          running = lastPods.filter((p) => isReady(p) && !p.metadata.deletionTimestamp);
          return running.length === 3;
        },
        () =>
          `${JSON.stringify((lastPods ?? []).map((p) => [p.metadata.name, p.spec.nodeName, p.status.containerStatuses]))}\n` +
          [...agents.values()].map((a) => `${a.name}: ${a.output.join("")}`).join("\n") +
          cluster.logTail(),
      );
      const byNode = new Set(running.map((p) => p.spec.nodeName));
      expect(byNode).toEqual(new Set(["kube-a", "kube-b"]));
      for (const p of running) {
        const n = nodes.find((x) => x.name === p.spec.nodeName)!;
        // The pod's address is in its node's subnet, and it answers from there.
        expect(p.status.podIP!.startsWith(n.pods.replace(/0\/24$/, ""))).toBe(true);
        expect(await get(p.status.podIP!)).toBe(`hello from ${p.metadata.name} on ${n.name}\n`);
      }

      // kubectl logs: the API server asks the node's log endpoint (TLS, its client certificate).
      const first = running[0]!;
      const log = await cluster.raw("GET", `/api/v1/namespaces/default/pods/${first.metadata.name}/log`);
      expect(log.status).toBe(200);
      expect(log.text).toMatch(/^listening on 8080 as uid \d+\n/);
      expect(log.text).toContain("served /\n");
      // Anyone without the cluster's client certificate is refused by the node itself.
      const n0 = nodes.find((x) => x.name === first.spec.nodeName)!;
      const direct = await fetch(
        `https://${n0.address}:10250/containerLogs/default/${first.metadata.name}/web`,
        {
          tls: { rejectUnauthorized: false },
        },
      ).then(
        (r) => r.status,
        () => "refused",
      );
      expect(direct).toBe("refused");

      // A rollout whose new pods never become ready keeps the old ones serving.
      await cluster.api(
        "PUT",
        "/apis/apps/v1/namespaces/default/deployments/web",
        deployment("web", "/not-ready", "v2"),
      );
      await waitFor("a v2 pod running", 60_000, async () =>
        (await pods("app=web,version=v2")).some((p) => p.status.phase === "Running"),
      );
      await Bun.sleep(4000);
      const v1 = (await pods("app=web,version=v1")).filter(
        (p) => isReady(p) && !p.metadata.deletionTimestamp,
      );
      expect(v1.length).toBe(3);
      for (const p of v1) expect(await get(p.status.podIP!)).toStartWith("hello from");
      expect((await pods("app=web,version=v2")).some(isReady)).toBe(false);
      // Roll back to the working template.
      await cluster.api("PUT", "/apis/apps/v1/namespaces/default/deployments/web", deployment("web"));
      await waitFor("no v2 pods", 60_000, async () => (await pods("app=web,version=v2")).length === 0);

      // SIGKILL one agent: its jails die with it, and its pods are made again on the other node.
      const b = agents.get("kube-b")!;
      b.proc.kill("SIGKILL");
      await b.proc.exited;
      await waitFor(
        "3 ready pods on kube-a",
        90_000,
        async () => {
          const live = (await pods("app=web")).filter(
            (p) => isReady(p) && !p.metadata.deletionTimestamp && p.spec.nodeName === "kube-a",
          );
          return live.length === 3;
        },
        () => cluster.logTail(),
      );
      for (const p of (await pods("app=web")).filter((x) => x.spec.nodeName === "kube-a"))
        expect(await get(p.status.podIP!)).toStartWith("hello from");

      // Deleting the Deployment stops every jail; nothing is left on the node.
      await cluster.api(
        "DELETE",
        "/apis/apps/v1/namespaces/default/deployments/web?propagationPolicy=Foreground",
      );
      const a = agents.get("kube-a")!;
      await waitFor("the pods on kube-a gone", 60_000, async () =>
        (await pods("app=web")).every((p) => p.spec.nodeName !== "kube-a"),
      );
      const leases = join(a.root, "run", "net", "leases");
      await waitFor(
        "kube-a's leases released",
        20_000,
        () => !existsSync(leases) || readdirSync(leases).length === 0,
      );
      // No jail's veth left up (ljn<tag><address>); released ones (ljn<tag>x..., down and
      // renamed) go with their namespace, which the kernel may take a while to tear down
      // on a loaded machine; the namespace pool's spares (ljnp..., no jail) stay with the agent.
      let links = "";
      await waitFor(
        "kube-a's jail veths gone",
        20_000,
        async () => {
          links = (await runCommand(["ip", "-n", nodes[0]!.ns, "-o", "link"])).stdout;
          return !/ ljn[0-9a-f]{12}[@:]/.test(links);
        },
        () => `${links}\n${a.output.join("")}`,
      );
      // No filter elements for jails or published ports either.
      const rules = await runCommand(["ip", "netns", "exec", nodes[0]!.ns, "nft", "list", "ruleset"]);
      expect(rules.stdout).toContain("set inbound {");
      expect(rules.stdout).not.toMatch(/set (jails|inbound) \{[^}]*elements/);
      expect(readdirSync(join(a.root, "run", "net", "inbound"))).toEqual([]);
    },
    420_000,
  );
});
