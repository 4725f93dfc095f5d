/**
 * Backing services (postgres, redis): each runs in its own jail on a private address, with a
 * persistent data directory under the root that outlives restarts and redeploys, a health
 * check (its port accepts connections, then its plugin's health command passes) and a
 * password generated when it is created. Linking a service to an app lets the app's jails
 * reach it and sets the variables its plugin's manifest declares ([service.env]:
 * DATABASE_URL, REDIS_URL), then restarts the app's processes with them.
 *
 * A service runs from its plugin's overlay (plugins/services/<type>/) over the default world.
 * Where that overlay cannot be built (a host world shares the host's read-only /usr, so apt
 * cannot install into it) and the world already has the server's binaries, the service runs
 * them directly ("world" runtime) by the recipe of its plugin's [service.world]; the choice is
 * recorded per service.
 */
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ensureOverlay, flatten } from "../build/overlays.ts";
import { LjError } from "../errors.ts";
import { type Jail, runJail } from "../jail/spawn.ts";
import type { JailSpec } from "../jail/spec.ts";
import { DEFAULT_PATH } from "../jail/spec.ts";
import type { ServiceSection, WorldRecipe } from "../plugins/manifest.ts";
import { discover, findPlugin } from "../plugins/registry.ts";
import { forgetIdentity, identityEtc, identityOf } from "../store/identities.ts";
import { NAME_RE } from "../store/names.ts";
import { paths } from "../store/paths.ts";
import { defaultWorld, worldMounts, worldPath } from "../store/worlds.ts";
import type { PaasDb, ServiceRow } from "./db.ts";
import type { LogHub } from "./logs.ts";
import type { ServiceBinding, ServiceProvider } from "./process-spec.ts";
import { Instance, PROCESS_DEFAULTS } from "./supervisor.ts";

const PLUGIN_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"];

/** How a service's jail is made, recorded at create (service.json). */
type Runtime =
  | { kind: "overlay"; world: string; layers: string[]; start: string; dataDir: string }
  | { kind: "world"; world: string };

interface ServiceRecord {
  type: string;
  name: string;
  runtime: Runtime;
  port: number;
  env: Record<string, string>;
}

/** A world recipe's commands with ${BIN} set, or null when the world lacks its server. */
function worldCommands(recipe: WorldRecipe | undefined): WorldRecipe | null {
  const bin = recipe?.binDirs.find((d) => existsSync(join(d, recipe.needs)));
  if (!recipe || bin === undefined) return null;
  const set = (cmd: string) => expand(cmd, { BIN: bin });
  return {
    ...recipe,
    ...(recipe.init !== undefined ? { init: set(recipe.init) } : {}),
    start: set(recipe.start),
    health: set(recipe.health),
  };
}

/** The environment every jail of a service starts from (the server's and its health checks'). */
const BASE_ENV = { PATH: DEFAULT_PATH, LANG: "C.UTF-8" };

/** A service's root: the world, and the plugin's overlay chain over it. */
const layersOf = (rt: Runtime): string[] =>
  rt.kind === "overlay" ? [worldPath(rt.world), ...rt.layers] : [worldPath(rt.world)];

const secret = () => Buffer.from(crypto.getRandomValues(new Uint8Array(18))).toString("base64url");

function expand(template: string, vars: Record<string, string>): string {
  return template.replace(/\$\{([A-Z_]+)\}/g, (m, k: string) => vars[k] ?? m);
}

export interface ServiceInfo extends ServiceRow {
  state: string;
  /** Times its server was restarted after it ended (crashes, failed health checks). */
  restarts: number;
  /** How its server last ended, if it has. */
  lastExit: string | null;
  address: string | null;
  port: number;
  runtime: string;
  env: Record<string, string>;
}

export class ServiceManager implements ServiceProvider {
  private readonly running = new Map<string, Instance>();

  constructor(
    private readonly db: PaasDb,
    private readonly logs: LogHub,
    /** Restarts an app's processes (their links changed). */
    private readonly restartApp: (app: string) => Promise<unknown>,
  ) {}

  private dir(name: string): string {
    return join(paths.paasServices(), name);
  }

  /** Its data: outside paas/ (root's alone), owned by the service's identity, 0700. */
  private dataDir(name: string): string {
    return join(paths.serviceData(), name);
  }

