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
import type { BindMount, JailSpec } from "../jail/spec.ts";
import type { Identity } from "../store/identities.ts";

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
    out.mounts.push({ src: ca, dst: BUILD_CA_PATH, readonly: true });
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

export interface BuildJailOptions {
  identity: Identity;
  net: BuildNet;
  memoryBytes: number;
  cpus: number;
  pids: number;
  timeoutMs: number;
}

/**
 * The confinement part of a build's jail spec; the caller adds what it runs (argv, env, cwd),
 * its layers, its upper layer and its own mounts.
 */
export function confineBuild(o: BuildJailOptions, env: Record<string, string | undefined> = process.env) {
  const corp = corporateSetup(env);
  const spec = {
    userns: { uidBase: o.identity.uid, gidBase: o.identity.gid, count: o.identity.count },
    uid: 0,
    gid: 0,
    hostname: "ljbuild",
    limits: { memoryBytes: o.memoryBytes, cpus: o.cpus, pids: o.pids },
    rlimits: { nofile: Math.min(BUILD_NOFILE, ownNofileHard()), core: 0 },
    tmpBytes: BUILD_TMP_BYTES,
    timeoutMs: o.timeoutMs,
    ...(o.net === "none" ? { net: "none" as const } : { net: "private" as const, egress: true }),
  } satisfies Partial<JailSpec>;
  return { spec, env: corp.env, mounts: corp.mounts };
}
