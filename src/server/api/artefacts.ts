/**
 * Release artefacts for Kubernetes nodes (docs/cluster.md, "Release images"), under /node/v1:
 * a release's manifest and its blobs by digest (src/cluster/artefacts.ts). These routes take
 * the node token alone - made on first use, stored 0600 beside the API token, printed by
 * `lj node token` - which may read artefacts and nothing else; the API token is not accepted
 * here, nor the node token anywhere else.
 */
import { join } from "node:path";
import { Hono } from "hono";
import { ReleaseArtefacts } from "../../cluster/artefacts.ts";
import { LjError } from "../../errors.ts";
import { NAME_RE } from "../../store/names.ts";
import { paths } from "../../store/paths.ts";
import { loadOrCreateToken, presentedToken, tokenMatches } from "../auth.ts";
import type { ApiOptions, Env } from "./http.ts";

export const nodeTokenFile = () => join(paths.paas(), "node-token");

export function artefactRoutes(o: ApiOptions): Hono<Env> {
  const token = loadOrCreateToken(nodeTokenFile()).token;
  const artefacts = new ReleaseArtefacts((app, v) => o.paas.formation.releaseOf(app, v));
  const r = new Hono<Env>();
  r.use("*", async (c, next) => {
    const presented = presentedToken(c.req.header("authorization"));
    if (!tokenMatches(presented, token)) {
      c.header("www-authenticate", 'Bearer realm="lightjail-node"');
      throw new LjError(
        "permission",
        presented === null ? "auth-required" : "bad-token",
        presented === null ? "release artefacts need the node token" : "the node token is wrong",
        { httpStatus: 401, hint: "`lj node token` on the lj serve machine prints it" },
      );
    }
    await next();
  });
  r.get("/releases/:app/:version", async (c) => {
    const app = c.req.param("app");
    const m = /^v([1-9]\d{0,8})$/.exec(c.req.param("version"));
    if (!NAME_RE.test(app) || !m)
      throw new LjError("usage", "bad-release", "releases are named /releases/APP/vN");
    return c.json(await artefacts.manifest(app, Number(m[1])));
  });
  r.get("/blobs/:digest", (c) => {
    const b = artefacts.blob(c.req.param("digest"));
    return new Response(Bun.file(b.file), {
      headers: { "content-type": "application/gzip", "content-length": String(b.size) },
    });
  });
  return r;
}
