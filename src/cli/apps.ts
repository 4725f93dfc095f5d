import { defineCommand } from "citty";
import { usageError } from "../errors.ts";
import { appAndRest, client, clientArgs, out, printJson, table } from "./client.ts";
import { confirmArg, confirmName } from "./confirm.ts";
import { selfCommand } from "./login.ts";
import { inGitCheckout } from "./servers.ts";

const name = { type: "positional", required: true, description: "app name" } as const;

interface App {
  name: string;
  createdAt: string;
  currentRelease: number | null;
  config: Record<string, string>;
  formation: Record<string, { count: number }>;
}

const create = defineCommand({
  meta: {
    name: "create",
    description: "Create an app; in a git checkout, add the `lj` remote (pushes use `lj git-credential`)",
  },
  args: { ...clientArgs, name },
  async run({ args }) {
    const c = client(args);
    const r = await c.json<{ app: App; git: string; url: string }>("POST", "/api/v1/apps", {
      name: args.name,
    });
    // The URL this client reaches the server by, which the server itself cannot know.
    const git = `${c.remote}/git/${r.app.name}.git`;
    const remote = inGitCheckout() ? addRemote(git, c.remote) : undefined;
    if (args.json) return printJson({ ...r, git, remote: remote ?? null });
    out(`created ${r.app.name}`);
    if (remote === "added") out("  git remote: lj (git push lj main deploys)");
    else if (remote === "kept")
      out(`  git remote: lj already exists here; to use this app: git remote set-url lj ${git}`);
    else out(`  git remote: git remote add lj ${git}`);
    out(`  url:        ${r.url}`);
  },
});

/**
 * Adds the `lj` remote to the checkout around the working directory and makes this lj the
 * credential helper for the server, so the token stays out of the remote's URL.
 */
function addRemote(git: string, server: string): "added" | "kept" {
  const run = (...argv: string[]) => Bun.spawnSync(["git", ...argv], { stdout: "ignore", stderr: "pipe" });
  if (run("remote", "get-url", "lj").exitCode === 0) return "kept";
  const add = run("remote", "add", "lj", git);
  if (add.exitCode !== 0) throw usageError(`git remote add lj failed: ${add.stderr.toString().trim()}`);
  run("config", `credential.${server}.helper`, "");
  run("config", "--add", `credential.${server}.helper`, `!${selfCommand()} git-credential`);
  return "added";
}

const list = defineCommand({
  meta: { name: "list", description: "List apps" },
  args: { ...clientArgs },
  async run({ args }) {
    const r = await client(args).json<{ apps: App[] }>("GET", "/api/v1/apps");
    if (args.json) return printJson(r);
    if (r.apps.length === 0) return out("no apps yet: lj apps create NAME");
    table([
      ["NAME", "RELEASE", "CREATED"],
      ...r.apps.map((a) => [a.name, a.currentRelease ? `v${a.currentRelease}` : "-", a.createdAt]),
    ]);
  },
});

const info = defineCommand({
  meta: { name: "info", description: "Show an app: release, processes, services" },
  args: { ...clientArgs, name: { ...name, required: false } },
  async run({ args }) {
    const { app: appName } = appAndRest(args._ as string[]);
    const r = await client(args).json<{
      app: App & { processes: { name: string; state: string }[]; services: string[] };
      url: string;
      git: string;
    }>("GET", `/api/v1/apps/${appName}`);
    if (args.json) return printJson(r);
    const a = r.app;
    out(`${a.name}`);
    out(`  release:   ${a.currentRelease ? `v${a.currentRelease}` : "none"}`);
    out(`  url:       ${r.url}`);
    out(`  git:       ${r.git}`);
    out(
      `  formation: ${
        Object.entries(a.formation)
          .map(([t, f]) => `${t}=${f.count}`)
          .join(" ") || "-"
      }`,
    );
    out(`  processes: ${a.processes.map((p) => `${p.name} ${p.state}`).join(", ") || "none"}`);
    out(`  services:  ${a.services.join(", ") || "none"}`);
    out(`  config:    ${Object.keys(a.config).join(", ") || "none"}`);
  },
});

const destroy = defineCommand({
  meta: { name: "destroy", description: "Destroy an app: processes, releases, config, repository" },
  args: { ...clientArgs, name, ...confirmArg },
  async run({ args }) {
    await confirmName("app", args.name, args.confirm, "its processes, releases, config, logs and repository");
    const r = await client(args).json("DELETE", `/api/v1/apps/${args.name}`);
    if (args.json) return printJson(r);
    out(`destroyed ${args.name}`);
  },
});

export const appsCommand = defineCommand({
  meta: { name: "apps", description: "Create, list, inspect and destroy apps" },
  subCommands: { create, list, info, destroy },
});
