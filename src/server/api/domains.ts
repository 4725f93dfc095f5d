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
    return c.json({ domain: info(domains().add(c.req.param("app"), domain)) }, 201);
  });
  r.delete("/apps/:app/domains/:domain", (c) => {
    domains().remove(c.req.param("app"), c.req.param("domain"));
    return c.json({ deleted: c.req.param("domain") });
  });
  return r;
}
