/**
 * `lj serve --scheduler kubernetes` on the real two-node cluster (test/kube-cluster.ts): the
 * server (in this process, whose namespace routes both pod subnets) builds an app and runs its
 * formation as a Deployment whose pods, on the two `lj node` agents, run the release image they
 * fetch from the server; the edge reaches the ready pods. A redeploy rolls out, a failing
 * release is undone with the old pods serving, a rollback rolls back, scale changes replicas.
 *
 *   test ns 10.212.0.1 (lj serve, jails 10.212.9.0/24) --- bridge --- node a 10.212.0.2 (pods 10.212.1.0/24)
 *                                                                \--- node b 10.212.0.3 (pods 10.212.2.0/24)
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createWorld } from "../src/build/worlds.ts";
import { kubeScheduler } from "../src/cluster/kube-scheduler.ts";
import { type RunningServer, startServer } from "../src/server/serve.ts";
import {
  api,
  appCopy,
  createApp,
  deployDir,
  removeAppCopies,
  textVia,
  until,
} from "./fixtures/paas/helpers.ts";
import { type JailEnv, lj, makeJailEnv } from "./helpers/jail-env.ts";
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

const net = nodeNetwork(`ljs${process.pid % 10000}`, "10.212");
let cluster: Cluster;
let env: JailEnv;
let s: RunningServer;
const agents: NodeAgentProcess[] = [];

interface Proc {
  name: string;
  type: string;
  release: number;
  state: string;
  address: string | null;
  node?: string | null;
}

const agentLogs = () => agents.map((a) => `${a.name}: ${a.output.join("")}`).join("\n");
const ps = () => api<{ processes: Proc[] }>(s, "GET", "/apps/site/ps").then((r) => r.processes);
const site = (page: string) =>
  appCopy("static-plain", { "lj.toml": 'world = "host"\n', "index.html": `<h1>${page}</h1>\n` });

/** Waits until the edge's answers, over a few requests, are all `text`. */
async function serving(text: string, n = 6): Promise<void> {
  let last = "";
  await waitFor(
    `the edge answers ${text}`,
    30_000,
    async () => {
      for (let i = 0; i < n; i++) {
        const r = await textVia(s, "site", "/");
        last = `${r.status} ${r.text}`;
        if (r.status !== 200 || !r.text.includes(text)) return false;
      }
      return true;
    },
    () => `${last}\n${agentLogs()}`,
  );
}

beforeAll(async () => {
  if (!isRoot()) return;
  if (!existsSync(join(kubeTools, "kube")))
    throw new Error(`${kubeTools}/kube is missing: run scripts/kube-tools.sh`);
  await net.remove();
  await net.make();
  process.env.LJ_SUBNET = "10.212.9.0/24";
  env = await makeJailEnv();
  // The release's world: the nodes have a world of the same name.
  await createWorld("host", "host");
  cluster = await startCluster({ apiAddress: net.hostAddress, nodes: net.nodes.map((n) => n.name) });
  s = await startServer({
    hostname: net.hostAddress,
    healthTimeoutMs: 25_000,
    scheduler: kubeScheduler({ kubeconfig: cluster.adminKubeconfig }),
  });
  const t = await lj(["node", "token"], { LIGHTJAIL_ROOT: env.root });
  if (t.code !== 0) throw new Error(t.stderr);
  const tokenFile = join(env.root, "node-token.txt");
  writeFileSync(tokenFile, t.stdout, { mode: 0o600 });
  for (const n of net.nodes)
    agents.push(
      await startNodeAgent(cluster, n, [`--release-server=${s.url}`, `--node-token-file=${tokenFile}`]),
    );
  await nodesReady(cluster, agents, 60_000);
}, 300_000);

afterAll(async () => {
  removeAppCopies();
  if (!isRoot()) return;
  await s?.stop();
  for (const a of agents) await a.stop();
  await cluster?.stop();
  await net.remove();
  env?.cleanup();
}, 90_000);

