/**
 * An app's processes (docs/api.md, "Processes" and "One-off processes"): the formation and
 * what runs, scaling, restarts, and one-off commands (NDJSON, or a WebSocket: run-socket.ts).
 */
import { Hono } from "hono";
import { LjError } from "../../errors.ts";
import type { FormationChange } from "../../paas/formation.ts";
import { upgradeRun } from "../run-socket.ts";
import {
  type ApiOptions,
  type Env,
  FrameQueue,
  jsonLimit,
  noIdleTimeout,
  readJson,
  streamed,
} from "./http.ts";

export function processRoutes(o: ApiOptions): Hono<Env> {
  const { paas } = o;
  const r = new Hono<Env>();
  r.get("/apps/:app/ps", async (c) => {
    const name = c.req.param("app");
    // What ps calls up, the edge routes to (nginx may be applying the change).
    await paas.edgeSynced();
    return c.json({ formation: paas.db.app(name).formation, processes: paas.formation.ps(name) });
  });
  r.patch("/apps/:app/formation", jsonLimit, async (c) => {
    const body = await readJson<unknown>(c);
    if (typeof body !== "object" || body === null || Array.isArray(body))
      throw new LjError("usage", "bad-formation", 'the body must be an object like {"web": 2}');
    // Each value is checked by the formation (field, type and range) before anything is stored.
    const changes: Record<string, FormationChange> = {};
    for (const [k, v] of Object.entries(body)) changes[k] = typeof v === "number" ? { count: v } : v;
    const processes = await paas.formation.scale(c.req.param("app"), changes);
    return c.json({ formation: paas.db.app(c.req.param("app")).formation, processes });
  });
  r.post("/apps/:app/restart", async (c) =>
    c.json({ processes: await paas.formation.restart(c.req.param("app")) }),
  );

  // One-off processes: NDJSON frames {"out":...} / {"err":...}, then {"exit":N,...}.
  r.post("/apps/:app/run", jsonLimit, async (c) => {
    const { command } = await readJson<{ command?: string }>(c);
    if (typeof command !== "string" || !command)
      throw new LjError("usage", "bad-request", 'body must be {"command": "..."}');
    noIdleTimeout(c);
    const jail = paas.runs.once(c.req.param("app"), command);
    const queue = new FrameQueue();
    const pump = async (s: ReadableStream<Uint8Array> | null, key: string) => {
      if (!s) return;
      const dec = new TextDecoder();
      for await (const chunk of s)
        queue.push(`${JSON.stringify({ [key]: dec.decode(chunk, { stream: true }) })}\n`);
    };
    void Promise.all([pump(jail.stdout, "out"), pump(jail.stderr, "err"), jail.exited]).then(([, , res]) => {
      queue.push(
        `${JSON.stringify({ exit: res.status, reason: res.reason, ...(res.error ? { error: res.error } : {}) })}\n`,
      );
      queue.end();
    });
    return streamed(queue, { "content-type": "application/x-ndjson" }, () => jail.kill("SIGKILL"));
  });
  // Interactive one-off processes: a WebSocket.
  r.get("/apps/:app/run", (c) => {
    noIdleTimeout(c);
    return upgradeRun(paas.runs, c.env?.server, c.req.raw, c.req.param("app"));
  });
  return r;
}
