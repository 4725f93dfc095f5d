import { defineCommand } from "citty";
import { client, clientArgs, out, printJson, table } from "./client.ts";
import { confirmArg, confirmName } from "./confirm.ts";

const name = { type: "positional", required: true, description: "app name" } as const;

interface App {
  name: string;
  createdAt: string;
  currentRelease: number | null;
  config: Record<string, string>;
  formation: Record<string, { count: number }>;
}

const create = defineCommand({
  meta: { name: "create", description: "Create an app" },
  args: { ...clientArgs, name },
  async run({ args }) {
    const r = await client(args).json<{ app: App; git: string; url: string }>("POST", "/api/v1/apps", {
      name: args.name,
    });
    if (args.json) return printJson(r);
    out(`created ${r.app.name}`);
    out(`  git remote: git remote add lj ${r.git}`);
    out(`  url:        ${r.url}`);
  },
});

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
  args: { ...clientArgs, name },
  async run({ args }) {
    const r = await client(args).json<{
      app: App & { processes: { name: string; state: string }[]; services: string[] };
      url: string;
      git: string;
    }>("GET", `/api/v1/apps/${args.name}`);
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
