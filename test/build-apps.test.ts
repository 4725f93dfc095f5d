/**
 * Real sample apps through the overlay chain over a host world (node, python and perl from
 * the host's /usr): each is built into a slug, run the way the PaaS runs it, and answers HTTP.
 * Rebuilds with an unchanged lockfile hit the dependency cache, and the log says why.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { buildApp } from "../src/build/app.ts";
import type { Slug } from "../src/build/types.ts";
import { freePort, runSlug, waitForHttp } from "./build-helpers.ts";
import { type JailEnv, lj, makeJailEnv, projectDir } from "./helpers/jail-env.ts";
import { rootTest } from "./helpers/root.ts";

let env: JailEnv;
const apps = join(projectDir, "test/fixtures/apps");

beforeAll(async () => {
  if (process.getuid?.() === 0) env = await makeJailEnv();
});
afterAll(() => env?.cleanup());

async function serve(slug: Slug, expectText: RegExp) {
  const port = await freePort();
  const jail = runSlug(slug, "web", port);
  try {
    const res = await waitForHttp(`http://127.0.0.1:${port}/`);
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(expectText);
  } finally {
    jail.kill("SIGKILL");
    await jail.closed;
  }
}

rootTest(
  "node: npm installs a real registry dependency; an unchanged lockfile is a cache hit",
  async () => {
    const lines: string[] = [];
    const slug = await buildApp(join(apps, "node-ms"), { app: "node-ms", log: (l) => lines.push(l) });
    expect(lines.join("\n")).toContain(
      "cache miss: no earlier build of this app to reuse (package-lock.json",
    );
    expect(slug.path).toBe(join(env.root, "slugs", "node-ms", slug.id));
    expect(readdirSync(slug.path)).toEqual(["app"]);
    expect(existsSync(join(slug.path, "app/node_modules/ms/package.json"))).toBe(true);
    expect(slug.processes.web).toEqual({ command: "node server.js" });
    expect(slug.overlays.map((o) => o.name)).toEqual(["node"]);
    expect(slug.cwd).toBe("/app");
    expect(readFileSync(join(env.root, "slugs", "node-ms", `${slug.id}.log`), "utf8")).toContain(
      "added 1 package",
    );
    await serve(slug, /2 days = 172800000 ms/);

    const again: string[] = [];
    const t0 = performance.now();
    const slug2 = await buildApp(join(apps, "node-ms"), { app: "node-ms", log: (l) => again.push(l) });
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(again.join("\n")).toMatch(
      /cache hit: package-lock.json unchanged since the build of .* \(sha256 [0-9a-f]{12}\)/,
    );
    expect(again.join("\n")).toContain("node_modules restored from the cache: install skipped");
    expect(slug2.id).not.toBe(slug.id);
    expect(existsSync(join(slug.path, "app/server.js"))).toBe(true); // the first slug is untouched
    await serve(slug2, /172800000/);
    const forced: string[] = [];
    await buildApp(join(apps, "node-ms"), { app: "node-ms", log: (l) => forced.push(l), force: true });
    expect(forced.join("\n")).toContain("cache skipped: --force");
  },
  120_000,
);

rootTest(
  "python: a venv with a real PyPI dependency",
  async () => {
    const slug = await buildApp(join(apps, "python-six"), { app: "python-six" });
    expect(existsSync(join(slug.path, "app/.venv/bin/python"))).toBe(true);
    expect(slug.processes.web).toEqual({ command: "python app.py" });
    expect(slug.env.VIRTUAL_ENV).toBe("/app/.venv");
    await serve(slug, /python with six 1\.16\.0/);
  },
  120_000,
);

rootTest(
  "static: a site served by the plugin's small server; build-app from the CLI",
  async () => {
    const r = await lj(["build-app", join(apps, "static-site"), "--app", "site", "--json"], {
      LIGHTJAIL_ROOT: env.root,
    });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("detected language/static (public/index.html present)");
    const slug = JSON.parse(r.stdout) as Slug;
    await serve(slug, /static site served by lightjail/);
    const port = await freePort();
    const jail = runSlug(slug, "web", port);
    try {
      const css = await waitForHttp(`http://127.0.0.1:${port}/style.css`);
      expect(css.headers.get("content-type")).toBe("text/css");
      expect((await fetch(`http://127.0.0.1:${port}/../../etc/passwd`)).status).not.toBe(200);
      expect((await fetch(`http://127.0.0.1:${port}/missing`)).status).toBe(404);
    } finally {
      jail.kill("SIGKILL");
      await jail.closed;
    }
  },
  60_000,
);

rootTest("a failing app build publishes no slug", async () => {
  const dir = join(env.root, "broken-app");
  await Bun.write(join(dir, "package.json"), '{"name":"b","version":"1.0.0","scripts":{"build":"exit 7"}}');
  const r = await lj(["build-app", dir, "--app", "broken"], { LIGHTJAIL_ROOT: env.root });
  expect(r.code).toBe(70);
  expect(r.stderr).toContain(
    "building broken with node: the build script exited with status 7; no slug was published",
  );
  expect(readdirSync(join(env.root, "slugs", "broken"))).toEqual([]);
});

rootTest(
  "node: a TypeScript app builds with its dev dependencies, which the slug then leaves out",
  async () => {
    const lines: string[] = [];
    const slug = await buildApp(join(apps, "node-ts"), { app: "node-ts", log: (l) => lines.push(l) });
    expect(existsSync(join(slug.path, "app/dist/server.js"))).toBe(true);
    // tsc ran from the dev dependency, which was pruned afterwards.
    expect(lines.join("\n")).toContain("> tsc -p .");
    expect(existsSync(join(slug.path, "app/node_modules/typescript"))).toBe(false);
    await serve(slug, /hello from typescript/);
  },
  180_000,
);

rootTest(
  "node: engines.node picks the Node.js release, installed as its own overlay; one the registry lacks fails clearly",
  async () => {
    const lines: string[] = [];
    const slug = await buildApp(join(apps, "node-22"), { app: "node-22", log: (l) => lines.push(l) });
    const node = slug.overlays.find((o) => o.name === "node");
    expect(node?.version).toMatch(/^1\.0\.0\+22\.\d+\.\d+$/);
    expect(lines.join("\n")).toMatch(/language\/node@1\.0\.0\+22\.\d+\.\d+: published/);
    await serve(slug, /^node v22\.\d+\.\d+$/m);
    const dir = join(env.root, "node-99");
    await Bun.write(join(dir, "package.json"), '{"name":"n","version":"1.0.0","engines":{"node":"99"}}');
    await Bun.write(join(dir, "server.js"), "");
    const r = await lj(["build-app", dir, "--app", "node-99"], { LIGHTJAIL_ROOT: env.root });
    expect(r.code).toBe(69);
    expect(r.stderr).toMatch(
      /package\.json engines\.node asks for node "99": no Node\.js release matches; offered: 18, 19, 20, 21, 22, /,
    );
  },
  300_000,
);

rootTest("python: a version the world does not have fails the build, naming the one it offers", async () => {
  const dir = join(env.root, "py-old");
  await Bun.write(join(dir, "requirements.txt"), "");
  await Bun.write(join(dir, "app.py"), "print(1)\n");
  await Bun.write(join(dir, "runtime.txt"), "python-2.7.18\n");
  const r = await lj(["build-app", dir, "--app", "py-old"], { LIGHTJAIL_ROOT: env.root });
  expect(r.code).toBe(70);
  expect(r.stderr).toMatch(/the app asks for Python 2\.7\.18; this world offers Python 3\.\d+\.\d+ only/);
});

rootTest(
  "ruby on the host world: apt installs it into the overlay (the host's /usr and package database untouched), and a Ruby app answers",
  async () => {
    const hostRuby = existsSync("/usr/bin/ruby");
    const r = await lj(["build", "--type", "language", "ruby", "--world", "test"], {
      LIGHTJAIL_ROOT: env.root,
    });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/\[ruby \d+:\d\d\] ruby 3\.\d/);
    const layer = r.stdout.trim();
    expect(existsSync(join(layer, "usr/bin/ruby")) || hostRuby).toBe(true);
    // The host is as it was: the packages went into the overlay's own /usr and dpkg database.
    expect(existsSync("/usr/bin/ruby")).toBe(hostRuby);
    const slug = await buildApp(join(apps, "ruby-plain"), { app: "ruby-plain" });
    await serve(slug, /^ruby 3\.\d+\.\d+ says hello/);
  },
  300_000,
);
