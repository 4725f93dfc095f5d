/** Apps: list, create, show, destroy (docs/api.md, "Apps"). */
import { Hono } from "hono";
import { LjError } from "../../errors.ts";
import { type ApiOptions, type Env, jsonLimit, readJson } from "./http.ts";

export function appRoutes(o: ApiOptions): Hono<Env> {
  const { paas } = o;
  const r = new Hono<Env>();
  const git = (name: string) => `${o.selfUrl()}/git/${name}.git`;
  /** Where the router answers for an app: the domain, on the port this server listens on. */
  const url = (name: string) => {
    const port = new URL(o.selfUrl()).port;
    return `http://${name}.${o.domain}${port && port !== "80" ? `:${port}` : ""}`;
  };

  r.get("/apps", (c) => c.json({ apps: paas.apps.list() }));
  r.post("/apps", jsonLimit, async (c) => {
    const { name } = await readJson<{ name?: string }>(c);
    if (typeof name !== "string") throw new LjError("usage", "bad-request", 'body must be {"name": "APP"}');
    const app = paas.apps.create(name);
    return c.json({ app, git: git(name), url: url(name) }, 201);
  });
  r.get("/apps/:app", (c) => {
    const name = c.req.param("app");
    return c.json({ app: paas.apps.info(name), url: url(name), git: git(name) });
  });
  r.delete("/apps/:app", async (c) => {
    const name = c.req.param("app");
    await paas.apps.destroy(name);
    o.domains?.refresh();
    // Answered once the edge no longer routes the app.
    await paas.edgeSynced();
    return c.json({ deleted: name });
  });
  return r;
}
