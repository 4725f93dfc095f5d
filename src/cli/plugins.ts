import { existsSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { join, resolve } from "node:path";
import { defineCommand } from "citty";
import { git } from "../build/git.ts";
import { LjError } from "../errors.ts";
import {
  discover,
  findPlugin,
  loadPluginDir,
  parseTarget,
  SOURCE_FILE,
  splitUrl,
} from "../plugins/registry.ts";
import { scaffold } from "../plugins/scaffold.ts";
import { paths } from "../store/paths.ts";
import { removeTree } from "../store/tree.ts";

const out = (t: string) => process.stdout.write(`${t}\n`);
const err = (t: string) => process.stderr.write(`${t}\n`);

const list = defineCommand({
  meta: { name: "list", description: "List plugins (built-in and installed), by type" },
  args: {
    json: { type: "boolean", description: "Print JSON" },
    type: { type: "string", description: "Only this type" },
  },
  run({ args }) {
    const d = discover();
    const ps = d.plugins.filter((p) => !args.type || p.manifest.type === args.type);
    if (args.json) {
      return out(
        JSON.stringify(
          {
            types: d.types,
            plugins: ps.map((p) => ({
              name: p.manifest.name,
              type: p.manifest.type,
              version: p.manifest.version,
              description: p.manifest.description,
              origin: p.origin,
              dir: p.dir,
              storeKey: p.storeKey,
            })),
            problems: d.problems.map((x) => ({ dir: x.dir, error: x.error.message })),
          },
          null,
          2,
        ),
      );
    }
    const rows = [["TYPE", "NAME", "VERSION", "ORIGIN", "DESCRIPTION"]];
    for (const p of ps)
      rows.push([p.manifest.type, p.manifest.name, p.manifest.version, p.origin, p.manifest.description]);
    const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
    out(
      rows
        .map((r) =>
          r
            .map((c, i) => c.padEnd(w[i] ?? 0))
            .join("  ")
            .trimEnd(),
        )
        .join("\n"),
    );
    for (const x of d.problems) err(`broken plugin ${x.dir}: ${x.error.message}`);
  },
});

const info = defineCommand({
  meta: { name: "info", description: "Show a plugin's manifest, hooks and where its overlays are stored" },
  args: {
    name: { type: "positional", required: true, description: "NAME or TYPE/NAME" },
    type: { type: "string", description: "Plugin type" },
  },
  run({ args }) {
    const p = findPlugin(discover(), {
      ...parseTarget(args.name),
      ...(args.type ? { type: args.type } : {}),
    });
    const { file, dir, ...m } = p.manifest;
    out(
      JSON.stringify(
        {
          ...m,
          origin: p.origin,
          dir,
          manifest: file,
          store: join(paths.overlayType(m.type), p.storeKey),
          source: p.source ?? null,
        },
        null,
        2,
      ),
    );
  },
});

const create = defineCommand({
  meta: { name: "new", description: "Scaffold a working plugin (with a test app for languages)" },
  args: {
    name: { type: "positional", required: true, description: "Plugin name" },
    type: {
      type: "string",
      required: true,
      description: "Type: language, service, or a new one (tool, ...)",
    },
    dir: { type: "string", description: "Create it here instead of $LIGHTJAIL_ROOT/plugins/<type>s/<name>" },
  },
  async run({ args }) {
    const dir = args.dir ? resolve(args.dir) : join(paths.plugins(), `${args.type}s`, args.name);
    await fsp.mkdir(join(dir, ".."), { recursive: true });
    const files = await scaffold(dir, args.type, args.name);
    err(`created ${args.type} plugin ${args.name} in ${dir}:`);
    for (const f of files) err(`  ${f}`);
    out(dir);
  },
});

const add = defineCommand({
  meta: { name: "add", description: "Install a plugin from a git repository: URL[//SUBDIR]" },
  args: {
    url: { type: "positional", required: true, description: "URL[//SUBDIR]" },
    force: { type: "boolean", description: "Replace an installed plugin of the same name" },
  },
  async run({ args }) {
    const { url, subdir } = splitUrl(args.url);
    await fsp.mkdir(paths.buildTmp(), { recursive: true });
    const tmp = await fsp.mkdtemp(join(paths.buildTmp(), "add-"));
    try {
      await git(["clone", "--quiet", "--depth", "1", "--", url, join(tmp, "repo")]);
      const commit = await git(["rev-parse", "HEAD"], join(tmp, "repo"));
      const src = join(tmp, "repo", subdir ?? "");
      if (!existsSync(src))
        throw new LjError("not-found", "subdir-not-found", `${url} has no directory ${subdir}`);
      const m = loadPluginDir(src);
      const dst = join(paths.plugins(), `${m.type}s`, m.name);
      if (existsSync(dst) && !args.force) {
        throw new LjError(
          "conflict",
          "plugin-exists",
          `plugin ${m.type}/${m.name} is already installed (${dst})`,
          { hint: "pass --force to replace it" },
        );
      }
      await fsp.rm(join(src, ".git"), { recursive: true, force: true });
      await fsp.writeFile(
        join(src, SOURCE_FILE),
        `${JSON.stringify({ url, ...(subdir ? { subdir } : {}), commit }, null, 2)}\n`,
      );
      await fsp.mkdir(join(dst, ".."), { recursive: true });
      const staged = `${dst}.tmp-${process.pid}`;
      await fsp.cp(src, staged, { recursive: true, verbatimSymlinks: true });
      loadPluginDir(staged, m.type);
      if (existsSync(dst)) await removeTree(dst);
      await fsp.rename(staged, dst);
      err(
        `installed ${m.type}/${m.name}@${m.version} from ${url}${subdir ? `//${subdir}` : ""} (${commit.slice(0, 12)})`,
      );
      out(dst);
    } finally {
      await removeTree(tmp).catch(() => {});
    }
  },
});

export const pluginsCommand = defineCommand({
  meta: { name: "plugins", description: "Overlay plugins: list, info, new, add" },
  subCommands: { list, info, new: create, add },
});
