import { defineCommand } from "citty";
import { client, clientArgs, out, printJson, table } from "./client.ts";

interface Domain {
  domain: string;
  app: string;
  createdAt: string;
  certificate: { notAfter: string } | null;
}

const app = { type: "positional", required: true, description: "app name" } as const;
const domain = {
  type: "positional",
  required: true,
  description: "domain name, e.g. www.example.com",
} as const;

const add = defineCommand({
  meta: {
    name: "add",
    description: "Serve an app at a domain too (HTTPS follows once a certificate is issued)",
  },
  args: { ...clientArgs, app, domain },
  async run({ args }) {
    const r = await client(args).json<{ domain: Domain }>("POST", `/api/v1/apps/${args.app}/domains`, {
      domain: args.domain,
    });
    if (args.json) return printJson(r);
    out(`${r.domain.domain} now routes to ${r.domain.app}`);
    out("  point its DNS (A/AAAA) at this server; with lj serve --acme-email a certificate follows");
  },
});

const remove = defineCommand({
  meta: { name: "remove", description: "Stop serving an app at a domain" },
  args: { ...clientArgs, app, domain },
  async run({ args }) {
    const r = await client(args).json<{ deleted: string }>(
      "DELETE",
      `/api/v1/apps/${args.app}/domains/${encodeURIComponent(args.domain)}`,
    );
    if (args.json) return printJson(r);
    out(`removed ${r.deleted} from ${args.app}`);
  },
});

const list = defineCommand({
  meta: { name: "list", description: "List an app's domains and their certificates" },
  args: { ...clientArgs, app },
  async run({ args }) {
    const r = await client(args).json<{ domains: Domain[] }>("GET", `/api/v1/apps/${args.app}/domains`);
    if (args.json) return printJson(r);
    if (r.domains.length === 0) return out(`${args.app} has no custom domains`);
    table([
      ["DOMAIN", "CERTIFICATE"],
      ...r.domains.map((d) => [
        d.domain,
        d.certificate ? `valid until ${d.certificate.notAfter}` : "none yet",
      ]),
    ]);
  },
});

export const domainsCommand = defineCommand({
  meta: { name: "domains", description: "Custom domains of an app: add, remove, list" },
  subCommands: { add, remove, list },
});
