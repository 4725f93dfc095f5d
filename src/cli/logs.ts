import { defineCommand } from "citty";
import { isLjError } from "../errors.ts";
import { appAndRest, type Client, client, clientArgs, failure, pipeToStdout } from "./client.ts";

export const logsCommand = defineCommand({
  meta: { name: "logs", description: "Show an app's logs (processes, router, platform); -f follows" },
  args: {
    ...clientArgs,
    app: { type: "positional", required: false, description: "app name (default: the lj git remote's)" },
    follow: {
      type: "boolean",
      alias: "f",
      description: "keep streaming new lines (through server restarts)",
    },
    lines: { type: "string", alias: "n", description: "lines of history", default: "100" },
  },
  async run({ args }) {
    const { app } = appAndRest(args._ as string[]);
    const c = client(args);
    const path = (lines: string) =>
      `/api/v1/apps/${app}/logs?${new URLSearchParams({
        lines,
        ...(args.follow ? { follow: "1" } : {}),
        ...(args.json ? { format: "json" } : {}),
      })}`;
    if (!args.follow) {
      const res = await c.request("GET", path(args.lines));
      if (!res.ok) throw await failure(res);
      return pipeToStdout(res);
    }
    await follow(c, path, args.lines);
  },
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Follows until interrupted. A server that goes away (restarted, upgraded) is waited for and
 * followed again from its new lines; only errors the server answers (no such app, a wrong
 * token) end the command.
 */
async function follow(c: Client, path: (lines: string) => string, lines: string): Promise<void> {
  let first = true;
  for (;;) {
    let res: Response | undefined;
    try {
      res = await c.request("GET", path(first ? lines : "0"));
    } catch (e) {
      if (!isLjError(e) || e.code !== "no-server" || first) throw e;
    }
    if (res && !res.ok) throw await failure(res);
    if (res) {
      if (!first) process.stderr.write("lj logs: reconnected\n");
      first = false;
      try {
        await pipeToStdout(res);
      } catch {}
      process.stderr.write(`lj logs: the server went away; reconnecting to ${c.remote} ...\n`);
    }
    await sleep(1000);
  }
}
