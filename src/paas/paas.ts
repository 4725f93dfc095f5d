/**
 * The PaaS core: apps, deploys, releases, config, formation and one-off runs, over the
 * database (desired state) and the supervisor (running state). Every change that alters what
 * runs goes through `roll`: start the new release's processes, health-check them, switch the
 * router to them, stop the old ones. Changes to one app are serialised by a per-app lock.
 */
import { chmodSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { buildApp } from "../build/app.ts";
import { BASE_PATH } from "../build/run.ts";
import type { BuildLog, Slug } from "../build/types.ts";
import { LjError } from "../errors.ts";
import { type GcReport, gc } from "../jail/gc.ts";
import { type JailPty, startOnTerminal, type WindowSize } from "../jail/pty.ts";
import { type Jail, spawnJail } from "../jail/spawn.ts";
import type { JailSpec } from "../jail/spec.ts";
import { forgetIdentity, identityEtc, identityOf } from "../store/identities.ts";
import { checkName } from "../store/names.ts";
import { paths } from "../store/paths.ts";
import { type AppRow, type DeployRow, type Formation, PaasDb, type ReleaseRow } from "./db.ts";
import { DeployRun } from "./deploy-run.ts";
import { checkFormationChange, type FormationChange, LIMIT_FIELDS } from "./formation.ts";
import { collectSlugLeftovers } from "./leftovers.ts";
import { LogHub, pumpLines } from "./logs.ts";
import { type InstanceInfo, PROCESS_DEFAULTS, ProcessSet, WEB_PORT } from "./supervisor.ts";

export type BuildFn = (dir: string, opts: { app: string; log?: BuildLog; force?: boolean }) => Promise<Slug>;

/** What linked services add to an app's processes. */
export interface ServiceBinding {
  env: Record<string, string>;
  /** Addresses the app's jails may connect to. */
  addresses: string[];
}

export interface ServiceProvider {
  bindingFor(app: string): ServiceBinding;
}

export interface PaasOptions {
  /** App builds; default: buildApp from src/build/app.ts. Tests inject a fake here. */
  build?: BuildFn;
  /** How long a new web process may take to accept connections. */
  healthTimeoutMs?: number;
  /** Releases kept per app (older ones are pruned). */
  keepReleases?: number;
  memoryMb?: number;
  pids?: number;
}

/** The Procfile entry run once per release before its processes start (not a process type). */
export const RELEASE_PHASE = "release";
const RELEASE_TIMEOUT_MS = 30 * 60 * 1000;

/** An app process's PATH: its own node_modules binaries first (a slug may set its own). */
const DEFAULT_PATH = `/app/node_modules/.bin:${BASE_PATH}`;

export interface AppInfo extends AppRow {
  release: ReleaseRow | null;
  processes: InstanceInfo[];
  services: string[];
}

/**
 * Removes a slug no kept release uses: slugs/<app>/<id>/ with its <id>.json and <id>.log (the
 * overlay store counts slug records as overlay users, so their overlays become collectable).
 * Only slugs in this root's slug store are touched.
 */
function removeSlug(app: string, slug: Slug): void {
  const dir = join(paths.slugs(), app);
  if (dirname(slug.path) !== dir || basename(slug.path) !== slug.id) return;
  rmSync(slug.path, { recursive: true, force: true });
  rmSync(`${slug.path}.json`, { force: true });
  rmSync(`${slug.path}.log`, { force: true });
}

/**
 * A process's argv: plain words (no quoting, variables, globs, redirections, operators or
 * leading assignments) run as they are, without a shell in between, so the app's process is
 * the jail's payload (its end is its own, "killed by signal 9", and no shell sits beside it);
 * anything else runs under `/bin/sh -c`.
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

export class Paas {
  readonly db: PaasDb;
  readonly logs: LogHub;
  private readonly sets = new Map<string, ProcessSet>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly running = new Map<number, DeployRun>();
  private readonly oneOffs = new Set<Jail>();
  services: ServiceProvider | null = null;
  /** Called whenever an app's set of healthy web targets may have changed. */
  onChange: () => void = () => {};
  private closed = false;

  constructor(readonly opts: PaasOptions = {}) {
    // Tenants' data is root's alone on the host; jails reach it through bind mounts.
    for (const d of [paths.paas(), paths.slugs(), paths.appCache(), paths.tmp()]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      chmodSync(d, 0o700);
    }
    this.db = new PaasDb(paths.paasDb());
    this.logs = new LogHub(paths.paasLogs());
  }

  private get healthTimeoutMs(): number {
    return this.opts.healthTimeoutMs ?? 30_000;
  }

  /**
   * Brings back the desired state after a (re)start: leftovers of a dead server go, deploys it
   * left half-done are failed, every app's current release runs again.
   */
  async prepare(): Promise<void> {
    await gc().catch(() => {});
    // Deploys the dead server left running are failed first: their slugs are then unused.
    this.db.failInterruptedDeploys();
    const report: GcReport = { removed: [], errors: [] };
    collectSlugLeftovers(report, this.db);
    for (const e of report.errors) console.error(`lj serve: could not remove ${e.what}: ${e.error}`);
    rmSync(paths.paasIncoming(), { recursive: true, force: true });
    mkdirSync(paths.paasIncoming(), { recursive: true, mode: 0o700 });
  }

  /** Starts every app's current release (after `prepare`, and after services are up). */
  async recover(): Promise<void> {
    await Promise.all(
      this.db
        .apps()
        .filter((a) => a.currentRelease !== null)
        .map((a) =>
          this.withLock(a.name, async () => {
            const rel = this.db.release(a.name, a.currentRelease!);
            const set = this.newSet(a.name, rel);
            this.sets.set(a.name, set);
            await set.scale(this.counts(a.formation, rel.slug));
            this.logs.write(a.name, "lj", `restored release v${rel.version} after a server start`);
          }),
        ),
    );
  }

  // Locks --------------------------------------------------------------------------------------

  private withLock<T>(app: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(app) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.locks.set(app, tail);
    void tail.then(() => {
      if (this.locks.get(app) === tail) this.locks.delete(app);
    });
    return next;
  }

  // Apps ---------------------------------------------------------------------------------------

  createApp(name: string): AppRow {
    checkName(name, "app");
    const row = this.db.createApp(name);
    this.onChange();
    return row;
  }

  appInfo(name: string): AppInfo {
    const a = this.db.app(name);
    return {
      ...a,
      release: a.currentRelease !== null ? this.db.findRelease(name, a.currentRelease) : null,
      processes: this.sets.get(name)?.info() ?? [],
      services: this.db.linkedServices(name).map((s) => s.name),
    };
  }

  async destroyApp(name: string): Promise<void> {
    this.db.app(name);
    await this.withLock(name, async () => {
      const set = this.sets.get(name);
      this.sets.delete(name);
      this.onChange();
      await set?.stop();
      this.db.deleteApp(name);
      this.logs.forget(name);
      rmSync(join(paths.paasGit(), `${name}.git`), { recursive: true, force: true });
      rmSync(join(paths.slugs(), name), { recursive: true, force: true });
      rmSync(join(paths.appCache(), name), { recursive: true, force: true });
      forgetIdentity("app", name);
    });
  }

  /** Healthy web targets of the app's active release; null for an unknown app. */
  targets(app: string): { address: string; port: number }[] | null {
    const set = this.sets.get(app);
    if (!set) return this.db.findApp(app) ? [] : null;
    return set.webTargets().map((i) => ({ address: i.jail!.address!, port: WEB_PORT }));
  }

  ps(app: string): InstanceInfo[] {
    this.db.app(app);
    return this.sets.get(app)?.info() ?? [];
  }

  // Deploys ------------------------------------------------------------------------------------

  /** A fresh directory for an upload; removed by the deploy (or the next server start). */
  incomingDir(): string {
    mkdirSync(paths.paasIncoming(), { recursive: true, mode: 0o700 });
    return join(paths.paasIncoming(), `${Date.now()}-${Math.random().toString(36).slice(2, 10)}`);
  }

  /**
   * Starts a deploy of an extracted source tree (which the deploy then owns and removes).
   * Returns at once; the run's log streams live and `done` settles with the finished row.
   */
  deploy(app: string, dir: string, source: string): DeployRun {
    this.db.app(app);
    const row = this.db.createDeploy(app, source);
    const run = new DeployRun(row.id, app, (seq, line) => this.db.appendDeployLog(row.id, seq, line));
    this.running.set(row.id, run);
    const waiting = this.locks.has(app);
    if (waiting) run.log(`-----> Waiting for the deploy before this one to finish`);
    void this.withLock(app, () => this.runDeploy(run, dir, source)).then(
      (r) => this.endDeploy(run, "succeeded", r.version, null),
      (e: Error) => {
        run.log(`-----> Deploy failed: ${e.message}`);
        if (e instanceof LjError && e.hint) run.log(`       ${e.hint}`);
        const current = this.db.findApp(app)?.currentRelease;
        if (current) run.log(`-----> Release v${current} is still serving`);
        this.endDeploy(run, "failed", null, e.message);
      },
    );
    return run;
  }

  private endDeploy(
    run: DeployRun,
    status: "succeeded" | "failed",
    release: number | null,
    error: string | null,
  ) {
    if (status === "succeeded") run.log(`=====> deploy ${run.id} succeeded: release v${release} is serving`);
    else run.log(`=====> deploy ${run.id} failed`);
    this.db.finishDeploy(run.id, status, release, error);
    this.running.delete(run.id);
    this.logs.write(run.app, "lj", `deploy ${run.id} ${status}${release ? `: v${release}` : ""}`);
    run.finish(this.db.deploy(run.id));
  }

  private async runDeploy(run: DeployRun, dir: string, source: string): Promise<ReleaseRow> {
    try {
      const build = this.opts.build ?? buildApp;
      run.log(`-----> Building ${run.app} from ${source} (deploy ${run.id})`);
      const t0 = performance.now();
      const slug = await build(dir, { app: run.app, log: run.log });
      run.log(`-----> Built slug ${slug.id} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      this.db.setDeploySlug(run.id, slug.id);
      const types = Object.keys(slug.processes);
      run.log(`-----> Process types: ${types.length ? types.join(", ") : "(none)"}`);
      const config = this.db.app(run.app).config;
      try {
        return await this.roll(run.app, slug, config, `deploy ${run.id} (${source})`, run.log, {
          releasePhase: true,
        });
      } catch (e) {
        // No release uses a failed deploy's slug: it goes now, not at the next start.
        if (!this.db.releases(run.app).some((r) => r.slug.path === slug.path)) removeSlug(run.app, slug);
        throw e;
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  deployRun(id: number): DeployRun | undefined {
    return this.running.get(id);
  }

  deployInfo(id: number): DeployRow & { log: string[] } {
    return { ...this.db.deploy(id), log: this.db.deployLog(id) };
  }

  // Releases -----------------------------------------------------------------------------------

  private counts(formation: Formation, slug: Slug): Record<string, number> {
    const out: Record<string, number> = {};
    for (const type of Object.keys(slug.processes)) {
      if (type === RELEASE_PHASE) continue;
      out[type] = formation[type]?.count ?? (type === "web" ? 1 : 0);
    }
    return out;
  }

  private newSet(app: string, rel: { version: number; slug: Slug; config: Record<string, string> }) {
    return new ProcessSet(
      app,
      rel.version,
      (type, index) => this.processSpec(app, rel, type, `${type}.${index}`),
      { log: (source, line) => this.logs.write(app, source, line), changed: () => this.onChange() },
      this.healthTimeoutMs,
    );
  }

  /** The jail of one process of a release: world + overlays + slug, read-only, private address. */
  processSpec(
    app: string,
    rel: { version: number; slug: Slug; config: Record<string, string> },
    type: string,
    name: string,
    command?: string,
  ): JailSpec {
    const { slug } = rel;
    const cmd = command ?? slug.processes[type]?.command;
    if (!cmd)
      throw new LjError("not-found", "no-process-type", `release v${rel.version} has no ${type} process`);
    const settings = this.db.findApp(app)?.formation[type];
    const binding = this.services?.bindingFor(app) ?? { env: {}, addresses: [] };
    // The app's own host identity: no other tenant's process shares its uid (per-user limits).
    const who = identityOf("app", app);
    return {
      argv: commandArgv(cmd),
      layers: [slug.worldPath, ...slug.overlays.map((o) => o.path), slug.path],
      mounts: [...slug.worldMounts, ...identityEtc(slug.worldPath, who, slug.cwd)],
      cwd: slug.cwd,
      env: {
        PATH: DEFAULT_PATH,
        HOME: slug.cwd,
        ...slug.env,
        ...binding.env,
        ...rel.config,
        PORT: String(WEB_PORT),
        LJ_APP: app,
        LJ_RELEASE: `v${rel.version}`,
        LJ_PROCESS: name,
      },
      uid: who.uid,
      gid: who.gid,
      hostname: `${app}-${name.replace(".", "-")}`,
      net: "private",
      links: binding.addresses,
      limits: {
        // The operator's formation, then the app's lj.toml [limits], then the server's defaults.
        memoryBytes: (settings?.memoryMb ?? slug.limits?.memoryMb ?? this.opts.memoryMb ?? 512) * 1024 * 1024,
        pids: settings?.pids ?? slug.limits?.pids ?? this.opts.pids ?? 256,
        cpus: settings?.cpus ?? slug.limits?.cpus ?? PROCESS_DEFAULTS.cpus,
      },
      rlimits: { nofile: settings?.nofile ?? PROCESS_DEFAULTS.nofile },
      stdio: ["ignore", "pipe", "pipe"],
      name: `${app}.${name}`,
    };
  }

  /**
   * The release phase (a Procfile's `release:` command, e.g. migrations): run once per new
   * release from a deploy or a config change, in a fresh jail of the new release, before any of
   * its processes start. A failure fails the release; the one serving now keeps serving.
   */
  private async releasePhase(
    app: string,
    rel: { version: number; slug: Slug; config: Record<string, string> },
    log: (l: string) => void,
  ): Promise<void> {
    const cmd = rel.slug.processes[RELEASE_PHASE]?.command ?? "";
    log(`-----> Running the release command of v${rel.version}: ${cmd}`);
    const jail = spawnJail({
      ...this.processSpec(app, rel, RELEASE_PHASE, `${RELEASE_PHASE}.1`),
      timeoutMs: RELEASE_TIMEOUT_MS,
    });
    this.oneOffs.add(jail);
    try {
      const out = (l: string) => log(`       ${l}`);
      const [, , r] = await Promise.all([
        pumpLines(jail.stdout, out),
        pumpLines(jail.stderr, out),
        jail.exited,
      ]);
      if (r.status !== 0) {
        const how =
          r.reason === "timeout"
            ? `timed out after ${RELEASE_TIMEOUT_MS / 60000} minutes`
            : r.reason === "setup"
              ? `could not start: ${r.error}`
              : `exited with status ${r.status}`;
        throw new LjError(
          "internal",
          "release-command-failed",
          `the release command of v${rel.version} ${how}`,
          {
            hint: "fix it (or what it needs, e.g. a linked database) and deploy again",
          },
        );
      }
      log(`-----> Release command of v${rel.version} succeeded`);
    } finally {
      await jail.closed;
      this.oneOffs.delete(jail);
    }
  }

  /**
   * Makes (slug, config) the app's new release: start its processes beside the old ones, wait
   * until they are healthy, record the release, switch traffic, stop the old processes. On any
   * failure the new processes go and the old release keeps serving. Call with the app's lock.
   */
  private async roll(
    app: string,
    slug: Slug,
    config: Record<string, string>,
    description: string,
    log: (l: string) => void,
    opts: { releasePhase?: boolean } = {},
  ): Promise<ReleaseRow> {
    const a = this.db.app(app);
    const version = (this.db.releases(app)[0]?.version ?? 0) + 1;
    if (opts.releasePhase && slug.processes[RELEASE_PHASE]) {
      await this.releasePhase(app, { version, slug, config }, log);
    }
    const counts = this.counts(a.formation, slug);
    const set = this.newSet(app, { version, slug, config });
    const summary = Object.entries(counts)
      .map(([t, n]) => `${t}=${n}`)
      .join(" ");
    log(`-----> Starting v${version} processes: ${summary || "(none)"}`);
    try {
      await set.scale(counts);
      await set.healthy();
    } catch (e) {
      await set.stop();
      throw e;
    }
    if (counts.web) log(`-----> Health check passed (${counts.web} web instance(s) accept connections)`);
    const rel = this.db.addRelease(app, slug, config, description);
    const old = this.sets.get(app);
    this.sets.set(app, set);
    this.onChange();
    log(`-----> Released v${rel.version}: ${description}`);
    if (old) {
      log(`-----> Stopping v${old.release} processes`);
      await old.stop();
    }
    const dropped = this.db.pruneReleases(app, this.opts.keepReleases ?? 10);
    if (dropped.length) {
      log(`-----> Pruned releases ${dropped.map((r) => `v${r.version}`).join(", ")}`);
      const kept = new Set(this.db.releases(app).map((r) => r.slug.path));
      for (const r of dropped) if (!kept.has(r.slug.path)) removeSlug(app, r.slug);
    }
    return rel;
  }

  releases(app: string): ReleaseRow[] {
    this.db.app(app);
    return this.db.releases(app);
  }

  async rollback(app: string, version: number, log: (l: string) => void = () => {}): Promise<ReleaseRow> {
    const target = this.db.release(app, version);
    return this.withLock(app, () =>
      this.roll(app, target.slug, target.config, `rollback to v${version}`, (l) => {
        log(l);
        this.logs.write(app, "lj", l);
      }),
    );
  }

  private currentRelease(app: string): ReleaseRow | null {
    const a = this.db.app(app);
    return a.currentRelease === null ? null : this.db.release(app, a.currentRelease);
  }

  // Config -------------------------------------------------------------------------------------

  config(app: string): Record<string, string> {
    return this.db.app(app).config;
  }

  /** Sets (string) and unsets (null) variables; a new release when the app has one. */
  async setConfig(app: string, changes: Record<string, string | null>): Promise<{ release: number | null }> {
    for (const [k, v] of Object.entries(changes)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) {
        throw new LjError("usage", "bad-config-key", `invalid config variable name ${JSON.stringify(k)}`);
      }
      if (v !== null && typeof v !== "string") {
        throw new LjError("usage", "bad-config-value", `value of ${k} must be a string or null`);
      }
    }
    return this.withLock(app, async () => {
      const config = { ...this.db.app(app).config };
      for (const [k, v] of Object.entries(changes)) {
        if (v === null) delete config[k];
        else config[k] = v;
      }
      const cur = this.currentRelease(app);
      if (!cur) {
        this.db.db.query("UPDATE apps SET config = ? WHERE name = ?").run(JSON.stringify(config), app);
        return { release: null };
      }
      const keys = Object.keys(changes).join(", ");
      const rel = await this.roll(
        app,
        cur.slug,
        config,
        `config change: ${keys}`,
        (l) => this.logs.write(app, "lj", l),
        { releasePhase: true },
      );
      return { release: rel.version };
    });
  }

  // Formation ----------------------------------------------------------------------------------

  async scale(app: string, changes: Record<string, FormationChange>): Promise<InstanceInfo[]> {
    for (const [type, c] of Object.entries(changes)) {
      checkFormationChange(type, c);
      if (type === RELEASE_PHASE && c.count !== undefined) {
        throw new LjError(
          "usage",
          "bad-process-type",
          `${RELEASE_PHASE} is the release phase, not a process type`,
          {
            hint: "it runs once per release, before the release's processes start",
          },
        );
      }
    }
    return this.withLock(app, async () => {
      const a = this.db.app(app);
      const formation: Formation = { ...a.formation };
      let limitsChanged = false;
      for (const [type, c] of Object.entries(changes)) {
        const prev = formation[type] ?? { count: type === "web" ? 1 : 0 };
        if (LIMIT_FIELDS.some((f) => c[f as keyof FormationChange] !== undefined)) limitsChanged = true;
        formation[type] = {
          ...prev,
          ...Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)),
        };
      }
      const cur = this.currentRelease(app);
      if (cur) {
        for (const type of Object.keys(changes)) {
          if (!cur.slug.processes[type]) {
            throw new LjError(
              "not-found",
              "no-process-type",
              `release v${cur.version} has no ${type} process`,
              {
                hint: `its process types: ${Object.keys(cur.slug.processes).join(", ")}`,
              },
            );
          }
        }
      }
      this.db.setFormation(app, formation);
      if (!cur) return [];
      const set = this.sets.get(app);
      if (limitsChanged || !set) {
        await this.restartLocked(app, cur);
      } else {
        const started = await set.scale(this.counts(formation, cur.slug));
        await set.healthy(started).catch(() => {}); // the supervisor keeps retrying; ps tells
      }
      return this.sets.get(app)?.info() ?? [];
    });
  }

  async restart(app: string): Promise<InstanceInfo[]> {
    return this.withLock(app, async () => {
      const cur = this.currentRelease(app);
      if (cur) await this.restartLocked(app, cur);
      return this.sets.get(app)?.info() ?? [];
    });
  }

  /** New processes of the same release (new env from links, new limits), then the old ones go. */
  private async restartLocked(app: string, cur: ReleaseRow): Promise<void> {
    const a = this.db.app(app);
    const set = this.newSet(app, cur);
    await set.scale(this.counts(a.formation, cur.slug));
    await set.healthy().catch((e: Error) => this.logs.write(app, "lj", `restart: ${e.message}`));
    const old = this.sets.get(app);
    this.sets.set(app, set);
    this.onChange();
    await old?.stop();
  }

  // One-off processes --------------------------------------------------------------------------

  /** A one-off command in a fresh jail of the current release; the caller reads its output. */
  runOnce(app: string, command: string, opts: { stdin?: boolean } = {}): Jail {
    const spec = this.oneOffSpec(app, command);
    const jail = spawnJail({ ...spec, ...(opts.stdin ? { stdio: ["pipe", "pipe", "pipe"] } : {}) });
    this.trackOneOff(app, jail, command);
    return jail;
  }

  /**
   * A one-off process on a terminal of its own jail's devpts (src/jail/pty.ts): the jail is
   * held until the terminal exists, then runs the command on it as its controlling terminal.
   */
  async runOnTerminal(
    app: string,
    command: string,
    size: WindowSize,
    term: string,
  ): Promise<{ jail: Jail; pty: JailPty }> {
    const spec = this.oneOffSpec(app, command);
    const jail = spawnJail({ ...spec, stdio: ["ignore", "ignore", "ignore"] }, { hold: true });
    this.trackOneOff(app, jail, command);
    const pty = await startOnTerminal(jail, spec, size, term);
    if (!pty) {
      jail.kill("SIGKILL");
      throw new LjError("unavailable", "no-shell", "the release has no /bin/sh to open a terminal with", {
        hint: "run without a terminal: lj run --no-tty",
      });
    }
    return { jail, pty };
  }

  /** Throws what a one-off run of the app would throw before it starts (no app, no release). */
  checkRunnable(app: string): void {
    this.oneOffRelease(app);
  }

  private oneOffRelease(app: string): ReleaseRow {
    const cur = this.currentRelease(app);
    if (!cur) {
      throw new LjError("unavailable", "no-release", `app ${app} has no release yet`, {
        hint: "deploy it first (`lj deploy` or `git push`)",
      });
    }
    return cur;
  }

  private oneOffSpec(app: string, command: string): JailSpec {
    const cur = this.oneOffRelease(app);
    return { ...this.processSpec(app, cur, "run", "run.1", command), timeoutMs: 60 * 60 * 1000 };
  }

  private trackOneOff(app: string, jail: Jail, command: string): void {
    this.oneOffs.add(jail);
    void jail.closed.then(() => this.oneOffs.delete(jail));
    this.logs.write(app, "lj", `one-off: ${command}`);
  }

  // Shutdown -----------------------------------------------------------------------------------

  /** Stops every process (the desired state stays in the database for the next start). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const sets = [...this.sets.values()];
    this.sets.clear();
    for (const j of this.oneOffs) j.kill("SIGKILL");
    await Promise.all([...sets.map((s) => s.stop()), ...[...this.oneOffs].map((j) => j.closed)]);
    this.logs.flush();
    this.db.close();
  }

  gitRepo(app: string): string {
    return join(paths.paasGit(), `${app}.git`);
  }

  hasGitRepo(app: string): boolean {
    return existsSync(this.gitRepo(app));
  }
}
