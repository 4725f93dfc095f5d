/**
 * The public SDK for plugin hooks. A plugin's optional index.ts default-exports
 * `definePlugin({...})`; each hook receives a context object and returns plain data, so a
 * plugin needs nothing from lightjail's internals (no database, no jails, no FFI).
 *
 *   import { definePlugin } from "lightjail/plugin";
 *   export default definePlugin({
 *     detect(app) { return app.exists("mix.exs") ? { reasons: ["mix.exs present"] } : null; },
 *     plan(app, plan) { plan.processes.web ??= { command: "mix phx.server" }; return plan; },
 *   });
 */

export interface AppContext {
  /** Absolute path of the app's source directory on the host (read it, never write). */
  dir: string;
  exists(rel: string): boolean;
  /** File content as text, or null when it does not exist. */
  read(rel: string): string | null;
  /** JSON file content, or null when missing or not valid JSON. */
  readJson<T = unknown>(rel: string): T | null;
  /** App-relative paths matching a glob (e.g. "*.gemspec", "**\/*.py"), at most 1000. */
  glob(pattern: string): string[];
  /** Settings from the app's lj.toml (its [plugin.NAME] table, when present). */
  settings: Record<string, unknown>;
}

export interface DetectResult {
  /** Why the plugin matched ("package.json present"); shown by `lj plan`. */
  reasons: string[];
  /** Overrides the manifest's detect.priority. */
  priority?: number;
}

/** A runtime version an app asks for (`engines.node`, `.nvmrc`, `.python-version`...). */
export interface RuntimeRequest {
  /** A version or a semver range ("22", "22.x", ">=20 <23"). */
  constraint: string;
  /** Where the app said so, for messages ("package.json engines.node"). */
  from: string;
}

/**
 * What a plugin installs for a requested runtime version: its own overlay of the plugin
 * (`language/node@1.0.0+22.11.0`), built once and cached like any overlay.
 */
export interface RuntimeBuild {
  /** The exact version chosen. */
  version: string;
  /**
   * Files lightjail fetches on the host and verifies (an SRI `integrity`, e.g. sha512-...)
   * before the install script runs; they appear read-only at /tmp/lj/files/NAME.
   */
  downloads?: { name: string; url: string; integrity: string }[];
  /** Extra environment for the install script (it also gets LJ_RUNTIME_VERSION). */
  env?: Record<string, string>;
}

/** The part of a plan a hook may change. */
export interface PlanDraft {
  build: { script: string; cacheDirs: string[]; env: Record<string, string>; net: "egress" | "none" };
  processes: Record<string, { command: string }>;
  env: Record<string, string>;
  /** Lockfiles that key the dependency cache (first that exist). */
  lockfiles: string[];
  /** The runtime version the app asked for and what was chosen, when it asked (see runtime). */
  runtime?: RuntimeRequest & { version: string };
}

export interface PluginHooks {
  /**
   * Decides whether the plugin applies to an app. Returns null to say no. When present it
   * replaces the manifest's [detect] rules; `manifestMatch` says what they found.
   */
  detect?(
    app: AppContext,
    manifestMatch: DetectResult | null,
  ): DetectResult | null | Promise<DetectResult | null>;
  /** Adjusts the build plan (processes, env, build env); return the draft (or nothing). */
  plan?(app: AppContext, draft: PlanDraft): PlanDraft | undefined | Promise<PlanDraft | undefined>;
  /**
   * Runtime versions: `request` reads what the app asks for (null: the world's own runtime);
   * `resolve` picks the exact version and what to fetch, or throws an Error whose message names
   * the versions it can offer. Runs on the host when the app is planned.
   */
  runtime?: {
    request(app: AppContext): RuntimeRequest | null;
    resolve(
      req: RuntimeRequest,
      ctx: { world: string; env: Record<string, string | undefined> },
    ): Promise<RuntimeBuild>;
  };
  /** Extra environment for the install script (computed, e.g. from the host or world). */
  installEnv?(ctx: {
    world: string;
    version: string;
  }): Record<string, string> | Promise<Record<string, string>>;
}

/** Identity at run time; gives plugin authors type checking and editor completion. */
export function definePlugin<T extends PluginHooks>(hooks: T): T {
  return hooks;
}
