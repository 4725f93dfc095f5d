/**
 * A real Kubernetes control plane for the cluster tests and bench/cluster.ts: etcd,
 * kube-apiserver, kube-scheduler and kube-controller-manager (built by scripts/kube-tools.sh),
 * with a certificate authority, serving and client certificates and static tokens of their own
 * in a temporary directory. Everything listens on loopback, except the API server, which may
 * also listen on an address the test's node namespaces reach (`apiAddress`).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { cliPath, projectDir, runCommand } from "./helpers/jail-env.ts";

export const kubeTools = join(projectDir, ".tools", "kube");

export interface ClusterOptions {
  /** The API server's address (default 127.0.0.1); node namespaces reach it there. */
  apiAddress?: string;
  /** Node names that get a token (user system:node:NAME, group system:nodes). */
  nodes?: string[];
  /** How long a silent node stays Ready, and how long its pods stay after it is unreachable. */
  nodeGraceSeconds?: number;
  evictAfterSeconds?: number;
}

export interface Cluster {
  dir: string;
  server: string;
  /** The administrator's kubeconfig (group system:masters). */
  adminKubeconfig: string;
  /** A kubeconfig for a node agent (its own token). */
  nodeKubeconfig(name: string): string;
  caFile: string;
  /** Client certificate the API server presents to node agents (kubelet log endpoint). */
  kubeletClientCa: string;
  adminToken: string;
  /** Calls the API as the administrator. */
  api<T = unknown>(method: string, path: string, body?: unknown, contentType?: string): Promise<T>;
  /** The response itself (status and text), for endpoints that answer text (pod logs). */
  raw(method: string, path: string): Promise<{ status: number; text: string }>;
  logTail(): string;
  stop(): Promise<void>;
}

async function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, host, () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const p = Bun.spawn(["openssl", ...args], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`openssl ${args[0]}: ${err.trim()}`);
}

/** A key and a certificate signed by the cluster's CA. */
async function issue(dir: string, name: string, subject: string, ext: string): Promise<void> {
  await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.key`]);
  await openssl(dir, ["req", "-new", "-key", `${name}.key`, "-subj", subject, "-out", `${name}.csr`]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.crt`,
  ]);
}

async function makePki(dir: string, apiAddress: string): Promise<void> {
  await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
  await openssl(dir, [
    "req",
    "-x509",
    "-new",
    "-key",
    "ca.key",
    "-subj",
    "/CN=lightjail-test-ca",
    "-days",
    "2",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    "ca.crt",
  ]);
  const server = `subjectAltName=IP:127.0.0.1,IP:${apiAddress},IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n`;
  await issue(dir, "apiserver", "/CN=kube-apiserver", server);
  const client = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n";
  await issue(dir, "kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", client);
  // The service account signing key (RSA: the token signer's default algorithm).
  await openssl(dir, ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key"]);
  await openssl(dir, ["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

function kubeconfig(server: string, caFile: string, user: string, token: string): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "lj-test", cluster: { server, "certificate-authority": caFile } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: "lj-test", context: { cluster: "lj-test", user } }],
    "current-context": "lj-test",
  });
}

export const NODE_READER_ROLE = {
  apiVersion: "rbac.authorization.k8s.io/v1",
  kind: "ClusterRole",
  metadata: { name: "lightjail-node" },
  rules: [{ apiGroups: [""], resources: ["nodes"], verbs: ["get", "list", "watch"] }],
};
export const NODE_READER_BINDING = {
  apiVersion: "rbac.authorization.k8s.io/v1",
  kind: "ClusterRoleBinding",
  metadata: { name: "lightjail-node" },
  roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "lightjail-node" },
  subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: "system:nodes" }],
};

const token = () => Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("hex");

