import { defineCommand } from "citty";
import { usageError } from "../errors.ts";
import { client, clientArgs, out, printJson } from "./client.ts";

export const rollbackCommand = defineCommand({
  meta: { name: "rollback", description: "Roll back to a kept release (no rebuild): lj rollback APP vN" },
  args: {
    ...clientArgs,
    app: { type: "positional", required: true, description: "app name" },
    version: { type: "positional", required: true, description: "release, e.g. v3" },
  },
  async run({ args }) {
    const v = Number(String(args.version).replace(/^v/, ""));
    if (!Number.isInteger(v) || v <= 0) throw usageError(`"${args.version}" is not a release like v3`);
    const r = await client(args).json<{ release: { version: number } }>(
      "POST",
      `/api/v1/apps/${args.app}/rollback`,
      { version: v },
    );
    if (args.json) return printJson(r);
    out(`rolled back ${args.app} to v${v}: now release v${r.release.version}`);
  },
});
