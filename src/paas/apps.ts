/**
 * Apps: a name (src/store/names.ts) with its config, formation, releases, deploys, logs, git
 * repository, slugs, build cache and host identity. Removing an app removes all of them.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { forgetIdentity } from "../store/identities.ts";
import { checkName } from "../store/names.ts";
import { paths } from "../store/paths.ts";
import type { AppRow, PaasDb, ReleaseRow } from "./db.ts";
import type { Formation } from "./formation.ts";
import type { AppLocks } from "./locks.ts";
import type { LogHub } from "./logs.ts";
import type { InstanceInfo } from "./supervisor.ts";

export interface AppInfo extends AppRow {
  release: ReleaseRow | null;
  processes: InstanceInfo[];
  services: string[];
}

export class Apps {
  constructor(
    private readonly db: PaasDb,
    private readonly locks: AppLocks,
    private readonly formation: Formation,
    private readonly logs: LogHub,
    /** Called when the set of apps changes (the router forgets what it knew). */
    private readonly changed: () => void,
  ) {}

  list(): AppRow[] {
    return this.db.apps();
  }

  create(name: string): AppRow {
    checkName(name, "app");
    const row = this.db.createApp(name);
    this.changed();
    return row;
  }

  info(name: string): AppInfo {
    const a = this.db.app(name);
    return {
      ...a,
      release: a.currentRelease !== null ? this.db.findRelease(name, a.currentRelease) : null,
      processes: this.formation.ps(name),
      services: this.db.linkedServices(name).map((s) => s.name),
    };
  }

  /** Stops its processes, then removes the app and everything it has. */
  async destroy(name: string): Promise<void> {
    this.db.app(name);
    await this.locks.run(name, async () => {
      await this.formation.remove(name);
      for (const s of this.db.linkedServices(name)) this.db.unlink(s.name, name);
      this.db.deleteApp(name);
      this.logs.forget(name);
      rmSync(join(paths.paasGit(), `${name}.git`), { recursive: true, force: true });
      rmSync(join(paths.slugs(), name), { recursive: true, force: true });
      rmSync(join(paths.appCache(), name), { recursive: true, force: true });
      forgetIdentity("app", name);
    });
  }
}
