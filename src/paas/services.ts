/**
 * Backing services (postgres, redis): each runs in its own jail on a private address, with a
 * persistent data directory under the root that outlives restarts and redeploys, a health
 * check (its port accepts connections) and credentials generated when it is created. Linking
 * a service to an app lets the app's jails reach it and sets the variables its kind declares
 * (DATABASE_URL, REDIS_URL), then restarts the app's processes with them.
 *
 * The kinds are described here until service plugins (plugins/services/<name>/) can supply
 * them; they run the host world's binaries.
 */
import { chownSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LjError } from "../errors.ts";
import { runJail } from "../jail/spawn.ts";
import type { JailSpec } from "../jail/spec.ts";
import { paths } from "../store/paths.ts";
import { defaultWorld, worldMounts, worldPath } from "../store/worlds.ts";
import type { ServiceRow } from "./db.ts";
import type { Paas, ServiceBinding } from "./paas.ts";
import { Instance } from "./supervisor.ts";

const SERVICE_UID = 65534;

interface ServiceKind {
  port: number;
  /** Host paths that must exist for this kind to run (checked at create). */
  needs: string[];
  credentials(name: string): Record<string, string>;
  /** One-time setup of the data directory, in a jail (runs as SERVICE_UID). */
  init?: (creds: Record<string, string>) => string;
  run(creds: Record<string, string>): string;
  env(creds: Record<string, string>, address: string): Record<string, string>;
}

const secret = () => Buffer.from(crypto.getRandomValues(new Uint8Array(18))).toString("base64url");

function pgBin(): string {
  for (const v of ["17", "16", "15", "14", "13"]) {
    if (existsSync(`/usr/lib/postgresql/${v}/bin/postgres`)) return `/usr/lib/postgresql/${v}/bin`;
  }
  return "/usr/lib/postgresql/15/bin";
}

const KINDS: Record<string, ServiceKind> = {
  postgres: {
    port: 5432,
    needs: [join(pgBin(), "postgres")],
    credentials: (name) => ({ user: "app", password: secret(), database: name.replace(/-/g, "_") }),
    init: (c) =>
      [
        "set -e",
        "printf '%s' \"$PGPASS\" > /tmp/pw",
        `${pgBin()}/initdb -D /data/pg -U ${c.user} --pwfile=/tmp/pw --auth=scram-sha-256 -E UTF8 >/dev/null`,
        'echo "host all all 0.0.0.0/0 scram-sha-256" >> /data/pg/pg_hba.conf',
        `${pgBin()}/postgres --single -D /data/pg postgres <<EOF >/dev/null\nCREATE DATABASE ${c.database};\nEOF`,
      ].join("\n"),
    run: () => `exec ${pgBin()}/postgres -D /data/pg -c listen_addresses='*' -p 5432 -k /tmp`,
    env: (c, a) => ({ DATABASE_URL: `postgres://${c.user}:${c.password}@${a}:5432/${c.database}` }),
  },
  redis: {
    port: 6379,
    needs: ["/usr/bin/redis-server"],
    credentials: () => ({ password: secret() }),
    run: (c) =>
      `exec /usr/bin/redis-server --bind 0.0.0.0 --port 6379 --dir /data --appendonly yes --requirepass ${c.password}`,
    env: (c, a) => ({ REDIS_URL: `redis://:${c.password}@${a}:6379` }),
  },
};

export interface ServiceInfo extends ServiceRow {
  state: string;
  address: string | null;
  port: number;
  env: Record<string, string>;
}

export class ServiceManager {
  private readonly running = new Map<string, Instance>();

  constructor(private readonly paas: Paas) {}

  private dataDir(name: string): string {
    return join(paths.paasServices(), name);
  }

  private async spec(
    row: ServiceRow,
    argv: string[],
    extraEnv: Record<string, string> = {},
  ): Promise<JailSpec> {
    const world = await defaultWorld();
    return {
      argv,
      layers: [worldPath(world)],
      mounts: [...(await worldMounts(world)), { src: this.dataDir(row.name), dst: "/data" }],
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/data", LANG: "C.UTF-8", ...extraEnv },
      cwd: "/data",
      uid: SERVICE_UID,
      gid: SERVICE_UID,
      hostname: row.name,
      net: "private",
      limits: { memoryBytes: 512 * 1024 * 1024, pids: 256 },
      stdio: ["ignore", "pipe", "pipe"],
      name: `service.${row.name}`,
    };
  }

  private kind(type: string): ServiceKind {
    const k = KINDS[type];
    if (!k) {
      throw new LjError("usage", "unknown-service", `unknown service type ${type}`, {
        hint: `types: ${Object.keys(KINDS).join(", ")}`,
      });
    }
    return k;
  }

