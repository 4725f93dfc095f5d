import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { defineCommand } from "citty";
import { LjError } from "../errors.ts";

function positiveInt(v: string, what: string, min = 1): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min)
    throw new LjError("usage", "bad-number", `${what} must be a whole number >= ${min} (got "${v}")`);
  return n;
}

function nodeToken(file: string | undefined): string {
  const token = file ? readFileSync(file, "utf8").trim() : process.env.LJ_NODE_TOKEN?.trim();
  if (!token)
    throw new LjError("usage", "no-node-token", "--release-server needs the server's node token", {
      hint: "pass --node-token-file FILE or set LJ_NODE_TOKEN (`lj node token` on the lj serve machine prints it)",
    });
  return token;
}

const runCommand = defineCommand({
  meta: {
    name: "run",
    description:
      "Join a Kubernetes cluster as a node whose pods run as jails (pods must tolerate the lightjail/node taint)",
  },
  args: {
    kubeconfig: { type: "string", description: "kubeconfig with this node's credentials", required: true },
    name: { type: "string", description: "node name (default: the host name)" },
    address: {
      type: "string",
      description: "this machine's address on the cluster network (InternalIP)",
      required: true,
    },
    "kubelet-port": {
      type: "string",
      description: "port of the node's log endpoint (HTTPS)",
      default: "10250",
    },
    "client-ca": {
      type: "string",
      description: "CA file that signs the API server's client certificate (default: the kubeconfig's CA)",
    },
    "reserve-cpu": { type: "string", description: "CPUs kept back from pods", default: "0.1" },
    "reserve-memory": {
      type: "string",
      description: "memory kept back from pods (a quantity)",
      default: "256Mi",
    },
    "max-pods": { type: "string", description: "pods this node takes", default: "110" },
    heartbeat: { type: "string", description: "seconds between lease renewals", default: "10" },
    "release-server": {
      type: "string",
      description: "URL of the lj serve whose releases (lj.local/APP:vN images) this node runs",
    },
    "node-token-file": {
      type: "string",
      description: "file holding that server's node token (`lj node token` there); or LJ_NODE_TOKEN",
    },
    "image-grace": {
      type: "string",
      description: "seconds a cached release layer no pod uses is kept",
      default: "600",
    },
  },
  async run({ args }) {
    const { parseQuantity } = await import("../node/quantity.ts");
    const { NodeAgent } = await import("../node/agent.ts");
    const name = args.name ?? hostname();
    if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name))
      throw new LjError("usage", "bad-node-name", `"${name}" is not a valid node name (lower-case DNS name)`);
    const server = args["release-server"];
    if (server !== undefined && !/^https?:\/\/[^\s/]+/.test(server))
      throw new LjError("usage", "bad-release-server", `--release-server: "${server}" is not an http(s) URL`);
    const releases = server ? { url: server, token: nodeToken(args["node-token-file"]) } : undefined;
    const agent = new NodeAgent({
      kubeconfig: args.kubeconfig,
      name,
      address: args.address,
      kubeletPort: positiveInt(args["kubelet-port"], "--kubelet-port", 0),
      clientCaFile: args["client-ca"],
      reserve: {
        cpus: parseQuantity(args["reserve-cpu"]),
        memoryBytes: parseQuantity(args["reserve-memory"]),
      },
      maxPods: positiveInt(args["max-pods"], "--max-pods"),
      heartbeatSeconds: positiveInt(args.heartbeat, "--heartbeat"),
      releases,
      imageGraceSeconds: positiveInt(args["image-grace"], "--image-grace", 0),
    });
    await agent.start();
    await new Promise<void>((resolve) => {
      const bye = () => {
        process.off("SIGTERM", bye);
        process.off("SIGINT", bye);
        void agent.stop().then(resolve);
      };
      process.on("SIGTERM", bye);
      process.on("SIGINT", bye);
    });
  },
});

const tokenCommand = defineCommand({
  meta: {
    name: "token",
    description:
      "Print this lj serve's node token (made on first use): nodes present it to fetch release artefacts, and it grants nothing else",
  },
  async run() {
    const { loadOrCreateToken } = await import("../server/auth.ts");
    const { nodeTokenFile } = await import("../server/api/artefacts.ts");
    process.stdout.write(`${loadOrCreateToken(nodeTokenFile()).token}\n`);
  },
});

export const nodeCommand = defineCommand({
  meta: { name: "node", description: "Run this machine as a Kubernetes node (pods as jails)" },
  subCommands: { run: runCommand, token: tokenCommand },
});
