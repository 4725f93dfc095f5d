/** An app's releases and rollbacks (docs/api.md, "Releases"). */
import { Hono } from "hono";
import { LjError } from "../../errors.ts";
import { type ApiOptions, type Env, jsonLimit, readJson } from "./http.ts";

export function releaseRoutes(o: ApiOptions): Hono<Env> {
  const { paas } = o;
  const r = new Hono<Env>();
  r.get("/apps/:app/releases", (c) => {
    const cur = paas.db.app(c.req.param("app")).currentRelease;
    const releases = paas.releases.list(c.req.param("app")).map(({ slug, ...rel }) => ({
      ...rel,
      current: rel.version === cur,
      slug: {
        id: slug.id,
        sizeBytes: slug.sizeBytes,
        overlays: slug.overlays.map((x) => `${x.name}@${x.version}`),
      },
    }));
    return c.json({ releases });
  });
  r.post("/apps/:app/rollback", jsonLimit, async (c) => {
    const { version } = await readJson<{ version?: number | string }>(c);
    const v = typeof version === "string" ? Number(version.replace(/^v/, "")) : version;
    if (!v || !Number.isInteger(v)) throw new LjError("usage", "bad-version", 'body must be {"version": N}');
    const { slug, ...rel } = await paas.releases.rollback(c.req.param("app"), v);
    return c.json({ release: { ...rel, slug: { id: slug.id } } });
  });
  return r;
}
