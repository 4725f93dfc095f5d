/**
 * PaaS state in bun:sqlite (WAL): apps, releases (slug + config + formation), deploys with
 * their logs, services and links. The database holds the *desired* state; the supervisor makes
 * the running state follow it, so a restarted server rebuilds everything from here.
 */
import { Database } from "bun:sqlite";
import { chmodSync, closeSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import type { Slug } from "../build/types.ts";
import { LjError } from "../errors.ts";

export interface ProcessSettings {
  count: number;
  memoryMb?: number;
  pids?: number;
  /** CPU quota in CPUs (default 1) and RLIMIT_NOFILE (default 16384): PROCESS_DEFAULTS. */
  cpus?: number;
  nofile?: number;
}
export type Formation = Record<string, ProcessSettings>;

export interface AppRow {
  name: string;
  createdAt: string;
  config: Record<string, string>;
  formation: Formation;
  currentRelease: number | null;
}

export interface ReleaseRow {
  app: string;
  version: number;
  slug: Slug;
  config: Record<string, string>;
  formation: Formation;
  description: string;
  createdAt: string;
}

export type DeployStatus = "running" | "succeeded" | "failed";

export interface DeployRow {
  id: number;
  app: string;
  source: string;
  status: DeployStatus;
  release: number | null;
  error: string | null;
  createdAt: string;
  finishedAt: string | null;
  /** The slug the deploy built (null before its build finished). */
  slug: string | null;
}

export interface DomainRow {
  domain: string;
  app: string;
  createdAt: string;
}

export interface ServiceRow {
  name: string;
  type: string;
  credentials: Record<string, string>;
  createdAt: string;
  links: string[];
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS apps (
  name TEXT PRIMARY KEY,
  created_at TEXT NOT NULL,
  config TEXT NOT NULL DEFAULT '{}',
  formation TEXT NOT NULL DEFAULT '{}',
  current_release INTEGER
);
CREATE TABLE IF NOT EXISTS releases (
  app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
  version INTEGER NOT NULL,
  slug TEXT NOT NULL,
  config TEXT NOT NULL,
  formation TEXT NOT NULL,
  description TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (app, version)
);
CREATE TABLE IF NOT EXISTS deploys (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
  source TEXT NOT NULL,
  status TEXT NOT NULL,
  release INTEGER,
  error TEXT,
  created_at TEXT NOT NULL,
  finished_at TEXT
);
CREATE TABLE IF NOT EXISTS deploy_logs (
  deploy INTEGER NOT NULL REFERENCES deploys(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  line TEXT NOT NULL,
  PRIMARY KEY (deploy, seq)
);
CREATE TABLE IF NOT EXISTS services (
  name TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  credentials TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
  service TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
  app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
  PRIMARY KEY (service, app)
);
CREATE TABLE IF NOT EXISTS domains (
  domain TEXT PRIMARY KEY,
  app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
  created_at TEXT NOT NULL
);
`;

/**
 * Schema changes since the first schema (SCHEMA above, user_version 0 or 1), in order: entry i
 * takes the database to version i + 2. Each runs once, in a transaction, at the server's start;
 * a database from a newer lightjail is refused rather than misread.
 */
const MIGRATIONS: string[] = [
  // 2: the slug each deploy built (a failed deploy's slug is collected by that id), and the
  // per-app deploy list without a table scan.
  `ALTER TABLE deploys ADD COLUMN slug TEXT;
   CREATE INDEX IF NOT EXISTS deploys_by_app ON deploys(app, id);`,
];

export const SCHEMA_VERSION = MIGRATIONS.length + 1;

/** Runs the migrations a database lacks; returns the version it had. */
export function migrate(db: Database, file: string): number {
  const had = (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
  if (had > SCHEMA_VERSION) {
    throw new LjError(
      "config",
      "db-too-new",
      `${file} has schema version ${had}; this lj knows versions up to ${SCHEMA_VERSION}`,
      { hint: "run the lightjail release that wrote it (or a newer one)" },
    );
  }
  for (let v = Math.max(had, 1); v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v - 1]!);
      db.exec(`PRAGMA user_version = ${v + 1}`);
    })();
  }
  return had;
}

/** The database and its WAL files are root's alone: they hold config values and credentials. */
function restrict(file: string): void {
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      chmodSync(f, 0o600);
    } catch {}
  }
}

const now = () => new Date().toISOString();

type Raw = Record<string, unknown>;

function appRow(r: Raw): AppRow {
  return {
    name: r.name as string,
    createdAt: r.created_at as string,
    config: JSON.parse(r.config as string),
    formation: JSON.parse(r.formation as string),
    currentRelease: (r.current_release as number | null) ?? null,
  };
}

function releaseRow(r: Raw): ReleaseRow {
  return {
    app: r.app as string,
    version: r.version as number,
    slug: JSON.parse(r.slug as string),
    config: JSON.parse(r.config as string),
    formation: JSON.parse(r.formation as string),
    description: r.description as string,
    createdAt: r.created_at as string,
  };
}

function deployRow(r: Raw): DeployRow {
  return {
    id: r.id as number,
    app: r.app as string,
    source: r.source as string,
    status: r.status as DeployStatus,
    release: (r.release as number | null) ?? null,
    error: (r.error as string | null) ?? null,
    createdAt: r.created_at as string,
    finishedAt: (r.finished_at as string | null) ?? null,
    slug: (r.slug as string | null) ?? null,
  };
}

export class PaasDb {
  /** The connection: SQL stays in this file (tests may seed rows through it). */
  readonly db: Database;

  constructor(file: string) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    // Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the same mode.
    closeSync(openSync(file, "a", 0o600));
    restrict(file);
    this.db = new Database(file, { create: true, strict: true });
    this.db.exec("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
    this.db.exec(SCHEMA);
    migrate(this.db, file);
    restrict(file);
  }

  schemaVersion(): number {
    return (this.db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
  }

  close(): void {
    this.db.close();
  }

  // Apps ---------------------------------------------------------------------------------------

  createApp(name: string): AppRow {
    if (this.findApp(name)) {
      throw new LjError("conflict", "app-exists", `app ${name} already exists`);
    }
    this.db
      .query("INSERT INTO apps (name, created_at, formation) VALUES (?, ?, ?)")
      .run(name, now(), JSON.stringify({ web: { count: 1 } }));
    return this.app(name);
  }

  findApp(name: string): AppRow | null {
    const r = this.db.query("SELECT * FROM apps WHERE name = ?").get(name) as Raw | null;
    return r ? appRow(r) : null;
  }

  app(name: string): AppRow {
    const a = this.findApp(name);
    if (!a) {
      throw new LjError("not-found", "app-not-found", `app ${name} does not exist`, {
        hint: `create it with \`lj apps create ${name}\``,
      });
    }
    return a;
  }

  apps(): AppRow[] {
    return (this.db.query("SELECT * FROM apps ORDER BY name").all() as Raw[]).map(appRow);
  }

  deleteApp(name: string): void {
    this.db.query("DELETE FROM apps WHERE name = ?").run(name);
  }

  /** The config of an app without a release (with one, a new release records it). */
  setConfig(name: string, config: Record<string, string>): void {
    this.db.query("UPDATE apps SET config = ? WHERE name = ?").run(JSON.stringify(config), name);
  }

  setFormation(name: string, formation: Formation): void {
    this.db.query("UPDATE apps SET formation = ? WHERE name = ?").run(JSON.stringify(formation), name);
  }

  // Releases -----------------------------------------------------------------------------------

  /** Records a release and makes it current, in one transaction. */
  addRelease(app: string, slug: Slug, config: Record<string, string>, description: string): ReleaseRow {
    const tx = this.db.transaction(() => {
      const a = this.app(app);
      const last = this.db.query("SELECT MAX(version) AS v FROM releases WHERE app = ?").get(app) as {
        v: number | null;
      };
      const version = (last.v ?? 0) + 1;
      this.db
        .query(
          "INSERT INTO releases (app, version, slug, config, formation, description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .run(
          app,
          version,
          JSON.stringify(slug),
          JSON.stringify(config),
          JSON.stringify(a.formation),
          description,
          now(),
        );
      this.db
        .query("UPDATE apps SET current_release = ?, config = ? WHERE name = ?")
        .run(version, JSON.stringify(config), app);
      return version;
    });
    return this.release(app, tx());
  }

  findRelease(app: string, version: number): ReleaseRow | null {
    const r = this.db
      .query("SELECT * FROM releases WHERE app = ? AND version = ?")
      .get(app, version) as Raw | null;
    return r ? releaseRow(r) : null;
  }

  release(app: string, version: number): ReleaseRow {
    const r = this.findRelease(app, version);
    if (!r) {
      throw new LjError("not-found", "release-not-found", `app ${app} has no release v${version}`, {
        hint: `\`lj releases ${app}\` lists the kept releases`,
      });
    }
    return r;
  }

  /** The app's current release (null before its first); throws for an unknown app. */
  currentRelease(app: string): ReleaseRow | null {
    const a = this.app(app);
    return a.currentRelease === null ? null : this.release(app, a.currentRelease);
  }

  releases(app: string): ReleaseRow[] {
    return (
      this.db.query("SELECT * FROM releases WHERE app = ? ORDER BY version DESC").all(app) as Raw[]
    ).map(releaseRow);
  }

  /** Drops releases beyond the newest `keep` (never the current one); returns what was dropped. */
  pruneReleases(app: string, keep: number): ReleaseRow[] {
    const a = this.app(app);
    const all = this.releases(app);
    const drop = all.slice(Math.max(1, keep)).filter((r) => r.version !== a.currentRelease);
    const q = this.db.query("DELETE FROM releases WHERE app = ? AND version = ?");
    for (const r of drop) q.run(app, r.version);
    return drop;
  }

  // Deploys ------------------------------------------------------------------------------------

  createDeploy(app: string, source: string): DeployRow {
    const r = this.db
      .query("INSERT INTO deploys (app, source, status, created_at) VALUES (?, ?, 'running', ?) RETURNING *")
      .get(app, source, now()) as Raw;
    return deployRow(r);
  }

  finishDeploy(id: number, status: DeployStatus, release: number | null, error: string | null): void {
    this.db
      .query("UPDATE deploys SET status = ?, release = ?, error = ?, finished_at = ? WHERE id = ?")
      .run(status, release, error, now(), id);
  }

  setDeploySlug(id: number, slug: string): void {
    this.db.query("UPDATE deploys SET slug = ? WHERE id = ?").run(slug, id);
  }

  deploy(id: number): DeployRow {
    const r = this.db.query("SELECT * FROM deploys WHERE id = ?").get(id) as Raw | null;
    if (!r) throw new LjError("not-found", "deploy-not-found", `deploy ${id} does not exist`);
    return deployRow(r);
  }

  deploys(app: string, limit = 20): DeployRow[] {
    return (
      this.db.query("SELECT * FROM deploys WHERE app = ? ORDER BY id DESC LIMIT ?").all(app, limit) as Raw[]
    ).map(deployRow);
  }

  appendDeployLog(id: number, seq: number, line: string): void {
    this.db.query("INSERT INTO deploy_logs (deploy, seq, line) VALUES (?, ?, ?)").run(id, seq, line);
  }

  deployLog(id: number): string[] {
    return (
      this.db.query("SELECT line FROM deploy_logs WHERE deploy = ? ORDER BY seq").all(id) as {
        line: string;
      }[]
    ).map((r) => r.line);
  }

  /** Deploys a dead server left "running" are failed: their work died with it. */
  failInterruptedDeploys(): number {
    return this.db
      .query(
        "UPDATE deploys SET status = 'failed', error = 'interrupted: the server stopped during the deploy', finished_at = ? WHERE status = 'running'",
      )
      .run(now()).changes;
  }

  // Services -----------------------------------------------------------------------------------

  createService(name: string, type: string, credentials: Record<string, string>): ServiceRow {
    if (this.findService(name)) {
      throw new LjError("conflict", "service-exists", `service ${name} already exists`);
    }
    this.db
      .query("INSERT INTO services (name, type, credentials, created_at) VALUES (?, ?, ?, ?)")
      .run(name, type, JSON.stringify(credentials), now());
    return this.service(name);
  }

  findService(name: string): ServiceRow | null {
    const r = this.db.query("SELECT * FROM services WHERE name = ?").get(name) as Raw | null;
    if (!r) return null;
    const links = (
      this.db.query("SELECT app FROM links WHERE service = ? ORDER BY app").all(name) as { app: string }[]
    ).map((l) => l.app);
    return {
      name: r.name as string,
      type: r.type as string,
      credentials: JSON.parse(r.credentials as string),
      createdAt: r.created_at as string,
      links,
    };
  }

  service(name: string): ServiceRow {
    const s = this.findService(name);
    if (!s) {
      throw new LjError("not-found", "service-not-found", `service ${name} does not exist`, {
        hint: "`lj services list` shows the services",
      });
    }
    return s;
  }

  services(): ServiceRow[] {
    return (this.db.query("SELECT name FROM services ORDER BY name").all() as { name: string }[]).map((r) =>
      this.service(r.name),
    );
  }

  deleteService(name: string): void {
    this.db.query("DELETE FROM services WHERE name = ?").run(name);
  }

  link(service: string, app: string): void {
    this.db.query("INSERT OR IGNORE INTO links (service, app) VALUES (?, ?)").run(service, app);
  }

  unlink(service: string, app: string): void {
    this.db.query("DELETE FROM links WHERE service = ? AND app = ?").run(service, app);
  }

  linkedServices(app: string): ServiceRow[] {
    return (
      this.db.query("SELECT service FROM links WHERE app = ? ORDER BY service").all(app) as {
        service: string;
      }[]
    ).map((r) => this.service(r.service));
  }

  // Domains ------------------------------------------------------------------------------------

  /** Every custom domain, or one app's. */
  domains(app?: string): DomainRow[] {
    const rows = (
      app === undefined
        ? this.db.query("SELECT * FROM domains ORDER BY domain").all()
        : this.db.query("SELECT * FROM domains WHERE app = ? ORDER BY domain").all(app)
    ) as Raw[];
    return rows.map((r) => ({
      domain: r.domain as string,
      app: r.app as string,
      createdAt: r.created_at as string,
    }));
  }

  addDomain(app: string, domain: string): DomainRow {
    this.app(app);
    const owner = this.db.query("SELECT app FROM domains WHERE domain = ?").get(domain) as {
      app: string;
    } | null;
    if (owner) {
      throw new LjError("conflict", "domain-exists", `domain ${domain} already belongs to app ${owner.app}`, {
        hint: owner.app === app ? undefined : `remove it first: lj domains remove ${owner.app} ${domain}`,
      });
    }
    this.db.query("INSERT INTO domains (domain, app, created_at) VALUES (?, ?, ?)").run(domain, app, now());
    return this.domains(app).find((d) => d.domain === domain)!;
  }

  removeDomain(app: string, domain: string): void {
    this.app(app);
    if (this.db.query("DELETE FROM domains WHERE app = ? AND domain = ?").run(app, domain).changes === 0) {
      throw new LjError("not-found", "domain-not-found", `app ${app} has no domain ${domain}`, {
        hint: `\`lj domains list ${app}\` lists its domains`,
      });
    }
  }
}
