/**
 * Recipes from elsewhere: `URL[//SUBDIR]` git repositories (cloned shallowly into scratch
 * space) and local directories (a plugin folder or a Jailfile). Either becomes a PluginInfo
 * whose store key follows the seed layout.
 */
import { existsSync, statSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { basename, dirname, join, relative, resolve } from "node:path";
import { LjError } from "../errors.ts";
import { loadJailfile } from "../plugins/jailfile.ts";
import { loadPluginDir, type PluginInfo, sourceKey, splitUrl } from "../plugins/registry.ts";
import type { OverlayMeta } from "../store/overlays.ts";
import { paths } from "../store/paths.ts";
import { removeTree } from "../store/tree.ts";

export const looksLikeUrl = (s: string) =>
  /^[a-z][a-z0-9+.-]*:\/\//i.test(s) || /^[^/:\s]+@[^/:\s]+:/.test(s);

const REMOTE_COMMANDS = new Set(["clone", "fetch", "ls-remote"]);

/** Runs git without a terminal to prompt on; its trimmed stdout, or an error with its stderr. */
export async function git(args: string[], cwd?: string): Promise<string> {
  const p = Bun.spawn(["git", ...args], {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, GIT_TERMINAL_PROMPT: "0" },
  });
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  if (code !== 0) {
    throw new LjError(
      "unavailable",
      "git-failed",
      `git ${args[0]} failed: ${err.trim().split("\n").slice(-3).join("; ")}`,
      REMOTE_COMMANDS.has(args[0] ?? "")
        ? { hint: "check the URL and that the repository is reachable" }
        : {},
    );
  }
  return out.trim();
}

export interface Fetched {
  plugin: PluginInfo;
  source: OverlayMeta["source"];
  cleanup(): Promise<void>;
}

/** Clones URL (shallow) and loads the plugin in SUBDIR. */
export async function fetchGitPlugin(spec: string, type: string): Promise<Fetched> {
  const { url, subdir } = splitUrl(spec);
  const storeKey = sourceKey(url, subdir);
  await fsp.mkdir(paths.buildTmp(), { recursive: true });
  const tmp = await fsp.mkdtemp(join(paths.buildTmp(), "git-"));
  const cleanup = () => removeTree(tmp).catch(() => {});
  try {
    await git(["clone", "--quiet", "--depth", "1", "--", url, join(tmp, "repo")]);
    const commit = await git(["rev-parse", "HEAD"], join(tmp, "repo"));
    const dir = join(tmp, "repo", subdir ?? "");
    if (!existsSync(dir) || !statSync(dir).isDirectory()) {
      throw new LjError("not-found", "subdir-not-found", `${url} has no directory ${subdir}`);
    }
    const manifest = loadPluginDir(dir, type);
    const source = { url, ...(subdir ? { subdir } : {}), commit };
    return {
      plugin: { manifest, origin: "user", dir, storeKey, source },
      source: { kind: "git", ...source },
      cleanup,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/**
 * A local recipe: a plugin directory, or a Jailfile. Stored under the git remote of the
 * repository it is in (seed rule: ljbuild uses the structure automatically), else `_local/...`.
 */
export async function localPlugin(pathArg: string, type?: string): Promise<Fetched> {
  const p = resolve(pathArg);
  let dir = p;
  let manifest: PluginInfo["manifest"];
  if (existsSync(p) && statSync(p).isFile()) {
    dir = dirname(p);
    manifest = basename(p) === "plugin.toml" ? loadPluginDir(dir, type) : loadJailfile(p, { type });
  } else if (existsSync(p)) {
    manifest = loadPluginDir(dir, type);
  } else {
    throw new LjError("not-found", "recipe-not-found", `${p} does not exist`, {
      hint: "give a plugin directory, a Jailfile, a plugin name or a git URL",
    });
  }
  if (type !== undefined && manifest.type !== type) {
    throw new LjError(
      "config",
      "manifest-type-mismatch",
      `${manifest.file}: key "type": expected "${type}" (from --type), got "${manifest.type}"`,
    );
  }
  let storeKey = sourceKey(dir);
  let source: OverlayMeta["source"] = { kind: "local", path: dir };
  try {
    const top = await git(["rev-parse", "--show-toplevel"], dir);
    const remote = await git(["remote", "get-url", "origin"], dir);
    const sub = relative(top, dir);
    storeKey = sourceKey(remote, sub || undefined);
    source = {
      kind: "git",
      url: remote,
      ...(sub ? { subdir: sub } : {}),
      commit: await git(["rev-parse", "HEAD"], dir),
      path: dir,
    };
  } catch {
    // not in a git repository with an origin: _local/<path>
  }
  return {
    plugin: { manifest, origin: "user", dir, storeKey },
    source,
    cleanup: async () => {},
  };
}