  private record(name: string): ServiceRecord {
    return JSON.parse(readFileSync(join(this.dir(name), "service.json"), "utf8")) as ServiceRecord;
  }

  private log(name: string, line: string): void {
    this.logs.write(`service-${name}`, "lj", line);
  }

  private section(type: string): ServiceSection {
    const p = findPlugin(discover(), { type: "service", name: type });
    if (!p.manifest.service)
      throw new LjError("config", "not-a-service", `plugin ${type} has no [service] table`);
    return p.manifest.service;
  }

  /** The plugin's world recipe with ${BIN} set; the world must have its server. */
  private worldRecipe(type: string): WorldRecipe {
    const w = worldCommands(this.section(type).world);
    if (!w) {
      throw new LjError("unavailable", "service-unavailable", `the world has no ${type} server to run`, {
        hint: "use a world where the plugin's install script can install it (e.g. --from debootstrap:bookworm)",
      });
    }
    return w;
  }

  /** Builds (or finds) the plugin's overlay; falls back to the world's binaries. */
  private async chooseRuntime(type: string, name: string, world: string): Promise<Runtime> {
    const svc = this.section(type);
    try {
      const plugin = findPlugin(discover(), { type: "service", name: type });
      const top = await ensureOverlay(plugin, { world, log: (l) => this.log(name, l) });
      const layers = flatten(top).map((o) => o.path);
      return { kind: "overlay", world, layers, start: svc.start, dataDir: svc.dataDir };
    } catch (e) {
      if (!worldCommands(svc.world)) {
        throw new LjError(
          "unavailable",
          "service-unavailable",
          `cannot run ${type}: ${(e as Error).message}`,
          {
            cause: e,
            hint: "use a world where the plugin's install script can install it (e.g. --from debootstrap:bookworm)",
          },
        );
      }
      this.log(
        name,
        `overlay for ${type} not built (${(e as Error).message.split("\n")[0]}); using the world's ${type}`,
      );
      return { kind: "world", world };
    }
  }

  private async spec(rec: ServiceRecord, password: string, init = false): Promise<JailSpec> {
    const rt = rec.runtime;
    const base = {
      env: {
        ...BASE_ENV,
        PORT: String(rec.port),
        PASSWORD: password,
        NAME: rec.name,
      },
      hostname: rec.name,
      net: "private" as const,
      limits: { memoryBytes: 1024 * 1024 * 1024, pids: 512, cpus: PROCESS_DEFAULTS.cpus },
      rlimits: { nofile: PROCESS_DEFAULTS.nofile },
      stdio: ["ignore", "pipe", "pipe"] as JailSpec["stdio"],
      name: `service.${rec.name}`,
    };
    const data = this.dataDir(rec.name);
    const mounts = await worldMounts(rt.world);
    const who = identityOf("service", rec.name);
    if (rt.kind === "overlay") {
      // The plugin's start script begins as root to prepare its data directory and drop to
      // the server's user: root of a user namespace mapped onto the service's own ids.
      return {
        ...base,
        argv: ["/bin/sh", "-c", `exec ${rt.start}`],
        env: { ...base.env, DATA_DIR: rt.dataDir, HOME: "/root" },
        layers: layersOf(rt),
        mounts: [...mounts, { src: data, dst: rt.dataDir }],
        caps: PLUGIN_CAPS,
        userns: { uidBase: who.uid, gidBase: who.gid, count: who.count },
      };
    }
    const world = this.worldRecipe(rec.type);
    return {
      ...base,
      argv: ["/bin/sh", "-c", init ? (world.init ?? "true") : world.start],
      env: { ...base.env, DATA_DIR: "/data", HOME: "/data" },
      layers: layersOf(rt),
      mounts: [...mounts, ...identityEtc(worldPath(rt.world), who, "/data"), { src: data, dst: "/data" }],
      cwd: "/data",
      uid: who.uid,
      gid: who.gid,
    };
  }

  private async start(row: ServiceRow): Promise<Instance> {
    const rec = this.record(row.name);
    const password = row.credentials.password ?? "";
    const spec = await this.spec(rec, password);
    const inst = new Instance(
      "service",
      1,
      0,
      () => spec,
      {
        log: (_src, line) => this.logs.write(`service-${row.name}`, row.name, line),
        changed: () => {},
        ready: (jail, deadline) => this.ready(rec, password, jail, deadline),
      },
      120_000,
      rec.port,
    );
    this.running.set(row.name, inst);
    inst.start();
    await inst.waitHealthy();
    return inst;
  }

