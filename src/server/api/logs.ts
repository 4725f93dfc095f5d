/** An app's logs: the latest lines, or those and then every new one (docs/api.md, "Logs"). */
import { Hono } from "hono";
import { formatLogLine, type LogLine } from "../../paas/logs.ts";
import { type ApiOptions, type Env, FrameQueue, noIdleTimeout, streamed, textHeaders } from "./http.ts";

const MAX_LINES = 2000;

export function logRoutes(o: ApiOptions): Hono<Env> {
  const { paas } = o;
  const r = new Hono<Env>();
  r.get("/apps/:app/logs", (c) => {
    const name = c.req.param("app");
    paas.db.app(name);
    const n = Math.min(Number(c.req.query("lines") ?? "100") || 100, MAX_LINES);
    const json = c.req.query("format") === "json";
    const fmt = (l: LogLine) => (json ? `${JSON.stringify(l)}\n` : `${formatLogLine(l)}\n`);
    const past = paas.logs.tail(name, n).map(fmt);
    if (c.req.query("follow") !== "1") return c.text(past.join(""), 200, textHeaders);
    noIdleTimeout(c);
    const queue = new FrameQueue(past);
    const stop = paas.logs.follow(name, (l) => queue.push(fmt(l)));
    return streamed(queue, textHeaders, stop);
  });
  return r;
}
