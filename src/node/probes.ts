/**
 * Container probes as the kubelet runs them: HTTP GET (a status from 200 to 399 passes), TCP
 * connect, and exec (exit status 0 passes). HTTP and TCP probes go from the node to the pod's
 * address; exec runs the command inside the container's jail as confined as the container's
 * own process (src/jail/exec.ts).
 */
import type { V1ContainerPort, V1Probe } from "@kubernetes/client-node";
import { execInJail } from "../jail/exec.ts";
import type { Jail } from "../jail/spawn.ts";

export interface ProbeTarget {
  address: string;
  jail: Jail;
  uid: number;
  gid: number;
  env: Record<string, string>;
  /** The container's working directory in its jail. */
  cwd?: string;
  ports: V1ContainerPort[];
}

export interface ProbeTiming {
  initialDelayMs: number;
  periodMs: number;
  timeoutMs: number;
  successThreshold: number;
  failureThreshold: number;
}

export function probeTiming(p: V1Probe): ProbeTiming {
  return {
    initialDelayMs: (p.initialDelaySeconds ?? 0) * 1000,
    periodMs: (p.periodSeconds ?? 10) * 1000,
    timeoutMs: (p.timeoutSeconds ?? 1) * 1000,
    successThreshold: p.successThreshold ?? 1,
    failureThreshold: p.failureThreshold ?? 3,
  };
}

function portOf(port: number | string, ports: V1ContainerPort[]): number {
  if (typeof port === "number") return port;
  if (/^\d+$/.test(port)) return Number(port);
  const named = ports.find((p) => p.name === port);
  if (!named) throw new Error(`no container port named ${port}`);
  return named.containerPort;
}

/** One probe run: resolves true (passed) or false, never throws. */
export async function runProbe(p: V1Probe, t: ProbeTarget, timeoutMs: number): Promise<boolean> {
  try {
    if (p.httpGet) return await httpProbe(p, t, timeoutMs);
    if (p.tcpSocket)
      return await tcpProbe(p.tcpSocket.host ?? t.address, portOf(p.tcpSocket.port, t.ports), timeoutMs);
    if (p.exec?.command?.length) return await execProbe(p.exec.command, t, timeoutMs);
    return false;
  } catch {
    return false;
  }
}

async function httpProbe(p: V1Probe, t: ProbeTarget, timeoutMs: number): Promise<boolean> {
  const g = p.httpGet!;
  const scheme = (g.scheme ?? "HTTP").toLowerCase();
  const path = g.path?.startsWith("/") ? g.path : `/${g.path ?? ""}`;
  const headers: Record<string, string> = { "user-agent": "lightjail-probe" };
  for (const h of g.httpHeaders ?? []) headers[h.name] = h.value;
  const res = await fetch(`${scheme}://${g.host ?? t.address}:${portOf(g.port, t.ports)}${path}`, {
    headers,
    redirect: "manual",
    signal: AbortSignal.timeout(timeoutMs),
    // The kubelet does not verify a pod's certificate either.
    tls: { rejectUnauthorized: false },
  });
  await res.body?.cancel();
  return res.status >= 200 && res.status < 400;
}

function tcpProbe(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s) {
          clearTimeout(timer);
          s.end();
          resolve(true);
        },
        data() {},
        connectError() {
          clearTimeout(timer);
          resolve(false);
        },
        error() {},
      },
    }).catch(() => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

async function execProbe(command: string[], t: ProbeTarget, timeoutMs: number): Promise<boolean> {
  const r = await execInJail(t.jail, command, { uid: t.uid, gid: t.gid, env: t.env, cwd: t.cwd, timeoutMs });
  return r.code === 0 && !r.timedOut;
}
