/**
 * Deploys (docs/api.md, "Deploys"): a source upload starts one, its log streams back; past
 * deploys and their logs. The upload's size is capped here; everything after the bytes
 * arrive (extraction, build, roll-out) is the PaaS's (src/paas/deploys.ts).
 */
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { LjError } from "../../errors.ts";
import type { DeployRun } from "../../paas/deploy-run.ts";
import {
  type ApiOptions,
  DEFAULT_MAX_UPLOAD,
  type Env,
  noIdleTimeout,
  streamed,
  textHeaders,
} from "./http.ts";

/** A deploy's log as it is written, to its end. */
function followLog(run: DeployRun, headers: Record<string, string> = {}): Response {
  const lines = (async function* () {
    for await (const l of run.follow()) yield `${l}\n`;
  })();
  return streamed(lines, { ...textHeaders, ...headers });
}

export function deployRoutes(o: ApiOptions): Hono<Env> {
  const { paas } = o;
  const max = o.maxUploadBytes ?? DEFAULT_MAX_UPLOAD;
  const r = new Hono<Env>();

  /** An unknown app is answered before its upload is read; uploads take as long as they take. */
  const knownApp: MiddlewareHandler<Env> = async (c, next) => {
    paas.db.app(c.req.param("app") ?? "");
    noIdleTimeout(c);
    await next();
  };
  /**
   * A declared length over the cap is refused before the body is read; a chunked upload once
   * it passes the cap. Either way the app's log says so.
   */
  const uploadLimit = bodyLimit({
    maxSize: max,
    onError: (c) => {
      const app = c.req.param("app") ?? "";
      const len = c.req.header("content-length");
      const size = len && !c.req.header("transfer-encoding") ? ` (${len} bytes)` : "";
      paas.logs.write(app, "lj", `upload refused: it exceeds the ${max}-byte limit`);
      throw new LjError("invalid", "upload-too-large", `the upload${size} exceeds ${max} bytes`, {
        httpStatus: 413,
        hint: "leave build artefacts and dependencies out (.gitignore), or raise --max-upload",
      });
    },
  });

  r.put("/apps/:app/source", knownApp, uploadLimit, async (c) => {
    const body = c.req.raw.body;
    if (!body) throw new LjError("usage", "no-body", "send the tar or tar.gz archive as the request body");
    const run = await paas.deploys.start(c.req.param("app"), body, c.req.query("source") ?? "tarball");
    if (c.req.query("wait") === "json") {
      const row = await run.done;
      return c.json({ deploy: { ...row, log: run.lines } }, row.status === "succeeded" ? 200 : 422);
    }
    return followLog(run, { "x-deploy-id": String(run.id) });
  });
  r.get("/apps/:app/deploys", (c) => c.json({ deploys: paas.deploys.list(c.req.param("app")) }));
  r.get("/deploys/:id", (c) => c.json(paas.deploys.info(Number(c.req.param("id")))));
  r.get("/deploys/:id/log", (c) => {
    const id = Number(c.req.param("id"));
    const run = paas.deploys.live(id);
    if (!run || c.req.query("follow") !== "1") {
      return c.text(`${paas.deploys.info(id).log.join("\n")}\n`, 200, textHeaders);
    }
    noIdleTimeout(c);
    return followLog(run);
  });
  return r;
}
