/**
 * A pod's container as a jail: its image's layers (image.ts), its command and args, its env,
 * its resource limits as the jail's cgroup limits, a private address on the node's pod subnet,
 * and the host identity of its namespace (every Kubernetes namespace is a tenant of the node:
 * its pods run as a uid no other namespace shares).
 */
import type { V1Container, V1Pod } from "@kubernetes/client-node";
import { LjError } from "../errors.ts";
import { DEFAULT_PATH, type JailSpec } from "../jail/spec.ts";
import { type Identity, identityEtc, identityOf } from "../store/identities.ts";
import { type ImageRoot, resolveImage } from "./image.ts";
import { parseQuantity } from "./quantity.ts";
import type { ReleaseImages } from "./release-images.ts";

/** Without a memory limit a container gets this much (a jail is never unlimited). */
export const DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024;
export const DEFAULT_PIDS = 512;

/** The kubelet's reason for a container that cannot be made from its spec. */
export class ContainerConfigError extends LjError {
  readonly reason = "CreateContainerConfigError";
  constructor(message: string) {
    super("invalid", "container-config", message);
  }
}

export function tenantOf(pod: V1Pod): Identity {
  return identityOf("app", `kube.${pod.metadata?.namespace ?? "default"}`);
}

/** The pod fields a container may read through `valueFrom.fieldRef`. */
function fieldValue(pod: V1Pod, path: string, hostIP: string): string {
  const md = pod.metadata ?? {};
  const fields: Record<string, string | undefined> = {
    "metadata.name": md.name,
    "metadata.namespace": md.namespace,
    "metadata.uid": md.uid,
    "spec.nodeName": pod.spec?.nodeName,
    "spec.serviceAccountName": pod.spec?.serviceAccountName,
    "status.hostIP": hostIP,
  };
  const v = fields[path];
  if (v === undefined)
    throw new ContainerConfigError(`env fieldRef ${path} is not supported on lightjail nodes`);
  return v;
}

/** The container's env over the image's (`base`: a release's env). */
export function containerEnv(
  pod: V1Pod,
  c: V1Container,
  hostIP: string,
  base: Record<string, string> = {},
): Record<string, string> {
  if (c.envFrom?.length) throw new ContainerConfigError("envFrom is not supported on lightjail nodes");
  const env: Record<string, string> = {
    PATH: DEFAULT_PATH,
    HOME: "/",
    HOSTNAME: pod.metadata?.name ?? "",
    ...base,
  };
  for (const e of c.env ?? []) {
    if (e.valueFrom) {
      if (!e.valueFrom.fieldRef)
        throw new ContainerConfigError(`env ${e.name}: only value and valueFrom.fieldRef are supported`);
      env[e.name] = fieldValue(pod, e.valueFrom.fieldRef.fieldPath, hostIP);
    } else {
      // $(VAR) refers to variables defined before it, as in the kubelet; $$ escapes.
      env[e.name] = (e.value ?? "").replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n) =>
        m === "$$" ? "$" : (env[n] ?? m),
      );
    }
  }
  return env;
}

export interface ContainerJail {
  spec: JailSpec;
  who: Identity;
  /** Given back when the pod is done with it. */
  image: ImageRoot;
}

export async function containerJail(
  pod: V1Pod,
  c: V1Container,
  opts: { hostIP: string; address?: string; releases?: ReleaseImages | null },
): Promise<ContainerJail> {
  if (!c.image) throw new ContainerConfigError(`container ${c.name} has no image`);
  const image = await resolveImage(c.image, opts.releases ?? null, pod.metadata?.namespace ?? "default");
  try {
    return { ...make(pod, c, image, opts), image };
  } catch (e) {
    image.release();
    throw e;
  }
}

/**
 * The argv: the container's command and args; without a command, a release image's process
 * type named like the container (then the args are appended to it).
 */
function argvOf(c: V1Container, image: ImageRoot, expand: (s: string) => string): string[] {
  if (c.command?.length) return [...c.command, ...(c.args ?? [])].map(expand);
  // The release's own command is not expanded: $(...) in it is the shell's.
  // Kubernetes names take no underscore: process type a_b is container a-b.
  const own =
    image.processes[c.name] ??
    Object.entries(image.processes).find(([t]) => t.replace(/_/g, "-") === c.name)?.[1];
  if (own) return [...own, ...(c.args ?? []).map(expand)];
  const types = Object.keys(image.processes);
  throw new ContainerConfigError(
    types.length
      ? `container ${c.name}: no command, and the release has no ${c.name} process (its process types: ${types.join(", ")}); name the container after one or give a command`
      : `container ${c.name}: lightjail world images have no entrypoint; give the container a command`,
  );
}

function make(
  pod: V1Pod,
  c: V1Container,
  image: ImageRoot,
  opts: { hostIP: string; address?: string },
): { spec: JailSpec; who: Identity } {
  const base = Object.keys(image.processes).length
    ? { ...image.env, LJ_PROCESS: pod.metadata?.name ?? c.name }
    : image.env;
  const env = containerEnv(pod, c, opts.hostIP, base);
  const expand = (s: string) =>
    s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n) => (m === "$$" ? "$" : (env[n] ?? m)));
  const argv = argvOf(c, image, expand);
  const limits = c.resources?.limits ?? {};
  const memory = limits.memory !== undefined ? parseQuantity(limits.memory) : DEFAULT_MEMORY_BYTES;
  const cpus = limits.cpu !== undefined ? parseQuantity(limits.cpu) : undefined;
  const who = tenantOf(pod);
  const cwd = c.workingDir ?? image.cwd;
  const spec: JailSpec = {
    argv,
    env,
    cwd,
    layers: image.layers,
    mounts: [...image.mounts, ...identityEtc(image.base, who, cwd)],
    uid: who.uid,
    gid: who.gid,
    hostname: (pod.metadata?.name ?? c.name).slice(0, 63),
    net: "private",
    ...(opts.address ? { address: opts.address } : {}),
    limits: {
      memoryBytes: Math.max(Math.floor(memory), 4 * 1024 * 1024),
      pids: DEFAULT_PIDS,
      ...(cpus !== undefined ? { cpus: Math.max(cpus, 0.01) } : {}),
    },
    rlimits: { nofile: 16384 },
    stdio: ["ignore", "pipe", "pipe"],
    name: `${pod.metadata?.namespace}.${pod.metadata?.name}.${c.name}`,
  };
  return { spec, who };
}
