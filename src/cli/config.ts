import { defineCommand } from "citty";
import { usageError } from "../errors.ts";
import { appAndRest, client, clientArgs, out, printJson } from "./client.ts";

const app = {
  type: "positional",
  required: false,
  description: "app name (default: the lj git remote's)",
} as const;

async function patch(
  args: { remote?: string; json?: boolean },
  name: string,
  changes: Record<string, string | null>,
) {
  const r = await client(args).json<{ release: number | null }>(
    "PATCH",
    `/api/v1/apps/${name}/config`,
    changes,
  );
  if (args.json) return printJson(r);
  out(r.release ? `config updated: release v${r.release}` : "config updated (no release yet)");
}

const set = defineCommand({
  meta: { name: "set", description: "Set variables: lj config set [APP] KEY=VALUE ..." },
  args: { ...clientArgs, app },
  async run({ args }) {
    const { app: name, rest: pairs } = appAndRest(args._ as string[], (w) => w.includes("="));
    if (pairs.length === 0) throw usageError("give at least one KEY=VALUE");
    const changes: Record<string, string> = {};
    for (const p of pairs) {
      const eq = p.indexOf("=");
      if (eq <= 0) throw usageError(`"${p}" is not KEY=VALUE`);
      changes[p.slice(0, eq)] = p.slice(eq + 1);
    }
    await patch(args, name, changes);
  },
});

const unset = defineCommand({
  meta: { name: "unset", description: "Remove variables: lj config unset [APP] KEY ..." },
  args: { ...clientArgs, app },
  async run({ args }) {
    const { app: name, rest: keys } = appAndRest(args._ as string[], () => false, 1);
    if (keys.length === 0) throw usageError("give at least one KEY");
    await patch(args, name, Object.fromEntries(keys.map((k) => [k, null])));
  },
});

const get = defineCommand({
  meta: { name: "get", description: "List variables, or show one: lj config [get] [APP] [KEY]" },
  args: { ...clientArgs, app, key: { type: "positional", required: false, description: "one variable" } },
  async run({ args }) {
    const { app: name, rest } = appAndRest(args._ as string[]);
    const key = rest[0];
    const r = await client(args).json<{ config: Record<string, string> }>(
      "GET",
      `/api/v1/apps/${name}/config`,
    );
    if (key) {
      const v = r.config[key];
      if (v === undefined) throw usageError(`${key} is not set`);
      return args.json ? printJson({ [key]: v }) : out(v);
    }
    if (args.json) return printJson(r.config);
    for (const [k, v] of Object.entries(r.config)) out(`${k}=${v}`);
  },
});

export const configCommand = defineCommand({
  meta: {
    name: "config",
    description: "App configuration variables: `lj config [APP]` lists them; each change makes a release",
  },
  subCommands: { set, unset, get },
});
