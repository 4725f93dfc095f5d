/**
 * How one process of a release is jailed: world + overlays + slug, read-only, on a private
 * address, as the app's own host identity, with the limits of (in order) the operator's
 * formation, the app's lj.toml [limits] and the server's defaults. App processes, the release
 * command and one-off runs all get their jails here.
 */

import type { Slug } from "../build/types.ts";
import { LjError } from "../errors.ts";
import type { JailSpec } from "../jail/spec.ts";
import { DEFAULT_PATH } from "../jail/spec.ts";
import { identityEtc, identityOf } from "../store/identities.ts";
import type { PaasDb } from "./db.ts";
import { PROCESS_DEFAULTS, WEB_PORT } from "./supervisor.ts";

/** What linked services add to an app's processes. */
export interface ServiceBinding {
  env: Record<string, string>;
  /** Addresses the app's jails may connect to. */
  addresses: string[];
}

export interface ServiceProvider {
  bindingFor(app: string): ServiceBinding;
}

/** The Procfile entry run once per release before its processes start (not a process type). */
export const RELEASE_PHASE = "release";

/** An app process's PATH: its own node_modules binaries first (a slug may set its own). */
const APP_PATH = `/app/node_modules/.bin:${DEFAULT_PATH}`;

/** What a process is started from: a release, or the one a deploy or config change is making. */
export interface ReleaseOf {
  version: number;
  slug: Slug;
  config: Record<string, string>;
}

/** The server's defaults where neither the formation nor the app's lj.toml sets a limit. */
export interface ProcessLimitDefaults {
  memoryMb?: number;
  pids?: number;
}

/**
 * A process's argv: plain words (no quoting, variables, globs, redirections, operators or
 * leading assignments) run as they are, without a shell in between, so the app's process is
 * the jail's payload (its end is its own, "was killed by SIGKILL", and no shell sits beside
 * it); anything else runs under `/bin/sh -c`.
 */
const SHELL_WORDS = new Set(
  ". : [ alias bg break case cd command continue eval exec exit export fg for getopts hash if read readonly return set shift source test times trap type ulimit umask unalias unset wait while until".split(
    " ",
  ),
);

export function commandArgv(cmd: string): string[] {
  const words = cmd.trim().split(/[ \t]+/);
  const plain = /^[A-Za-z0-9_./:@%+,=-]+$/;
  const first = words[0] ?? "";
  const direct =
    first !== "" && !first.includes("=") && !SHELL_WORDS.has(first) && words.every((w) => plain.test(w));
  return direct ? words : ["/bin/sh", "-c", cmd];
}

/**
 * The env every process of a release gets (its own name, LJ_PROCESS, aside): the slug's, the
 * linked services', the app's config, then what lightjail sets. Kubernetes nodes give a
 * release's pods the same (src/cluster/artefacts.ts), without service bindings.
 */
export function releaseEnv(
  app: string,
  rel: ReleaseOf,
  services: Record<string, string> = {},
): Record<string, string> {
  return {
    PATH: APP_PATH,
    HOME: rel.slug.cwd,
    ...rel.slug.env,
    ...services,
    ...rel.config,
    PORT: String(WEB_PORT),
    LJ_APP: app,
    LJ_RELEASE: `v${rel.version}`,
  };
}

export class ProcessSpecs {
  constructor(
    private readonly db: PaasDb,
    private readonly services: ServiceProvider,
    private readonly defaults: ProcessLimitDefaults = {},
  ) {}

  /** The jail of process `name` (web.1, run.1) of type `type`; `command` overrides the type's. */
  processSpec(app: string, rel: ReleaseOf, type: string, name: string, command?: string): JailSpec {
    const { slug } = rel;
    const cmd = command ?? slug.processes[type]?.command;
    if (!cmd)
      throw new LjError("not-found", "no-process-type", `release v${rel.version} has no ${type} process`);
    const settings = this.db.findApp(app)?.formation[type];
    const binding = this.services.bindingFor(app);
    // The app's own host identity: no other tenant's process shares its uid (per-user limits).
    const who = identityOf("app", app);
    return {
      argv: commandArgv(cmd),
      layers: [slug.worldPath, ...slug.overlays.map((o) => o.path), slug.path],
      mounts: [...slug.worldMounts, ...identityEtc(slug.worldPath, who, slug.cwd)],
      cwd: slug.cwd,
      env: { ...releaseEnv(app, rel, binding.env), LJ_PROCESS: name },
      uid: who.uid,
      gid: who.gid,
      hostname: `${app}-${name.replace(".", "-")}`,
      net: "private",
      links: binding.addresses,
      limits: {
        memoryBytes:
          (settings?.memoryMb ?? slug.limits?.memoryMb ?? this.defaults.memoryMb ?? 512) * 1024 * 1024,
        pids: settings?.pids ?? slug.limits?.pids ?? this.defaults.pids ?? 256,
        cpus: settings?.cpus ?? slug.limits?.cpus ?? PROCESS_DEFAULTS.cpus,
      },
      rlimits: { nofile: settings?.nofile ?? PROCESS_DEFAULTS.nofile },
      stdio: ["ignore", "pipe", "pipe"],
      name: `${app}.${name}`,
    };
  }
}
