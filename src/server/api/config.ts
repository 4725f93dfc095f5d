/** An app's config variables (docs/api.md, "Config"). */
import { Hono } from "hono";
import { LjError } from "../../errors.ts";
import { type ApiOptions, type Env, jsonLimit, readJson } from "./http.ts";

export function configRoutes(o: ApiOptions): Hono<Env> {
  const { paas } = o;
  const r = new Hono<Env>();
  r.get("/apps/:app/config", (c) => c.json({ config: paas.config.get(c.req.param("app")) }));
  r.patch("/apps/:app/config", jsonLimit, async (c) => {
    const changes = await readJson<Record<string, string | null>>(c);
    if (typeof changes !== "object" || changes === null || Array.isArray(changes)) {
      throw new LjError("usage", "bad-request", 'body must be {"KEY": "value" or null, ...}');
    }
    const { release } = await paas.config.set(c.req.param("app"), changes);
    return c.json({ config: paas.config.get(c.req.param("app")), release });
  });
  return r;
}
