import { join } from "node:path";

/**
 * The on-disk layout under LIGHTJAIL_ROOT (seed rule: the variable, or /usr/local/lj when it
 * is empty). Every module asks this file for a path; nothing else spells the layout out.
 */
export function ljRoot(env: Record<string, string | undefined> = process.env): string {
  const v = env.LIGHTJAIL_ROOT;
  return v && v.length > 0 ? v : "/usr/local/lj";
}

export const paths = {
  root: () => ljRoot(),
  worlds: () => join(ljRoot(), "worlds"),
  world: (name: string) => join(ljRoot(), "worlds", name),
  /** Name of the default world on Linux (`lj world default NAME`). */
  defaultWorldFile: () => join(ljRoot(), "worlds", ".default"),
  /** Runtime state of live jails: staging mount points, leases, owner records. */
  run: () => join(ljRoot(), "run"),
  jailsRun: () => join(ljRoot(), "run", "jails"),
  /** Shared empty directory each jail mounts its staging tmpfs on, inside its own mount namespace. */
  stage: () => join(ljRoot(), "run", "stage"),
  tmp: () => join(ljRoot(), "tmp"),
  plugins: () => join(ljRoot(), "plugins"),
  config: () => join(ljRoot(), "config.toml"),
  /** PaaS state: database, API token, git repositories, app logs, service data. */
  paas: () => join(ljRoot(), "paas"),
  paasDb: () => join(ljRoot(), "paas", "state.db"),
  paasToken: () => join(ljRoot(), "paas", "token"),
  paasGit: () => join(ljRoot(), "paas", "git"),
  paasLogs: () => join(ljRoot(), "paas", "logs"),
  /** Uploaded sources being extracted and built; emptied at every server start. */
  paasIncoming: () => join(ljRoot(), "paas", "incoming"),
  paasServices: () => join(ljRoot(), "paas", "services"),
  /** Services' data directories, each owned by its service's identity (src/store/identities.ts). */
  serviceData: () => join(ljRoot(), "service-data"),
  /** Overlays (seed rule): <type>s/<repo url>[/<subdir>]/@<world>/<version>; see src/store/overlays.ts. */
  overlayType: (type: string) => join(ljRoot(), `${type}s`),
  /** Immutable app slugs: slugs/<app>/<id>/app, with <id>.json and <id>.log beside. */
  slugs: () => join(ljRoot(), "slugs"),
  /** Per-app dependency caches, keyed by lockfile: cache/apps/<app>/<plugin>/. */
  appCache: () => join(ljRoot(), "cache", "apps"),
  /** Scratch space for git clones and failed build logs. */
  buildTmp: () => join(ljRoot(), "tmp", "build"),
};