  /**
   * Waits until the service answers its health command: an open port is not enough (postgres
   * accepts connections while it recovers, and refuses queries). The command runs in a fresh
   * jail over the service's own root, on a private address that may reach only the service,
   * with HOST and PORT naming it; it runs every interval until it exits 0, up to its retries
   * and timeout.
   */
  private async ready(rec: ServiceRecord, password: string, jail: Jail, deadline: number): Promise<void> {
    const rt = rec.runtime;
    const health =
      rt.kind === "overlay"
        ? this.section(rec.type).health
        : { command: this.worldRecipe(rec.type).health, intervalS: 0.25, timeoutS: 60, retries: 240 };
    const address = jail.address;
    if (!address) throw new LjError("internal", "service-no-address", `${rec.name} has no address`);
    const who = identityOf("service", rec.name);
    let ended = false;
    void jail.exited.then(() => {
      ended = true;
    });
    const spec: JailSpec = {
      argv: ["/bin/sh", "-c", health.command],
      env: {
        ...BASE_ENV,
        HOST: address,
        PORT: String(rec.port),
        PASSWORD: password,
      },
      layers: layersOf(rt),
      mounts: [...(await worldMounts(rt.world)), ...identityEtc(worldPath(rt.world), who, "/data")],
      net: "private",
      links: [address],
      uid: who.uid,
      gid: who.gid,
      limits: { memoryBytes: 128 * 1024 * 1024, pids: 32 },
      stdio: ["ignore", "pipe", "pipe"],
      name: `health.${rec.name}`,
    };
    const until = Math.min(deadline, performance.now() + health.timeoutS * 1000);
    let last = "";
    for (let attempt = 0; attempt <= health.retries; attempt++) {
      const left = until - performance.now();
      if (left <= 0) break;
      const r = await runJail({ ...spec, timeoutMs: Math.max(1, Math.min(left, 10_000)) });
      if (r.status === 0) return;
      // A check cut short by the deadline says less than the failure before it.
      if (r.reason === "timeout") last ||= "the check did not finish in time";
      else last = (r.error ?? (r.stderr || r.stdout)).trim().slice(-300) || `exit status ${r.status}`;
      if (ended) {
        last = `the server ended while starting (${last})`;
        break;
      }
      await Bun.sleep(health.intervalS * 1000);
    }
    throw new LjError("unavailable", "health-check-failed", `${rec.name} did not become ready: ${last}`, {
      hint: `the health command was: ${health.command}`,
    });
  }

