/**
 * How every build jail is confined: app builds and overlay builds run code the platform did
 * not write (a tenant's `npm run build`, a plugin's install script), so they get what an app's
 * process gets and more:
 *
 * - root inside a user namespace mapped onto the build's own host id range (an app's, or the
 *   overlay builder's; src/store/identities.ts), never the host's root: what it writes belongs
 *   to that range on the host, and root inside has no privilege outside;
 * - the read-only layers seen idmapped, so they look root-owned inside as on the host;
 * - no capabilities beyond what a package manager needs inside the namespace, no_new_privs and
 *   the seccomp filter (the keeper applies both to every jail);
 * - memory, pids, CPU and time limits; an `RLIMIT_NOFILE`; a /tmp capped in size;
 * - a disk quota on everything it can write (its upper layer and download cache are on build
 *   disks of fixed size, src/build/disk.ts);
 * - a private address with egress to the outside only (or no network at all), so package
 *   registries work and the host, the API, the router, jails and services do not;
 * - the host's proxy settings and its trust store, so corporate set-ups (a proxy whose CA the
 *   host trusts) keep working (`LJ_BUILD_PROXY=0` leaves both out).
 */
import { existsSync, readFileSync } from "node:fs";
import { describeEnd } from "../jail/ended.ts";
import type { BindMount, JailSpec } from "../jail/spec.ts";
import type { Identity } from "../store/identities.ts";
import { runStreamed, type StreamedRun } from "./run.ts";
import type { BuildLog } from "./types.ts";

export type BuildNet = "egress" | "none";

/** Where the host's CA bundle appears in a build jail (in its /tmp: never in what it publishes). */
export const BUILD_CA_PATH = "/tmp/lj/ca-certificates.crt";

const HOST_CA_BUNDLES = [
  "/etc/ssl/certs/ca-certificates.crt",
  "/etc/pki/tls/certs/ca-bundle.crt",
  "/etc/ssl/cert.pem",
];
const PROXY_VARS = ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"];

/** Limits no build exceeds unless its plugin asks for others. */
export const BUILD_TMP_BYTES = 1024 * 1024 * 1024;
export const BUILD_NOFILE = 16384;

/**
 * The owner's hard limit on open files: a user-namespaced jail cannot raise its limits above
 * what it inherits, so a build asks for at most this.
 */
function ownNofileHard(): number {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const hard = line?.trim().split(/\s+/)[4];
    return hard === undefined || hard === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(hard);
  } catch {
    return BUILD_NOFILE;
  }
}

/** The host's CA bundle (what the host trusts, a proxy's CA included), or null. */
export function hostCaBundle(env: Record<string, string | undefined> = process.env): string | null {
  const extra = env.LJ_BUILD_CA_FILE;
  if (extra) return extra;
  return HOST_CA_BUNDLES.find((f) => existsSync(f)) ?? null;
}

/** The proxy variables of the host's environment, both spellings, for a build's environment. */
export function proxyEnv(env: Record<string, string | undefined> = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of PROXY_VARS) {
    const v = env[k] ?? env[k.toLowerCase()];
    if (v) {
      out[k] = v;
      out[k.toLowerCase()] = v;
    }
  }
  return out;
}

/** The environment and mounts that hand the host's proxy and trust store to a build. */
export function corporateSetup(env: Record<string, string | undefined> = process.env): {
  env: Record<string, string>;
  mounts: BindMount[];
} {
  if (env.LJ_BUILD_PROXY === "0") return { env: {}, mounts: [] };
  const out = { env: proxyEnv(env), mounts: [] as BindMount[] };
  const ca = hostCaBundle(env);
  if (ca) {
    out.mounts.push({ src: ca, dst: BUILD_CA_PATH, readonly: true, idmap: true });
    for (const k of [
      "SSL_CERT_FILE",
      "NODE_EXTRA_CA_CERTS",
      "REQUESTS_CA_BUNDLE",
      "PIP_CERT",
      "CURL_CA_BUNDLE",
      "GIT_SSL_CAINFO",
      "CARGO_HTTP_CAINFO",
    ]) {
      out.env[k] = BUILD_CA_PATH;
    }
  }
  return out;
}

export interface BuildLimits {
  memoryMb: number;
  cpus: number;
  pids: number;
  timeoutS: number;
  /** The build disk's size, for the message when a build fills it. */
  diskMb: number;
}

/** One build in its jail: what it runs, over what, and as whom (see confineBuild). */
export interface BuildRun {
  identity: Identity;
  net: BuildNet;
  limits: BuildLimits;
  argv: string[];
  /** The build's own environment; the proxy and CA variables are added. */
  env: Record<string, string>;
  cwd: string;
  layers: string[];
  /** The writable layer, on a build disk. */
  upper: string;
  mounts: BindMount[];
  /** Capabilities inside the build's user namespace (a package manager's). */
  caps?: string[];
  label: string;
  log: BuildLog;
  logFile: string;
}

/**
 * A read-only bind into a build: opened by the owner and shown idmapped, so its source need not
 * be reachable by the build's unprivileged host ids (a plugin checked out under the state
 * root's 0700 directories), and its root-owned files look root's inside.
 */
export const buildBind = (src: string, dst: string): BindMount => ({ src, dst, readonly: true, idmap: true });

/**
 * The confinement part of a build's jail spec; the caller's run adds what it runs (argv, env,
 * cwd), its layers, its upper layer and its own mounts.
 */
export function confineBuild(b: BuildRun, env: Record<string, string | undefined> = process.env): JailSpec {
  const corp = corporateSetup(env);
  return {
    argv: b.argv,
    env: { ...corp.env, ...b.env },
    cwd: b.cwd,
    layers: b.layers,
    upper: b.upper,
    // A layered system directory (a host world's /usr) is seen idmapped, so root inside owns
    // root's files there and a package manager can change them (into the build's upper).
    mounts: [...b.mounts.map((m) => (m.layered ? { ...m, idmap: true } : m)), ...corp.mounts],
    ...(b.caps ? { caps: b.caps } : {}),
    userns: { uidBase: b.identity.uid, gidBase: b.identity.gid, count: b.identity.count },
    uid: 0,
    gid: 0,
    hostname: "ljbuild",
    limits: { memoryBytes: b.limits.memoryMb * 1048576, cpus: b.limits.cpus, pids: b.limits.pids },
    rlimits: { nofile: Math.min(BUILD_NOFILE, ownNofileHard()), core: 0 },
    tmpBytes: BUILD_TMP_BYTES,
    timeoutMs: b.limits.timeoutS * 1000,
    ...(b.net === "none" ? { net: "none" as const } : { net: "private" as const, egress: true }),
  };
}

/** Runs a build confined; resolves with its result, output tail and line count. */
export function runBuild(b: BuildRun): Promise<StreamedRun> {
  return runStreamed(confineBuild(b), { log: b.log, logFile: b.logFile, label: b.label });
}

/** Why a build that did not succeed ended, in words (one wording for every build). */
export function whyBuildFailed(run: StreamedRun, limits: BuildLimits): string {
  const why = describeEnd(run.result, { timeout: `${limits.timeoutS}s`, memory: `${limits.memoryMb} MB` });
  const full = run.tail.some((l) => /No space left on device|ENOSPC/.test(l));
  return full ? `${why} (its disk of ${limits.diskMb} MB may be full)` : why;
}

/** The last lines of a failed build's output, for its error message. */
export const tailLines = (run: StreamedRun, n = 15) =>
  run.tail
    .slice(-n)
    .map((l) => `  | ${l}`)
    .join("\n");