describe("lj serve --scheduler kubernetes", () => {
  rootTest("bad scheduler options are refused before anything starts", async () => {
    const other = await lj(["serve", "--scheduler", "nomad"], { LIGHTJAIL_ROOT: env.root });
    expect(other.code).toBe(64);
    expect(other.stderr).toContain('--scheduler: "nomad" is not local or kubernetes');
    const noConfig = await lj(["serve", "--scheduler", "kubernetes"], { LIGHTJAIL_ROOT: env.root });
    expect(noConfig.code).toBe(64);
    expect(noConfig.stderr).toContain("--scheduler kubernetes needs --kubeconfig FILE");
    const unreadable = await lj(
      ["serve", "--scheduler", "kubernetes", "--kubeconfig", "/nonexistent/kubeconfig", "--port", "0"],
      { LIGHTJAIL_ROOT: env.root },
    );
    expect(unreadable.code).toBe(78);
    expect(unreadable.stderr).toContain("cannot read kubeconfig /nonexistent/kubeconfig");
  });

  rootTest(
    "deploy, scale to 2 through the edge, redeploy, a failing release is undone, rollback, destroy",
    async () => {
      await createApp(s, "site");
      const d1 = await deployDir(s, "site", site("site one"));
      expect(d1.deploy?.status).toBe("succeeded");
      expect(d1.log).toContain("Rolling out lj.local/site:v1 on Kubernetes");
      await serving("site one");

      // Scale: the Deployment's replicas; each process shows its node.
      await api(s, "PATCH", "/apps/site/formation", { web: 2 });
      const two = await until(
        async () => {
          const p = (await ps()).filter((x) => x.state === "up");
          return p.length === 2 ? p : null;
        },
        60_000,
        "two web pods up",
      );
      for (const p of two) {
        expect(p.release).toBe(1);
        expect(["kube-a", "kube-b"]).toContain(p.node!);
        expect(p.address).toMatch(/^10\.212\.[12]\.\d+$/);
      }
      await waitFor("two edge targets", 10_000, () => s.paas.formation.targets("site")?.length === 2);
      const cli = await lj(["ps", "site"], { LJ_REMOTE: s.url, LJ_TOKEN: s.token, LIGHTJAIL_ROOT: env.root });
      expect(cli.stdout).toContain("NODE");
      expect(cli.stdout).toMatch(/kube-[ab]/);
      await serving("site one");

      // A redeploy rolls out; the release is current once every pod runs it.
      const d2 = await deployDir(s, "site", site("site two"));
      expect(d2.deploy?.status).toBe("succeeded");
      await serving("site two");
      const after = (await ps()).filter((p) => p.state === "up");
      expect(after.every((p) => p.release === 2)).toBe(true);
      expect(after).toHaveLength(2);

      // A release whose web process never listens: the rollout does not complete, is undone,
      // and v2 keeps serving throughout.
      const bad = appCopy("static-plain", { "lj.toml": 'world = "host"\n', Procfile: "web: sleep 600\n" });
      const answers: string[] = [];
      let polling = true;
      const poll = (async () => {
        while (polling) {
          const r = await textVia(s, "site", "/");
          answers.push(`${r.status} ${r.text.includes("site two") ? "two" : r.text}`);
          await Bun.sleep(200);
        }
      })();
      const d3 = await deployDir(s, "site", bad);
      polling = false;
      await poll;
      expect(d3.deploy?.status).toBe("failed");
      expect(d3.deploy?.error).toMatch(/rollout did not complete/);
      expect(answers.length).toBeGreaterThan(10);
      expect(answers.filter((a) => a !== "200 two")).toEqual([]);
      const rels = await api<{ releases: { version: number; current: boolean }[] }>(
        s,
        "GET",
        "/apps/site/releases",
      );
      expect(rels.releases.find((r) => r.current)?.version).toBe(2);
      await waitFor("only v2 pods", 30_000, async () => (await ps()).every((p) => p.release === 2));
      await serving("site two");

      // Rollback to v1: a new release of v1's slug, rolled out the same way.
      await api(s, "POST", "/apps/site/rollback", { version: 1 });
      await serving("site one");
      const rolled = (await ps()).filter((p) => p.state === "up");
      expect(rolled).toHaveLength(2);
      expect(rolled.every((p) => p.release === 3)).toBe(true);

      // Destroying the app deletes its namespace; the nodes stop its pods.
      await api(s, "DELETE", "/apps/site");
      await waitFor(
        "no pods of the app",
        60_000,
        async () =>
          (await cluster.api<{ items: unknown[] }>("GET", "/api/v1/pods?labelSelector=lightjail%2Fapp")).items
            .length === 0,
      );
    },
    400_000,
  );
});
