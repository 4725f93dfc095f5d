import { defineCommand } from "citty";
import { client, clientArgs, out, printJson, table } from "./client.ts";
import { confirmArg, confirmName } from "./confirm.ts";

interface Service {
  name: string;
  type: string;
  state: string;
  restarts: number;
  lastExit: string | null;
  address: string | null;
  port: number;
  links: string[];
  env: Record<string, string>;
}

const name = { type: "positional", required: true, description: "service name" } as const;

const create = defineCommand({
  meta: { name: "create", description: "Create a service: lj services create postgres NAME" },
  args: {
    ...clientArgs,
    type: { type: "positional", required: true, description: "postgres or redis" },
    name,
  },
  async run({ args }) {
    const r = await client(args).json<{ service: Service }>("POST", "/api/v1/services", {
      type: args.type,
      name: args.name,
    });
    if (args.json) return printJson(r);
    out(
      `created ${r.service.type} service ${r.service.name} (${r.service.state} at ${r.service.address}:${r.service.port})`,
    );
  },
});

const list = defineCommand({
  meta: { name: "list", description: "List services" },
  args: { ...clientArgs },
  async run({ args }) {
    const r = await client(args).json<{ services: Service[] }>("GET", "/api/v1/services");
    if (args.json) return printJson(r);
    if (r.services.length === 0) return out("no services");
    table([
      ["NAME", "TYPE", "STATE", "LINKED TO"],
      ...r.services.map((s) => [s.name, s.type, s.state, s.links.join(", ") || "-"]),
    ]);
  },
});

const info = defineCommand({
  meta: { name: "info", description: "Show a service, with the environment it gives linked apps" },
  args: { ...clientArgs, name },
  async run({ args }) {
    const r = await client(args).json<{ service: Service }>("GET", `/api/v1/services/${args.name}`);
    if (args.json) return printJson(r);
    const s = r.service;
    out(`${s.name} (${s.type}): ${s.state}${s.address ? ` at ${s.address}:${s.port}` : ""}`);
    out(`  linked to: ${s.links.join(", ") || "none"}`);
    if (s.restarts > 0) out(`  restarts: ${s.restarts} (last: ${s.lastExit ?? "?"})`);
    for (const [k, v] of Object.entries(s.env)) out(`  ${k}=${v}`);
  },
});

const link = defineCommand({
  meta: { name: "link", description: "Link a service to an app (sets its URL variable, restarts the app)" },
  args: { ...clientArgs, name, app: { type: "positional", required: true, description: "app name" } },
  async run({ args }) {
    const r = await client(args).json("POST", `/api/v1/services/${args.name}/links`, { app: args.app });
    if (args.json) return printJson(r);
    out(`linked ${args.name} to ${args.app}`);
  },
});

const unlink = defineCommand({
  meta: { name: "unlink", description: "Unlink a service from an app" },
  args: { ...clientArgs, name, app: { type: "positional", required: true, description: "app name" } },
  async run({ args }) {
    const r = await client(args).json("DELETE", `/api/v1/services/${args.name}/links/${args.app}`);
    if (args.json) return printJson(r);
    out(`unlinked ${args.name} from ${args.app}`);
  },
});

const destroy = defineCommand({
  meta: {
    name: "destroy",
    description: "Destroy a service and its data (refused while linked, unless --force)",
  },
  args: {
    ...clientArgs,
    name,
    ...confirmArg,
    force: { type: "boolean", description: "unlink it from its apps first (they restart without it)" },
  },
  async run({ args }) {
    await confirmName("service", args.name, args.confirm, "its data, and its links to apps");
    const q = args.force ? "?force=1" : "";
    const r = await client(args).json("DELETE", `/api/v1/services/${args.name}${q}`);
    if (args.json) return printJson(r);
    out(`destroyed ${args.name}`);
  },
});

export const servicesCommand = defineCommand({
  meta: { name: "services", description: "Backing services (postgres, redis) and their links to apps" },
  subCommands: { create, list, info, link, unlink, destroy },
});