export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), "lj-kube-"));
  const apiAddress = opts.apiAddress ?? "127.0.0.1";
  const procs: Subprocess[] = [];
  const logs: string[] = [];
  let stopped = false;
  const stop = async () => {
    stopped = true;
    for (const p of procs.reverse()) p.kill("SIGTERM");
    await Promise.all(
      procs.map((p) => Promise.race([p.exited, Bun.sleep(5000).then(() => p.kill("SIGKILL"))])),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await makePki(dir, apiAddress);
    const tokens = { admin: token(), scheduler: token(), controller: token() };
    const nodeTokens = new Map((opts.nodes ?? []).map((n) => [n, token()]));
    writeFileSync(
      join(dir, "tokens.csv"),
      [
        `${tokens.admin},admin,admin,"system:masters"`,
        `${tokens.scheduler},system:kube-scheduler,scheduler,"system:masters"`,
        `${tokens.controller},system:kube-controller-manager,controller,"system:masters"`,
        ...[...nodeTokens].map(([n, t]) => `${t},system:node:${n},node-${n},"system:nodes"`),
        "",
      ].join("\n"),
    );
    const [etcdClient, etcdPeer, apiPort] = await Promise.all([freePort(), freePort(), freePort(apiAddress)]);
    const server = `https://${apiAddress}:${apiPort}`;
    const caFile = join(dir, "ca.crt");
    const configFor = (name: string, user: string, t: string) => {
      const f = join(dir, `${name}.kubeconfig`);
      writeFileSync(f, kubeconfig(server, caFile, user, t));
      return f;
    };
    const adminKubeconfig = configFor("admin", "admin", tokens.admin);

    const run = (name: string, argv: string[]) => {
      const p = Bun.spawn(argv, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
      procs.push(p);
      const keep = async (s: ReadableStream<Uint8Array>) => {
        const dec = new TextDecoder();
        for await (const chunk of s) {
          for (const line of dec.decode(chunk).split("\n")) if (line) logs.push(`${name}: ${line}`);
          if (logs.length > 4000) logs.splice(0, logs.length - 2000);
        }
      };
      void keep(p.stdout);
      void keep(p.stderr);
      void p.exited.then((code) => {
        if (!stopped) logs.push(`${name}: exited with ${code}`);
      });
      return p;
    };
    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    run("etcd", [
      join(kubeTools, "etcd"),
      "--name=lj",
      `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=lj=http://127.0.0.1:${etcdPeer}`,
      // A test cluster's data is thrown away: no fsync, no waiting on the disk.
      "--unsafe-no-fsync",
      "--log-level=warn",
    ]);
    const kube = join(kubeTools, "kube");
    const evict = String(opts.evictAfterSeconds ?? 300);
    run("apiserver", [
      kube,
      "kube-apiserver",
      `--etcd-servers=${etcdUrl}`,
      `--bind-address=${apiAddress}`,
      `--advertise-address=${apiAddress}`,
      `--secure-port=${apiPort}`,
      `--tls-cert-file=${join(dir, "apiserver.crt")}`,
      `--tls-private-key-file=${join(dir, "apiserver.key")}`,
      `--client-ca-file=${caFile}`,
      `--token-auth-file=${join(dir, "tokens.csv")}`,
      "--authorization-mode=Node,RBAC",
      "--enable-admission-plugins=NodeRestriction",
      "--service-account-issuer=https://kubernetes.default.svc",
      `--service-account-key-file=${join(dir, "sa.pub")}`,
      `--service-account-signing-key-file=${join(dir, "sa.key")}`,
      "--service-cluster-ip-range=10.96.0.0/24",
      `--kubelet-client-certificate=${join(dir, "kubelet-client.crt")}`,
      `--kubelet-client-key=${join(dir, "kubelet-client.key")}`,
      "--kubelet-preferred-address-types=InternalIP",
      "--endpoint-reconciler-type=none",
      `--default-not-ready-toleration-seconds=${evict}`,
      `--default-unreachable-toleration-seconds=${evict}`,
      "--anonymous-auth=false",
      "--v=1",
    ]);
    const api = async (method: string, path: string, body?: unknown, contentType = "application/json") => {
      const res = await fetch(`${server}${path}`, {
        method,
        headers: { authorization: `Bearer ${tokens.admin}`, "content-type": contentType },
        body: body === undefined ? undefined : JSON.stringify(body),
        tls: { ca: Bun.file(caFile) },
      });
      return res;
    };
    await waitFor(
      "kube-apiserver /readyz",
      120_000,
      async () => {
        const r = await api("GET", "/readyz").catch(() => null);
        return r?.status === 200;
      },
      () => logs.slice(-30).join("\n"),
    );
    run("scheduler", [
      kube,
      "kube-scheduler",
      `--kubeconfig=${configFor("scheduler", "system:kube-scheduler", tokens.scheduler)}`,
      "--leader-elect=false",
      "--secure-port=0",
      "--v=1",
    ]);
    const grace = opts.nodeGraceSeconds ?? 40;
    run("controller-manager", [
      kube,
      "kube-controller-manager",
      `--kubeconfig=${configFor("controller", "system:kube-controller-manager", tokens.controller)}`,
      "--leader-elect=false",
      "--secure-port=0",
      "--use-service-account-credentials=false",
      `--service-account-private-key-file=${join(dir, "sa.key")}`,
      `--root-ca-file=${caFile}`,
      "--node-monitor-period=1s",
      `--node-monitor-grace-period=${grace}s`,
      "--v=1",
    ]);
    // Nodes may read only their own Node object (the Node authorizer); lightjail nodes read
    // all of them for the pod subnet routes, as docs/cluster.md asks a cluster to allow.
    await api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", NODE_READER_ROLE);
    await api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", NODE_READER_BINDING);
    // Pods need the namespace's default service account, which the controller manager makes.
    await waitFor(
      "the default service account",
      120_000,
      async () => {
        const r = await api("GET", "/api/v1/namespaces/default/serviceaccounts/default").catch(() => null);
        return r?.status === 200;
      },
      () => logs.slice(-30).join("\n"),
    );
    return {
      dir,
      server,
      adminKubeconfig,
      caFile,
      kubeletClientCa: caFile,
      adminToken: tokens.admin,
      nodeKubeconfig(name: string) {
        const t = nodeTokens.get(name);
        if (!t) throw new Error(`no token for node ${name}: name it in startCluster({ nodes })`);
        return configFor(`node-${name}`, `system:node:${name}`, t);
      },
      async api<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
        const r = await api(method, path, body, contentType);
        const text = await r.text();
        if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
        return JSON.parse(text) as T;
      },
      async raw(method: string, path: string) {
        const r = await api(method, path);
        return { status: r.status, text: await r.text() };
      },
      logTail: () => logs.slice(-60).join("\n"),
      stop,
    };
  } catch (e) {
    const tail = logs.slice(-40).join("\n");
    await stop();
    throw new Error(`${(e as Error).message}\n${tail}`);
  }
}

