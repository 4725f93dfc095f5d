import { defineCommand } from "citty";
import { buildApp } from "../build/app.ts";
import { buildTarget, progress } from "./build-common.ts";

/** `lj build --type TYPE NAME|URL[//SUBDIR]|DIR|Jailfile`: build an overlay. */
export const buildCommand = defineCommand({
  meta: {
    name: "build",
    description: "Build an overlay: a plugin by name, a git URL[//SUBDIR], a plugin directory or a Jailfile",
  },
  args: {
    target: {
      type: "positional",
      required: true,
      description: "NAME, TYPE/NAME, URL[//SUBDIR], DIR or Jailfile",
    },
    type: { type: "string", description: "Overlay type (language, service, tool, ...)" },
    world: {
      type: "string",
      description: "World to build over (default: the recipe's, else the default world)",
    },
    force: { type: "boolean", description: "Rebuild even if an identical or same-version build exists" },
    json: { type: "boolean", description: "Print the overlay's metadata as JSON" },
    quiet: { type: "boolean", description: "Do not stream the build log" },
  },
  async run({ args }) {
    await buildTarget(args.target, args);
  },
});

/** `lj build-app DIR --app NAME`: build an app through its overlay chain into a slug. */
export const buildAppCommand = defineCommand({
  meta: { name: "build-app", description: "Build an app directory into an immutable slug" },
  args: {
    dir: { type: "positional", required: true, description: "App source directory" },
    app: { type: "string", description: "App name (default: the directory's name)" },
    world: { type: "string", description: "World (default: lj.toml's, else the default world)" },
    force: { type: "boolean", description: "Ignore the dependency cache" },
    json: { type: "boolean", description: "Print the slug as JSON" },
  },
  async run({ args }) {
    const { basename, resolve } = await import("node:path");
    const dir = resolve(args.dir);
    const app =
      args.app ??
      basename(dir)
        .toLowerCase()
        .replace(/[^a-z0-9-]+/g, "-")
        .replace(/^-+|-+$/g, "");
    const slug = await buildApp(dir, {
      app,
      log: progress,
      force: args.force === true,
      ...(args.world ? { world: args.world } : {}),
    });
    if (args.json) process.stdout.write(`${JSON.stringify(slug, null, 2)}\n`);
    else process.stdout.write(`${slug.id}\n`);
  },
});
