/**
 * One lightjail node (src/node/agent.ts, in this process) against a real control plane
 * (test/kube-cluster.ts) on loopback: what a pod's spec asks of the node - env, probes of
 * every kind, restart policies, memory limits, refusal of what it cannot run, deletion within
 * the grace period - as the API reports it.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { NodeAgent } from "../src/node/agent.ts";
import { type JailEnv, lj, makeJailEnv } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";
import { type Cluster, kubeTools, startCluster, waitFor } from "./kube-cluster.ts";

const NODE = "solo";
let cluster: Cluster;
let env: JailEnv;
let agent: NodeAgent;
const agentLog: string[] = [];

interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
  status: {
    phase: string;
    reason?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: {
      ready: boolean;
      restartCount: number;
      state: {
        waiting?: { reason: string; message?: string };
        running?: unknown;
        terminated?: { exitCode: number; reason: string };
      };
      lastState: { terminated?: { exitCode: number; reason: string } };
    }[];
  };
}

beforeAll(async () => {
  if (!isRoot()) return;
  if (!existsSync(join(kubeTools, "kube")))
    throw new Error(`${kubeTools}/kube is missing: run scripts/kube-tools.sh`);
  process.env.LJ_SUBNET = "10.217.0.0/24";
  env = await makeJailEnv();
  cluster = await startCluster({ nodes: [NODE] });
  agent = new NodeAgent({
    kubeconfig: cluster.nodeKubeconfig(NODE),
    name: NODE,
    address: "127.0.0.1",
    kubeletPort: 0,
    clientCaFile: cluster.kubeletClientCa,
    reserve: { cpus: 0, memoryBytes: 0 },
    maxPods: 20,
    heartbeatSeconds: 2,
    log: (l) => agentLog.push(l),
  });
  await agent.start();
}, 240_000);

afterAll(async () => {
  if (!isRoot()) return;
  await agent?.stop(1000);
  await cluster?.stop();
  env?.cleanup();
}, 60_000);

function pod(name: string, container: Record<string, unknown>, spec: Record<string, unknown> = {}): unknown {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name },
    spec: {
      nodeName: NODE,
      terminationGracePeriodSeconds: 2,
      ...spec,
      containers: [{ name: "main", image: "lj.local/world:test", ...container }],
    },
  };
}

const create = (p: unknown) => cluster.api("POST", "/api/v1/namespaces/default/pods", p);
const read = (name: string) => cluster.api<Pod>("GET", `/api/v1/namespaces/default/pods/${name}`);
const ready = (p: Pod) =>
  p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;

async function until(name: string, what: string, ok: (p: Pod) => boolean, ms = 30_000): Promise<Pod> {
  let last: Pod | undefined;
  await waitFor(
    `${name}: ${what}`,
    ms,
    async () => {
      last = await read(name);
      return ok(last);
    },
    () => `${JSON.stringify(last?.status)}\n${agentLog.join("\n")}`,
  );
  return last!;
}

describe("a lightjail node runs pods as jails", () => {
  rootTest(
    "env and fieldRefs, an exec readiness probe inside the jail, logs through the API server",
    async () => {
      await create(
        pod("env", {
          command: [
            "sh",
            "-c",
            'echo "name=$POD_NAME node=$NODE greeting=$GREETING uid=$(id -u)"; touch /tmp/ready; exec sleep 600',
          ],
          env: [
            { name: "WHO", value: "world" },
            { name: "GREETING", value: "hello $(WHO)" },
            { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
            { name: "NODE", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
          ],
          // Runs in the jail (/tmp/ready is the jail's own /tmp), as confined as the container:
          // its tenant uid, no capabilities, the seccomp filter.
          readinessProbe: {
            exec: {
              command: [
                "sh",
                "-c",
                "test -e /tmp/ready && [ $(id -u) -gt 65535 ] && grep -Eq '^CapEff:\\s+0+$' /proc/self/status && grep -Eq '^Seccomp:\\s+2$' /proc/self/status",
              ],
            },
            periodSeconds: 1,
          },
        }),
      );
      const p = await until("env", "Ready", ready);
      expect(p.status.phase).toBe("Running");
      expect(p.status.podIP).toMatch(/^10\.217\.0\.\d+$/);
      const log = await cluster.raw("GET", "/api/v1/namespaces/default/pods/env/log");
      expect(log.status).toBe(200);
      const m = /^name=env node=solo greeting=hello world uid=(\d+)\n$/.exec(log.text);
      expect(m).not.toBeNull();
      // The namespace's tenant uid, never root.
      expect(Number(m![1])).toBeGreaterThan(65535);
      const tail = await cluster.raw("GET", "/api/v1/namespaces/default/pods/env/log?tailLines=0");
      expect(tail.text).toBe("");
    },
    60_000,
  );

  rootTest(
    "kubectl logs -f: the node streams new lines as the container writes them",
    async () => {
      await create(
        pod("ticker", {
          command: ["sh", "-c", 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.2; done'],
        }),
      );
      await until("ticker", "Running", (p) => p.status.phase === "Running");
      const abort = new AbortController();
      const res = await fetch(
        `${cluster.server}/api/v1/namespaces/default/pods/ticker/log?follow=true&tailLines=0`,
        {
          headers: { authorization: `Bearer ${cluster.adminToken}` },
          tls: { ca: Bun.file(cluster.caFile) },
          signal: abort.signal,
        },
      );
      expect(res.status).toBe(200);
      let text = "";
      const dec = new TextDecoder();
      for await (const chunk of res.body!) {
        text += dec.decode(chunk);
        if (text.split("\n").length > 3) break;
      }
      abort.abort();
      const ticks = text
        .split("\n")
        .filter(Boolean)
        .map((l) => Number(/^tick (\d+)$/.exec(l)?.[1]));
      expect(ticks.length).toBeGreaterThanOrEqual(3);
      expect(ticks[1]).toBe(ticks[0]! + 1);
      expect(ticks[2]).toBe(ticks[0]! + 2);
    },
    30_000,
  );

  rootTest(
    "restart policies: Never ends Failed with the exit code; Always restarts with backoff",
    async () => {
      await create(pod("never", { command: ["sh", "-c", "exit 3"] }, { restartPolicy: "Never" }));
      await create(pod("always", { command: ["sh", "-c", "echo run; exit 1"] }));
      const never = await until("never", "Failed", (p) => p.status.phase === "Failed");
      expect(never.status.containerStatuses?.[0]?.state.terminated).toMatchObject({
        exitCode: 3,
        reason: "Error",
      });
      const always = await until(
        "always",
        "restarted twice",
        (p) => (p.status.containerStatuses?.[0]?.restartCount ?? 0) >= 2,
      );
      expect(always.status.phase).toBe("Running");
      expect(always.status.containerStatuses?.[0]?.lastState.terminated).toMatchObject({ exitCode: 1 });
      const prev = await cluster.raw("GET", "/api/v1/namespaces/default/pods/always/log?previous=true");
      expect(prev.text).toBe("run\n");
    },
    60_000,
  );

  rootTest(
    "a failing liveness probe (TCP) restarts the container; an HTTP readiness probe gates Ready",
    async () => {
      await create(
        pod("probed", {
          command: ["python3", "-m", "http.server", "8080"],
          ports: [{ containerPort: 8080 }],
          readinessProbe: { httpGet: { path: "/", port: 8080 }, periodSeconds: 1 },
          // Ready first; then the liveness probe (a port nothing listens on) fails twice.
          livenessProbe: {
            tcpSocket: { port: 9999 },
            initialDelaySeconds: 4,
            periodSeconds: 1,
            failureThreshold: 2,
          },
        }),
      );
      await until("probed", "Ready", ready);
      const p = await until(
        "probed",
        "restarted by liveness",
        (x) => (x.status.containerStatuses?.[0]?.restartCount ?? 0) >= 1,
      );
      expect(p.status.containerStatuses?.[0]?.lastState.terminated).toBeDefined();
    },
    60_000,
  );

  rootTest(
    "a container past its memory limit is OOMKilled",
    async () => {
      await create(
        pod(
          "hog",
          {
            command: ["python3", "-c", "x = bytearray(256 * 1024 * 1024)"],
            resources: { limits: { memory: "32Mi" } },
          },
          { restartPolicy: "Never" },
        ),
      );
      const p = await until("hog", "Failed", (x) => x.status.phase === "Failed");
      expect(p.status.containerStatuses?.[0]?.state.terminated?.reason).toBe("OOMKilled");
    },
    60_000,
  );

  rootTest(
    "what the node cannot run is refused with the kubelet's reasons",
    async () => {
      await create(pod("oci", { image: "nginx:latest", command: ["nginx"] }));
      await create(pod("nocmd", {}));
      await create({
        ...(pod("two", { command: ["true"] }) as { spec: { containers: unknown[] } }),
        spec: {
          nodeName: NODE,
          containers: [
            { name: "a", image: "lj.local/world:test", command: ["true"] },
            { name: "b", image: "lj.local/world:test", command: ["true"] },
          ],
        },
      } as never);
      const waiting = (name: string) =>
        until(name, "waiting", (p) => p.status.containerStatuses?.[0]?.state.waiting !== undefined);
      expect((await waiting("oci")).status.containerStatuses?.[0]?.state.waiting?.reason).toBe(
        "InvalidImageName",
      );
      expect((await waiting("nocmd")).status.containerStatuses?.[0]?.state.waiting?.reason).toBe(
        "CreateContainerConfigError",
      );
      const two = await until("two", "Failed", (p) => p.status.phase === "Failed");
      expect(two.status.reason).toBe("Unsupported");
    },
    60_000,
  );

  rootTest(
    "deleting a pod that ignores SIGTERM stops it at the end of its grace period; nothing is left",
    async () => {
      await create(pod("stubborn", { command: ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"] }));
      await until("stubborn", "Running", (p) => p.status.phase === "Running");
      const t0 = Date.now();
      await cluster.api("DELETE", "/api/v1/namespaces/default/pods/stubborn");
      await waitFor(
        "stubborn gone",
        20_000,
        async () => (await cluster.raw("GET", "/api/v1/namespaces/default/pods/stubborn")).status === 404,
      );
      const ms = Date.now() - t0;
      expect(ms).toBeGreaterThanOrEqual(1900);
      expect(ms).toBeLessThan(8000);
      // Every pod deleted: the node gives back every address.
      const all = await cluster.api<{ items: Pod[] }>("GET", "/api/v1/namespaces/default/pods");
      for (const p of all.items)
        await cluster.api(
          "DELETE",
          `/api/v1/namespaces/default/pods/${p.metadata.name}?gracePeriodSeconds=1`,
        );
      await waitFor(
        "no pods",
        30_000,
        async () =>
          (await cluster.api<{ items: Pod[] }>("GET", "/api/v1/namespaces/default/pods")).items.length === 0,
      );
      const leases = join(env.root, "run", "net", "leases");
      await waitFor("no leases", 10_000, () => !existsSync(leases) || readdirSync(leases).length === 0);
    },
    90_000,
  );

  rootTest("lj node run refuses bad input before it registers anything", async () => {
    const missing = await lj(["node", "run", "--address", "127.0.0.1"]);
    expect(missing.code).toBe(64);
    expect(missing.stderr).toContain("Missing required argument: --kubeconfig");
    const noFile = await lj([
      "node",
      "run",
      "--kubeconfig",
      "/nonexistent/kubeconfig",
      "--address",
      "127.0.0.1",
    ]);
    expect(noFile.code).toBe(78);
    expect(noFile.stderr).toContain("cannot read kubeconfig /nonexistent/kubeconfig");
    const kc = cluster.nodeKubeconfig(NODE);
    // `lj node run` with this cluster's kubeconfig, then `address` and the flags under test.
    const nodeRun = (address: string, flags: string[], env?: Record<string, string>) =>
      lj(["node", "run", "--kubeconfig", kc, "--address", address, ...flags], env);
    const badName = await nodeRun("127.0.0.1", ["--name", "Bad_Name"]);
    expect(badName.code).toBe(64);
    const badReserve = await nodeRun("127.0.0.1", ["--reserve-memory", "lots"]);
    expect(badReserve.code).toBe(65);
    expect(badReserve.stderr).toContain('"lots" is not a Kubernetes quantity');
    const badServer = await nodeRun("127.0.0.1", ["--release-server", "ftp://x"]);
    expect(badServer.code).toBe(64);
    expect(badServer.stderr).toContain('--release-server: "ftp://x" is not an http(s) URL');
    const noToken = await nodeRun("127.0.0.1", ["--release-server", "http://127.0.0.1:1"], {
      LJ_NODE_TOKEN: "",
    });
    expect(noToken.code).toBe(64);
    expect(noToken.stderr).toContain("--release-server needs the server's node token");
    const notHere = await nodeRun("192.0.2.77", ["--name", "elsewhere"]);
    expect(notHere.code).toBe(78);
    expect(notHere.stderr).toContain("no interface of this machine has the address 192.0.2.77");
    const nodes = await cluster.api<{ items: { metadata: { name: string } }[] }>("GET", "/api/v1/nodes");
    expect(nodes.items.map((n) => n.metadata.name)).toEqual([NODE]);
  });
});
