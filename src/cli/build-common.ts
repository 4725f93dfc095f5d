/**
 * Shared by `lj build` and `ljbuild`: resolve what to build (a plugin name, a git URL, a
 * local plugin directory or Jailfile), build it, print the layer path (or JSON).
 */
import { existsSync } from "node:fs";
import { fetchGitPlugin, localPlugin, looksLikeUrl } from "../build/git.ts";
import { type BuiltOverlay, ensureOverlay } from "../build/overlays.ts";
import { discover, findPlugin, parseTarget } from "../plugins/registry.ts";

export const progress = (line: string) => process.stderr.write(`${line}\n`);

export async function buildTarget(
  target: string,
  opts: { type?: string; world?: string; force?: boolean; json?: boolean; quiet?: boolean },
): Promise<BuiltOverlay> {
  const log = opts.quiet ? undefined : progress;
  const d = discover();
  let fetched: Awaited<ReturnType<typeof fetchGitPlugin>> | undefined;
  if (looksLikeUrl(target)) fetched = await fetchGitPlugin(target, opts.type ?? "language");
  else if (target.includes("/") && existsSync(target)) fetched = await localPlugin(target, opts.type);
  else if (target === "." || target.endsWith("Jailfile")) fetched = await localPlugin(target, opts.type);
  try {
    const plugin =
      fetched?.plugin ?? findPlugin(d, { ...parseTarget(target), ...(opts.type ? { type: opts.type } : {}) });
    const built = await ensureOverlay(plugin, {
      ...(opts.world ? { world: opts.world } : {}),
      force: opts.force === true,
      ...(log ? { log } : {}),
      discovery: d,
      ...(fetched ? { source: fetched.source } : {}),
    });
    if (opts.json)
      process.stdout.write(
        `${JSON.stringify({ ...built.meta, path: built.path, dir: built.dir, cached: built.cached }, null, 2)}\n`,
      );
    else process.stdout.write(`${built.path}\n`);
    return built;
  } finally {
    await fetched?.cleanup();
  }
}
