/**
 * An app's config: environment variables its processes get. Changing it makes a new release of
 * the current slug (its release command runs again); before the first release it is stored.
 */
import { LjError } from "../errors.ts";
import type { PaasDb } from "./db.ts";
import type { AppLocks } from "./locks.ts";
import type { LogHub } from "./logs.ts";
import type { Releases } from "./releases.ts";

const KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class Config {
  constructor(
    private readonly db: PaasDb,
    private readonly locks: AppLocks,
    private readonly releases: Releases,
    private readonly logs: LogHub,
  ) {}

  get(app: string): Record<string, string> {
    return this.db.app(app).config;
  }

  /** Sets (string) and unsets (null) variables; returns the new release, if the app has one. */
  async set(app: string, changes: Record<string, string | null>): Promise<{ release: number | null }> {
    for (const [k, v] of Object.entries(changes)) {
      if (!KEY.test(k)) {
        throw new LjError("usage", "bad-config-key", `invalid config variable name ${JSON.stringify(k)}`);
      }
      if (v !== null && typeof v !== "string") {
        throw new LjError("usage", "bad-config-value", `value of ${k} must be a string or null`);
      }
    }
    return this.locks.run(app, async () => {
      const config = { ...this.db.app(app).config };
      for (const [k, v] of Object.entries(changes)) {
        if (v === null) delete config[k];
        else config[k] = v;
      }
      const cur = this.db.currentRelease(app);
      if (!cur) {
        this.db.setConfig(app, config);
        return { release: null };
      }
      const rel = await this.releases.roll(
        app,
        cur.slug,
        config,
        `config change: ${Object.keys(changes).join(", ")}`,
        (l) => this.logs.write(app, "lj", l),
        { releasePhase: true },
      );
      return { release: rel.version };
    });
  }
}
