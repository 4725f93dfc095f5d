/**
 * Release images on a node: a release built by a real `lj serve` (the static plugin's overlay
 * and the app's slug, by tarball deploy) runs as a pod on a node (in this process, on
 * loopback, against a real control plane), fetched with the node token through the artefact
 * endpoints, verified by digest, cached and collected. A proxy between node and server can
 * alter blobs on their way.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { NodeAgent } from "../src/node/agent.ts";
import { type RunningServer, startServer } from "../src/server/serve.ts";
import { appCopy, createApp, deployDir, removeAppCopies } from "./fixtures/paas/helpers.ts";
import { type JailEnv, lj, makeJailEnv } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";
import { type Cluster, kubeTools, startCluster, waitFor } from "./kube-cluster.ts";

const NODE = "rel";
/** Release images of app `site` run only in its namespace. */
const NS = "lj-site";
let cluster: Cluster;
let env: JailEnv;
let s: RunningServer;
let agent: NodeAgent;
let nodeToken: string;
let proxy: ReturnType<typeof Bun.serve>;
/** The proxy flips a byte in every blob while set. */
let tamper = false;
const agentLog: string[] = [];

interface Pod {
  status: {
    phase: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { state: { waiting?: { reason: string; message?: string } } }[];
  };
}

beforeAll(async () => {
  if (!isRoot()) return;
  if (!existsSync(join(kubeTools, "kube")))
    throw new Error(`${kubeTools}/kube is missing: run scripts/kube-tools.sh`);
  process.env.LJ_SUBNET = "10.213.0.0/24";
  env = await makeJailEnv();
  s = await startServer({ healthTimeoutMs: 15_000 });
  await createApp(s, "site");
  const d = await deployDir(s, "site", appCopy("static-plain"));
  if (d.deploy?.status !== "succeeded") throw new Error(`deploy failed:\n${d.log}`);
  const t = await lj(["node", "token"], { LIGHTJAIL_ROOT: env.root });
  if (t.code !== 0) throw new Error(t.stderr);
  nodeToken = t.stdout.trim();
  proxy = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const u = new URL(req.url);
      const res = await fetch(`${s.url}${u.pathname}`, { headers: req.headers });
      if (!tamper || !u.pathname.includes("/blobs/") || !res.ok) return res;
      const body = new Uint8Array(await res.arrayBuffer());
      body[body.length - 20]! ^= 0xff;
      return new Response(body, { status: res.status, headers: res.headers });
    },
  });
  cluster = await startCluster({ nodes: [NODE] });
  await cluster.api("POST", "/api/v1/namespaces", { metadata: { name: NS } });
  agent = new NodeAgent({
    kubeconfig: cluster.nodeKubeconfig(NODE),
    name: NODE,
    address: "127.0.0.1",
    kubeletPort: 0,
    clientCaFile: cluster.kubeletClientCa,
    reserve: { cpus: 0, memoryBytes: 0 },
    maxPods: 20,
    heartbeatSeconds: 2,
    releases: { url: `http://127.0.0.1:${proxy.port}`, token: nodeToken },
    imageGraceSeconds: 0,
    log: (l) => agentLog.push(l),
  });
  await agent.start();
}, 300_000);

afterAll(async () => {
  removeAppCopies();
  if (!isRoot()) return;
  await agent?.stop(1000);
  await cluster?.stop();
  proxy?.stop(true);
  await s?.stop();
  env?.cleanup();
}, 60_000);

const pod = (name: string) => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name },
  spec: {
    nodeName: NODE,
    terminationGracePeriodSeconds: 2,
    containers: [
      {
        // No command: the release's `web` process runs.
        name: "web",
        image: "lj.local/site:v1",
        ports: [{ containerPort: 5000 }],
        readinessProbe: { httpGet: { path: "/", port: 5000 }, periodSeconds: 1 },
      },
    ],
  },
});

const create = (name: string, ns = NS) => cluster.api("POST", `/api/v1/namespaces/${ns}/pods`, pod(name));
const read = (name: string, ns = NS) => cluster.api<Pod>("GET", `/api/v1/namespaces/${ns}/pods/${name}`);
const remove = (name: string, ns = NS) =>
  cluster.api("DELETE", `/api/v1/namespaces/${ns}/pods/${name}`, { gracePeriodSeconds: 1 });
const ready = (p: Pod) =>
  p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;

async function until(
  name: string,
  what: string,
  ok: (p: Pod) => boolean,
  ms = 60_000,
  ns = NS,
): Promise<Pod> {
  let last: Pod | undefined;
  await waitFor(
    `${name}: ${what}`,
    ms,
    async () => {
      last = await read(name, ns);
      return ok(last);
    },
    () => `${JSON.stringify(last?.status)}\n${agentLog.join("\n")}`,
  );
  return last!;
}

async function gone(name: string, ns = NS): Promise<void> {
  await waitFor(`${name} deleted`, 30_000, async () => {
    const r = await cluster.raw("GET", `/api/v1/namespaces/${ns}/pods/${name}`);
    return r.status === 404;
  });
}

