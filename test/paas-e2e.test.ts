/**
 * The PaaS end to end through the real app builds (src/build/app.ts and the built-in
 * language plugins): a node app with a real npm dependency by git push, another by tarball, a
 * python app and a static site, all answering through the router.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type RunningServer, startServer } from "../src/server/serve.ts";
import { paths } from "../src/store/paths.ts";
import {
  api,
  appCopy,
  createApp,
  deployDir,
  gitRemote,
  removeAppCopies,
  textVia,
} from "./fixtures/paas/helpers.ts";
import { type JailEnv, makeJailEnv } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

let env: JailEnv;
let s: RunningServer;

beforeAll(async () => {
  if (!isRoot()) return;
  process.env.LJ_SUBNET = "10.240.0.0/24";
  env = await makeJailEnv();
  s = await startServer({ healthTimeoutMs: 15_000, keepReleases: 2 });
});

afterAll(async () => {
  removeAppCopies();
  if (!isRoot()) return;
  await s?.stop();
  env?.cleanup();
});

describe("real builds", () => {
  rootTest(
    "a node app with an npm dependency by git push; a redeploy with unchanged dependencies hits the cache",
    async () => {
      await createApp(s, "nodedeps");
      const dir = appCopy("node-deps");
      const git = await gitRemote(s, "nodedeps", dir);
      const push = await git("push", "lj", "main");
      expect(push.stderr).toContain("remote: detected language/node");
      expect(push.stderr).toContain("remote: =====> deploy");
      expect(push.code).toBe(0);
      expect(await textVia(s, "nodedeps")).toEqual({ status: 200, text: "node with ms: 2m (v1)\n" });
      writeFileSync(join(dir, "README"), "a change that is not a dependency\n");
      await git("add", "-A");
      await git("commit", "-qm", "second");
      const t0 = performance.now();
      const again = await git("push", "lj", "main");
      const ms = performance.now() - t0;
      expect(again.code).toBe(0);
      expect(again.stderr).toMatch(/remote: cache hit/);
      expect(await textVia(s, "nodedeps")).toEqual({ status: 200, text: "node with ms: 2m (v2)\n" });
      expect(ms).toBeLessThan(5000);
      // A config change makes v3 with v2's slug; with 2 releases kept, v1 and its slug go.
      await api(s, "PATCH", "/apps/nodedeps/config", { GREETING: "hi" });
      const rels = await api<{ releases: { version: number; slug: { id: string } }[] }>(
        s,
        "GET",
        "/apps/nodedeps/releases",
      );
      expect(rels.releases.map((r) => r.version)).toEqual([3, 2]);
      const slugDir = join(paths.slugs(), "nodedeps");
      expect(readdirSync(slugDir).sort()).toEqual(
        [
          rels.releases[0]!.slug.id,
          `${rels.releases[0]!.slug.id}.json`,
          `${rels.releases[0]!.slug.id}.log`,
        ].sort(),
      );
    },
    180_000,
  );

  rootTest(
    "a node app by tarball and a python app answer through the router",
    async () => {
      await createApp(s, "nodetar");
      const n = await deployDir(s, "nodetar", appCopy("node-hello"));
      expect(n.log).toContain("succeeded");
      expect(await textVia(s, "nodetar")).toEqual({ status: 200, text: "hello from node web.1 v1\n" });
      await createApp(s, "pyapp");
      const p = await deployDir(s, "pyapp", appCopy("py-hello"));
      expect(p.log).toContain("detected language/python");
      expect(p.log).toContain("succeeded");
      expect(await textVia(s, "pyapp")).toEqual({ status: 200, text: "hello from python web.1\n" });
    },
    180_000,
  );

  rootTest(
    "a static site built by the static plugin answers through the router",
    async () => {
      await createApp(s, "site");
      const st = await deployDir(s, "site", appCopy("static-plain"));
      expect(st.log).toContain("detected language/static");
      expect(st.log).toContain("succeeded");
      const page = await textVia(s, "site", "/");
      expect(page.status).toBe(200);
      expect(page.text).toContain("a static site, built by the static plugin");
    },
    180_000,
  );

  rootTest(
    "an app's lj.toml [limits] reach its processes; the operator's formation comes first",
    async () => {
      await createApp(s, "limited");
      const dir = appCopy("node-hello", { "lj.toml": "[limits]\nmemory_mb = 200\npids = 77\ncpus = 0.5\n" });
      expect((await deployDir(s, "limited", dir)).deploy?.status).toBe("succeeded");
      const rel = s.paas.releases.list("limited")[0]!;
      expect(rel.slug.limits).toEqual({ memoryMb: 200, pids: 77, cpus: 0.5 });
      const spec = () => s.paas.specs.processSpec("limited", rel, "web", "web.1").limits;
      expect(spec()).toEqual({ memoryBytes: 200 * 1048576, pids: 77, cpus: 0.5 });
      await api(s, "PATCH", "/apps/limited/formation", { web: { memoryMb: 300 } });
      expect(spec()).toEqual({ memoryBytes: 300 * 1048576, pids: 77, cpus: 0.5 });
    },
    180_000,
  );
});