  async create(type: string, name: string): Promise<ServiceInfo> {
    if (!NAME_RE.test(name)) {
      throw new LjError("usage", "bad-service-name", `invalid service name ${JSON.stringify(name)}`, {
        hint: "use 1-31 lower-case letters, digits and dashes, starting with a letter",
      });
    }
    if (this.db.findService(name))
      throw new LjError("conflict", "service-exists", `service ${name} already exists`);
    let svc: ServiceSection;
    try {
      svc = this.section(type);
    } catch (e) {
      throw new LjError("usage", "unknown-service", `unknown service type ${type}: ${(e as Error).message}`, {
        hint: "`lj plugins list` shows the service plugins (postgres, redis, ...)",
      });
    }
    const dir = this.dir(name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const data = this.dataDir(name);
    rmSync(data, { recursive: true, force: true });
    // Searchable, not listable: a user-namespaced server's setup reaches its own directory.
    mkdirSync(paths.serviceData(), { recursive: true, mode: 0o711 });
    mkdirSync(data, { mode: 0o700 });
    const password = secret();
    try {
      const world = await defaultWorld();
      const runtime = await this.chooseRuntime(type, name, world);
      const rec: ServiceRecord = { type, name, runtime, port: svc.port, env: svc.env };
      writeFileSync(join(dir, "service.json"), JSON.stringify(rec, null, 2), { mode: 0o600 });
      // The data directory is the service's own: its first id is its server's (world runtime)
      // or its namespace's root (overlay runtime).
      const who = identityOf("service", name);
      chownSync(data, who.uid, who.gid);
      if (runtime.kind === "world") {
        if (this.worldRecipe(type).init !== undefined) {
          const r = await runJail({ ...(await this.spec(rec, password, true)), timeoutMs: 120_000 });
          if (r.status !== 0) {
            throw new LjError(
              "internal",
              "service-init",
              `initialising ${type} failed: ${(r.stderr || r.stdout).trim().slice(-500)}`,
            );
          }
        }
      }
      this.db.createService(name, type, { password });
      await this.start(this.db.service(name));
    } catch (e) {
      await this.running.get(name)?.stop();
      this.running.delete(name);
      this.db.deleteService(name);
      rmSync(dir, { recursive: true, force: true });
      rmSync(data, { recursive: true, force: true });
      throw e;
    }
    return this.info(name);
  }

  private envOf(row: ServiceRow, address: string): Record<string, string> {
    const rec = this.record(row.name);
    const vars = {
      HOST: address,
      PORT: String(rec.port),
      PASSWORD: row.credentials.password ?? "",
      NAME: row.name,
    };
    return Object.fromEntries(Object.entries(rec.env).map(([k, v]) => [k, expand(v, vars)]));
  }

  info(name: string): ServiceInfo {
    const row = this.db.service(name);
    const inst = this.running.get(name);
    const address = inst?.jail?.address ?? null;
    const rec = this.record(name);
    const { password: _hidden, ...credentials } = row.credentials;
    return {
      ...row,
      credentials,
      state: inst?.state ?? "stopped",
      restarts: inst?.restarts ?? 0,
      lastExit: inst?.lastExit ?? null,
      address,
      port: rec.port,
      runtime: rec.runtime.kind,
      env: address ? this.envOf(row, address) : {},
    };
  }

  list(): ServiceInfo[] {
    return this.db.services().map((s) => this.info(s.name));
  }

  bindingFor(app: string): ServiceBinding {
    const out: ServiceBinding = { env: {}, addresses: [] };
    for (const s of this.db.linkedServices(app)) {
      const address = this.running.get(s.name)?.jail?.address;
      if (!address) continue;
      Object.assign(out.env, this.envOf(s, address));
      out.addresses.push(address);
    }
    return out;
  }

  async link(name: string, app: string): Promise<ServiceInfo> {
    this.db.service(name);
    this.db.app(app);
    this.db.link(name, app);
    this.logs.write(app, "lj", `service ${name} linked`);
    await this.restartApp(app);
    return this.info(name);
  }

  async unlink(name: string, app: string): Promise<ServiceInfo> {
    this.db.service(name);
    this.db.unlink(name, app);
    this.logs.write(app, "lj", `service ${name} unlinked`);
    await this.restartApp(app);
    return this.info(name);
  }

  /** Destroys a service and its data; refused while apps are linked to it, unless `force`. */
  async destroy(name: string, opts: { force?: boolean } = {}): Promise<void> {
    const row = this.db.service(name);
    if (row.links.length > 0 && !opts.force) {
      throw new LjError(
        "conflict",
        "service-linked",
        `service ${name} is linked to ${row.links.join(", ")}`,
        {
          hint: `unlink it first (\`lj services unlink ${name} APP\`), or pass --force to unlink and destroy`,
        },
      );
    }
    this.db.deleteService(name);
    for (const app of row.links) {
      this.logs.write(app, "lj", `service ${name} unlinked: the service was destroyed`);
      await this.restartApp(app).catch(() => {});
    }
    await this.running.get(name)?.stop();
    this.running.delete(name);
    rmSync(this.dir(name), { recursive: true, force: true });
    rmSync(this.dataDir(name), { recursive: true, force: true });
    this.logs.forget(`service-${name}`);
    forgetIdentity("service", name);
  }

  /** Starts every service (before apps, so their links resolve). */
  async recover(): Promise<void> {
    await Promise.all(
      this.db
        .services()
        .map((s) =>
          this.start(s).catch((e: Error) => this.log(s.name, `could not start ${s.name}: ${e.message}`)),
        ),
    );
  }

  async close(): Promise<void> {
    const all = [...this.running.values()];
    this.running.clear();
    await Promise.all(all.map((i) => i.stop()));
  }
}