/** Polls `ok` until it holds; on timeout, fails naming what was awaited (and `detail`). */
export async function waitFor(
  what: string,
  ms: number,
  ok: () => Promise<boolean> | boolean,
  detail?: () => string,
): Promise<void> {
  const end = Date.now() + ms;
  for (let delay = 50; ; delay = Math.min(delay * 2, 500)) {
    if (await ok()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${detail ? `\n${detail()}` : ""}`);
    await Bun.sleep(delay);
  }
}

// -- node agents in network namespaces --------------------------------------------------------

export interface TestNode {
  name: string;
  /** Its network namespace. */
  ns: string;
  address: string;
  /** Its pod subnet (the state root's jail subnet). */
  pods: string;
}

async function sh(argv: string[]): Promise<void> {
  const r = await runCommand(argv);
  if (r.code !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.trim()}`);
}

/**
 * Two nodes, each in a network namespace of its own, joined by a bridge (in a namespace of its
 * own) to this process's namespace, which plays the edge: it routes to both pod subnets and
 * hosts the API server. NET is a /16 prefix ("10.219") nobody else on the machine uses.
 *
 *   this ns NET.0.1 --- bridge --- node a NET.0.2 (pods NET.1.0/24)
 *                             \--- node b NET.0.3 (pods NET.2.0/24)
 */
export function nodeNetwork(tag: string, net: string) {
  const lanNs = `${tag}-lan`;
  const hostVeth = `${tag}h`;
  const nodes: TestNode[] = ["a", "b"].map((x, i) => ({
    name: `kube-${x}`,
    ns: `${tag}-${x}`,
    address: `${net}.0.${i + 2}`,
    pods: `${net}.${i + 1}.0/24`,
  }));
  const hostAddress = `${net}.0.1`;
  return {
    nodes,
    hostAddress,
    async make() {
      await sh(["ip", "netns", "add", lanNs]);
      await sh(["ip", "-n", lanNs, "link", "add", "br0", "type", "bridge"]);
      await sh(["ip", "-n", lanNs, "link", "set", "br0", "up"]);
      for (const [i, n] of nodes.entries()) {
        await sh(["ip", "netns", "add", n.ns]);
        await sh(["ip", "-n", n.ns, "link", "set", "lo", "up"]);
        await sh([
          "ip",
          "link",
          "add",
          `${tag}n${i}`,
          "netns",
          n.ns,
          "type",
          "veth",
          "peer",
          "name",
          `p${i}`,
          "netns",
          lanNs,
        ]);
        await sh(["ip", "-n", n.ns, "link", "set", `${tag}n${i}`, "name", "eth0"]);
        await sh(["ip", "-n", n.ns, "addr", "add", `${n.address}/24`, "dev", "eth0"]);
        await sh(["ip", "-n", n.ns, "link", "set", "eth0", "up"]);
        await sh(["ip", "-n", lanNs, "link", "set", `p${i}`, "master", "br0", "up"]);
      }
      await sh(["ip", "link", "add", hostVeth, "type", "veth", "peer", "name", "ph", "netns", lanNs]);
      await sh(["ip", "-n", lanNs, "link", "set", "ph", "master", "br0", "up"]);
      await sh(["ip", "addr", "add", `${hostAddress}/24`, "dev", hostVeth]);
      await sh(["ip", "link", "set", hostVeth, "up"]);
      for (const n of nodes) await sh(["ip", "route", "replace", n.pods, "via", n.address]);
    },
    async remove() {
      for (const n of nodes) await runCommand(["ip", "route", "del", n.pods]);
      await runCommand(["ip", "link", "del", hostVeth]);
      for (const ns of [lanNs, ...nodes.map((n) => n.ns)]) await runCommand(["ip", "netns", "del", ns]);
    },
  };
}

export interface NodeAgentProcess {
  name: string;
  root: string;
  proc: Subprocess;
  /** What the agent wrote to stderr. */
  output: string[];
  stop(): Promise<void>;
}

/**
 * `ip netns exec` gives its command a fresh sysfs (so /sys/class/net shows the namespace's
 * interfaces), which hides the cgroup hierarchies mounted under /sys/fs/cgroup: this mounts
 * them again there, as this process sees them (the same hierarchies, so the same cgroups).
 */
function cgroupRemounts(): string {
  const out: string[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const [pre, post] = line.split(" - ");
    const mp = pre?.split(" ")[4];
    const [fstype, source, opts] = post?.split(" ") ?? [];
    if (!mp?.startsWith("/sys/fs/cgroup") || !fstype || !source || !opts) continue;
    if (fstype === "tmpfs") out.push(`mount -t tmpfs -o mode=755 ${source} ${mp}`);
    else if (fstype === "cgroup" || fstype === "cgroup2")
      out.push(`mkdir -p ${mp} && mount -t ${fstype} -o ${opts} ${source} ${mp}`);
  }
  return out.join(" && ") || "true";
}

/** `lj node run` in the node's namespace, with a state root of its own that has a host world. */
export async function startNodeAgent(
  cluster: Cluster,
  n: TestNode,
  /** More `lj node run` options (a release server). */
  extra: string[] = [],
): Promise<NodeAgentProcess> {
  const root = mkdtempSync(join(tmpdir(), `lj-node-${n.name}-`));
  const env = { ...process.env, LIGHTJAIL_ROOT: root, LJ_SUBNET: n.pods };
  const w = await runCommand([process.execPath, cliPath, "world", "create", "host", "--from", "host"], env);
  if (w.code !== 0) throw new Error(`world create: ${w.stderr}`);
  const proc = Bun.spawn(
    [
      "ip",
      "netns",
      "exec",
      n.ns,
      "sh",
      "-c",
      `${cgroupRemounts()} && exec "$@"`,
      "sh",
      process.execPath,
      cliPath,
      "node",
      "run",
      `--kubeconfig=${cluster.nodeKubeconfig(n.name)}`,
      `--name=${n.name}`,
      `--address=${n.address}`,
      `--client-ca=${cluster.kubeletClientCa}`,
      "--heartbeat=1",
      ...extra,
    ],
    { env, stdio: ["ignore", "ignore", "pipe"] },
  );
  const output: string[] = [];
  void (async () => {
    const dec = new TextDecoder();
    for await (const c of proc.stderr as ReadableStream<Uint8Array>) output.push(dec.decode(c));
  })();
  return {
    name: n.name,
    root,
    proc,
    output,
    async stop() {
      proc.kill("SIGTERM");
      await Promise.race([proc.exited, Bun.sleep(10_000).then(() => proc.kill("SIGKILL"))]);
      await proc.exited;
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export async function nodesReady(cluster: Cluster, agents: NodeAgentProcess[], ms: number): Promise<void> {
  type NodeList = {
    items: {
      spec: { taints?: { key: string }[] };
      status: { conditions?: { type: string; status: string }[] };
    }[];
  };
  await waitFor(
    `${agents.length} nodes Ready`,
    ms,
    async () => {
      const l = await cluster.api<NodeList>("GET", "/api/v1/nodes");
      // Ready, and schedulable: the controller manager lifts a new node's not-ready taint a
      // moment after it sees the node Ready.
      const ready = l.items.filter(
        (n) =>
          n.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") &&
          !n.spec.taints?.some((t) => t.key === "node.kubernetes.io/not-ready"),
      );
      return ready.length === agents.length;
    },
    () => agents.map((a) => `${a.name}: ${a.output.join("")}`).join("\n") + cluster.logTail(),
  );
}
