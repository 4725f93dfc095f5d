/** Custom domains of an app and their certificates (docs/api.md, "Domains"). */
import { Hono } from "hono";
import { LjError } from "../../errors.ts";
import { type ApiOptions, type Env, jsonLimit, readJson } from "./http.ts";

export function domainRoutes(o: ApiOptions): Hono<Env> {
  const r = new Hono<Env>();
  const domains = () => {
    if (!o.domains)
      throw new LjError("unavailable", "no-domains", "custom domains are not enabled on this server");
    return o.domains;
  };
  const info = (d: { domain: string; app: string; createdAt: string }) => {
    const cert = o.certs?.get(d.domain);
    return { ...d, certificate: cert ? { notAfter: new Date(cert.notAfter).toISOString() } : null };
  };

  r.get("/apps/:app/domains", (c) => {
    o.paas.db.app(c.req.param("app"));
    return c.json({ domains: domains().list(c.req.param("app")).map(info) });
  });
  r.post("/apps/:app/domains", jsonLimit, async (c) => {
    const { domain } = await readJson<{ domain?: unknown }>(c);
    const row = domains().add(c.req.param("app"), domain);
    // Answered once the edge routes the name (nginx reloads first).
    await o.paas.edgeSynced();
    return c.json({ domain: info(row) }, 201);
  });
  r.delete("/apps/:app/domains/:domain", async (c) => {
    domains().remove(c.req.param("app"), c.req.param("domain"));
    await o.paas.edgeSynced();
    return c.json({ deleted: c.req.param("domain") });
  });
  return r;
}
