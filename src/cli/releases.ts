import { defineCommand } from "citty";
import { appAndRest, client, clientArgs, printJson, table } from "./client.ts";

export const releasesCommand = defineCommand({
  meta: { name: "releases", description: "List an app's kept releases" },
  args: {
    ...clientArgs,
    app: { type: "positional", required: false, description: "app name (default: the lj git remote's)" },
  },
  async run({ args }) {
    const { app } = appAndRest(args._ as string[]);
    const r = await client(args).json<{
      releases: {
        version: number;
        current: boolean;
        description: string;
        createdAt: string;
        slug: { id: string };
      }[];
    }>("GET", `/api/v1/apps/${app}/releases`);
    if (args.json) return printJson(r);
    table([
      ["", "VERSION", "CREATED", "SLUG", "DESCRIPTION"],
      ...r.releases.map((x) => [
        x.current ? "*" : "",
        `v${x.version}`,
        x.createdAt,
        x.slug.id,
        x.description,
      ]),
    ]);
  },
});
