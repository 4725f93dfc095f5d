/** Backing services and their links to apps (docs/api.md, "Services"). */
import { Hono } from "hono";
import { LjError } from "../../errors.ts";
import { type ApiOptions, type Env, jsonLimit, readJson } from "./http.ts";

export function serviceRoutes(o: ApiOptions): Hono<Env> {
  const r = new Hono<Env>();
  const services = () => {
    if (!o.services)
      throw new LjError("unavailable", "no-services", "services are not enabled on this server");
    return o.services;
  };
  r.get("/services", (c) => c.json({ services: services().list() }));
  r.post("/services", jsonLimit, async (c) => {
    const { type, name } = await readJson<{ type?: string; name?: string }>(c);
    if (typeof type !== "string" || typeof name !== "string") {
      throw new LjError("usage", "bad-request", 'body must be {"type": "postgres", "name": "NAME"}');
    }
    return c.json({ service: await services().create(type, name) }, 201);
  });
  r.get("/services/:name", (c) => c.json({ service: services().info(c.req.param("name")) }));
  r.delete("/services/:name", async (c) => {
    await services().destroy(c.req.param("name"), { force: c.req.query("force") === "1" });
    return c.json({ deleted: c.req.param("name") });
  });
  r.post("/services/:name/links", jsonLimit, async (c) => {
    const { app } = await readJson<{ app?: string }>(c);
    if (typeof app !== "string") throw new LjError("usage", "bad-request", 'body must be {"app": "APP"}');
    return c.json({ service: await services().link(c.req.param("name"), app) });
  });
  r.delete("/services/:name/links/:app", async (c) =>
    c.json({ service: await services().unlink(c.req.param("name"), c.req.param("app")) }),
  );
  return r;
}