const layersDir = () => agent.images!.dir;

describe("release images: lj.local/APP:vN from the lj serve that built it", () => {
  rootTest("the artefact endpoints take the node token and nothing else", async () => {
    const manifestUrl = `${s.url}/node/v1/releases/site/v1`;
    const none = await fetch(manifestUrl);
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe("auth-required");
    const admin = await fetch(manifestUrl, { headers: { authorization: `Bearer ${s.token}` } });
    expect(admin.status).toBe(401);
    expect(((await admin.json()) as { error: { code: string } }).error.code).toBe("bad-token");
    const byNode = { authorization: `Bearer ${nodeToken}` };
    // The node token opens nothing of the API.
    expect((await fetch(`${s.url}/api/v1/apps`, { headers: byNode })).status).toBe(401);
    const ok = await fetch(manifestUrl, { headers: byNode });
    expect(ok.status).toBe(200);
    const m = (await ok.json()) as {
      world: string;
      layers: { kind: string; digest: string; size: number }[];
      processes: Record<string, { argv: string[] }>;
      env: Record<string, string>;
    };
    expect(m.world).toBe("test");
    expect(m.layers.map((l) => l.kind)).toEqual(["overlay", "slug"]);
    expect(m.processes.web?.argv).toEqual(["/opt/lj/bin/lj-static-server", "/app"]);
    expect(m.env).toMatchObject({ PORT: "5000", LJ_APP: "site", LJ_RELEASE: "v1" });
    const blob = await fetch(`${s.url}/node/v1/blobs/${m.layers[1]!.digest}`, { headers: byNode });
    const bytes = new Uint8Array(await blob.arrayBuffer());
    expect(bytes.length).toBe(m.layers[1]!.size);
    expect(`sha256:${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}`).toBe(m.layers[1]!.digest);
    const unknown = await fetch(`${s.url}/node/v1/blobs/sha256:${"0".repeat(64)}`, { headers: byNode });
    expect(unknown.status).toBe(404);
    expect((await fetch(`${s.url}/node/v1/releases/site/v9`, { headers: byNode })).status).toBe(404);
    expect((await fetch(`${s.url}/node/v1/releases/site/latest`, { headers: byNode })).status).toBe(400);
  });

  rootTest(
    "a release image runs only in its app's namespace: elsewhere it is refused before any pull",
    async () => {
      await create("elsewhere", "default");
      const p = await until(
        "elsewhere",
        "ErrImagePull",
        (p) => p.status.containerStatuses?.[0]?.state.waiting?.reason === "ErrImagePull",
        30_000,
        "default",
      );
      expect(p.status.containerStatuses?.[0]?.state.waiting?.message).toContain(
        "runs only in namespace lj-site",
      );
      expect(agentLog.filter((l) => l.startsWith("pulled "))).toEqual([]);
      expect(readdirSync(layersDir())).toEqual([]);
      await remove("elsewhere", "default");
      await gone("elsewhere", "default");
    },
    60_000,
  );

  rootTest(
    "a blob whose digest does not match is refused (ErrImagePull) and nothing is cached",
    async () => {
      tamper = true;
      try {
        await create("tampered");
        const p = await until(
          "tampered",
          "ErrImagePull",
          (p) => p.status.containerStatuses?.[0]?.state.waiting?.reason === "ErrImagePull",
        );
        expect(p.status.containerStatuses?.[0]?.state.waiting?.message).toMatch(/its digest is sha256:/);
        expect(readdirSync(layersDir())).toEqual([]);
      } finally {
        tamper = false;
      }
      await remove("tampered");
      await gone("tampered");
    },
    90_000,
  );

  rootTest(
    "a release runs as a pod and answers; a second pod reuses the cache; unused layers are collected",
    async () => {
      const pulled = () => agentLog.filter((l) => l.startsWith("pulled ")).length;
      await create("site-a");
      const a = await until("site-a", "Ready", ready);
      const page = await fetch(`http://${a.status.podIP}:5000/`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("a static site, built by the static plugin");
      const pulls = pulled();
      const cached = agent.images!.cached().sort();
      expect(cached).toHaveLength(2);

      await create("site-b");
      const b = await until("site-b", "Ready", ready);
      expect(b.status.podIP).not.toBe(a.status.podIP);
      expect((await fetch(`http://${b.status.podIP}:5000/`)).status).toBe(200);
      expect(pulled()).toBe(pulls);
      expect(agent.images!.cached().sort()).toEqual(cached);

      // Held by a pod, a layer stays whatever its age.
      await remove("site-a");
      await gone("site-a");
      expect(await agent.collectImages()).toEqual([]);
      expect(agent.images!.cached().sort()).toEqual(cached);
      await remove("site-b");
      await gone("site-b");
      await waitFor("layers collected", 15_000, () => agent.images!.cached().length === 0);
      expect(readdirSync(layersDir())).toEqual([]);
    },
    120_000,
  );
});