  private async start(row: ServiceRow): Promise<Instance> {
    const k = this.kind(row.type);
    const spec = await this.spec(row, ["/bin/sh", "-c", k.run(row.credentials)]);
    const inst = new Instance(
      "service",
      1,
      0,
      () => spec,
      {
        log: (_src, line) => this.paas.logs.write(`service-${row.name}`, row.name, line),
        changed: () => {},
      },
      30_000,
      k.port,
    );
    this.running.set(row.name, inst);
    inst.start();
    await inst.waitHealthy();
    return inst;
  }

  async create(type: string, name: string): Promise<ServiceInfo> {
    const k = this.kind(type);
    if (!/^[a-z][a-z0-9-]{0,30}$/.test(name)) {
      throw new LjError("usage", "bad-service-name", `invalid service name ${JSON.stringify(name)}`);
    }
    if (this.paas.db.findService(name))
      throw new LjError("conflict", "service-exists", `service ${name} already exists`);
    for (const n of k.needs) {
      if (!existsSync(n)) {
        throw new LjError(
          "unavailable",
          "service-unavailable",
          `${type} is not installed on this host (${n} is missing)`,
          {
            hint: `install it (e.g. apt-get install ${type === "redis" ? "redis-server" : "postgresql"})`,
          },
        );
      }
    }
    const creds = k.credentials(name);
    const dir = this.dataDir(name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chownSync(dir, SERVICE_UID, SERVICE_UID);
    const row: ServiceRow = { name, type, credentials: creds, createdAt: "", links: [] };
    try {
      if (k.init) {
        const r = await runJail({
          ...(await this.spec(row, ["/bin/sh", "-c", k.init(creds)], { PGPASS: creds.password ?? "" })),
          timeoutMs: 120_000,
        });
        if (r.status !== 0) {
          throw new LjError(
            "internal",
            "service-init",
            `initialising ${type} failed: ${(r.stderr || r.stdout).trim().slice(-500)}`,
          );
        }
      }
      writeFileSync(join(dir, ".lj-service.json"), JSON.stringify({ type, name }), { mode: 0o600 });
      this.paas.db.createService(name, type, creds);
      await this.start(this.paas.db.service(name));
    } catch (e) {
      await this.running.get(name)?.stop();
      this.running.delete(name);
      this.paas.db.deleteService(name);
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    return this.info(name);
  }

  info(name: string): ServiceInfo {
    const row = this.paas.db.service(name);
    const inst = this.running.get(name);
    const address = inst?.jail?.address ?? null;
    const k = KINDS[row.type]!;
    return {
      ...row,
      state: inst?.state ?? "stopped",
      address,
      port: k.port,
      env: address ? k.env(row.credentials, address) : {},
    };
  }

  list(): ServiceInfo[] {
    return this.paas.db.services().map((s) => this.info(s.name));
  }

  bindingFor(app: string): ServiceBinding {
    const out: ServiceBinding = { env: {}, addresses: [] };
    for (const s of this.paas.db.linkedServices(app)) {
      const address = this.running.get(s.name)?.jail?.address;
      const k = KINDS[s.type];
      if (!address || !k) continue;
      Object.assign(out.env, k.env(s.credentials, address));
      out.addresses.push(address);
    }
    return out;
  }

  async link(name: string, app: string): Promise<ServiceInfo> {
    this.paas.db.service(name);
    this.paas.db.app(app);
    this.paas.db.link(name, app);
    await this.paas.restart(app);
    return this.info(name);
  }

  async unlink(name: string, app: string): Promise<ServiceInfo> {
    this.paas.db.service(name);
    this.paas.db.unlink(name, app);
    await this.paas.restart(app);
    return this.info(name);
  }

  async destroy(name: string): Promise<void> {
    const row = this.paas.db.service(name);
    this.paas.db.deleteService(name);
    for (const app of row.links) await this.paas.restart(app).catch(() => {});
    await this.running.get(name)?.stop();
    this.running.delete(name);
    rmSync(this.dataDir(name), { recursive: true, force: true });
  }

  /** Starts every service (before apps, so their links resolve). */
  async recover(): Promise<void> {
    await Promise.all(
      this.paas.db
        .services()
        .map((s) =>
          this.start(s).catch((e: Error) =>
            this.paas.logs.write(`service-${s.name}`, "lj", `could not start ${s.name}: ${e.message}`),
          ),
        ),
    );
  }

  async close(): Promise<void> {
    const all = [...this.running.values()];
    this.running.clear();
    await Promise.all(all.map((i) => i.stop()));
  }
}
