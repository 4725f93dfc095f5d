import { defineCommand } from "citty";
import { usageError } from "../errors.ts";
import { client, clientArgs, out, printJson } from "./client.ts";

const app = { type: "positional", required: true, description: "app name" } as const;

async function patch(
  args: { remote?: string; json?: boolean; app: string },
  changes: Record<string, string | null>,
) {
  const r = await client(args).json<{ release: number | null }>(
    "PATCH",
    `/api/v1/apps/${args.app}/config`,
    changes,
  );
  if (args.json) return printJson(r);
  out(r.release ? `config updated: release v${r.release}` : "config updated (no release yet)");
}

const set = defineCommand({
  meta: { name: "set", description: "Set variables: lj config set APP KEY=VALUE ..." },
  args: { ...clientArgs, app },
  async run({ args }) {
    const pairs = (args._ as string[]).slice(1);
    if (pairs.length === 0) throw usageError("give at least one KEY=VALUE");
    const changes: Record<string, string> = {};
    for (const p of pairs) {
      const eq = p.indexOf("=");
      if (eq <= 0) throw usageError(`"${p}" is not KEY=VALUE`);
      changes[p.slice(0, eq)] = p.slice(eq + 1);
    }
    await patch(args, changes);
  },
});

const unset = defineCommand({
  meta: { name: "unset", description: "Remove variables: lj config unset APP KEY ..." },
  args: { ...clientArgs, app },
  async run({ args }) {
    const keys = (args._ as string[]).slice(1);
    if (keys.length === 0) throw usageError("give at least one KEY");
    await patch(args, Object.fromEntries(keys.map((k) => [k, null])));
  },
});

const get = defineCommand({
  meta: { name: "get", description: "Show variables: lj config get APP [KEY]" },
  args: { ...clientArgs, app, key: { type: "positional", required: false, description: "one variable" } },
  async run({ args }) {
    const r = await client(args).json<{ config: Record<string, string> }>(
      "GET",
      `/api/v1/apps/${args.app}/config`,
    );
    if (args.key) {
      const v = r.config[args.key];
      if (v === undefined) throw usageError(`${args.key} is not set`);
      return args.json ? printJson({ [args.key]: v }) : out(v);
    }
    if (args.json) return printJson(r.config);
    for (const [k, v] of Object.entries(r.config)) out(`${k}=${v}`);
  },
});

export const configCommand = defineCommand({
  meta: { name: "config", description: "App configuration variables (each change makes a release)" },
  subCommands: { set, unset, get },
});
