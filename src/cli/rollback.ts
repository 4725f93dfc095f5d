import { defineCommand } from "citty";
import { usageError } from "../errors.ts";
import { appAndRest, client, clientArgs, out, printJson } from "./client.ts";

const isVersion = (w: string) => /^v?\d+$/.test(w);

export const rollbackCommand = defineCommand({
  meta: {
    name: "rollback",
    description:
      "Roll back to a kept release (no rebuild): lj rollback [APP] [vN] (default: the previous one)",
  },
  args: {
    ...clientArgs,
    app: { type: "positional", required: false, description: "app name (default: the lj git remote's)" },
    version: { type: "positional", required: false, description: "release, e.g. v3 (default: the previous)" },
  },
  async run({ args }) {
    const { app, rest } = appAndRest(args._ as string[], isVersion);
    if (rest.length > 1) throw usageError(`unexpected "${rest[1]}"`, "lj rollback [APP] [vN]");
    const c = client(args);
    let v: number;
    if (rest[0] !== undefined) {
      v = Number(rest[0].replace(/^v/, ""));
      if (!isVersion(rest[0]) || v <= 0) throw usageError(`"${rest[0]}" is not a release like v3`);
    } else {
      v = await previousRelease(c, app);
    }
    const r = await c.json<{ release: { version: number } }>("POST", `/api/v1/apps/${app}/rollback`, {
      version: v,
    });
    if (args.json) return printJson(r);
    out(`rolled back ${app} to v${v}: now release v${r.release.version}`);
  },
});

/** The kept release just below the current one. */
async function previousRelease(c: ReturnType<typeof client>, app: string): Promise<number> {
  const { releases } = await c.json<{ releases: { version: number; current: boolean }[] }>(
    "GET",
    `/api/v1/apps/${app}/releases`,
  );
  const current = releases.find((r) => r.current)?.version;
  const below = releases
    .map((r) => r.version)
    .filter((n) => current === undefined || n < current)
    .sort((a, b) => b - a);
  if (current === undefined || below[0] === undefined)
    throw usageError(
      `${app} has no release before ${current ? `v${current}` : "its first"} to roll back to`,
      "`lj releases` lists the kept ones",
    );
  return below[0];
}
