/**
 * docs/plugins.md's example plugin, extracted from the guide (every fenced block preceded by
 * `<!-- file: PATH -->`), installed as a user plugin, built, planned, built into an app
 * and run: the guide cannot drift from what works.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Slug } from "../src/build/types.ts";
import { freePort, runSlug, waitForHttp } from "./build-helpers.ts";
import { type JailEnv, lj, makeJailEnv, projectDir } from "./helpers/jail-env.ts";
import { rootTest } from "./helpers/root.ts";

let env: JailEnv;
beforeAll(async () => {
  if (process.getuid?.() === 0) env = await makeJailEnv();
});
afterAll(() => env?.cleanup());

export function guideFiles(md: string): Record<string, string> {
  const files: Record<string, string> = {};
  const re = /<!-- file: (\S+) -->\n```[a-z]*\n([\s\S]*?)```/g;
  for (const m of md.matchAll(re)) files[m[1]!] = m[2]!;
  return files;
}

rootTest("the guide's example plugin builds, plans, builds an app and answers HTTP", async () => {
  const files = guideFiles(readFileSync(join(projectDir, "docs/plugins.md"), "utf8"));
  expect(Object.keys(files).sort()).toEqual([
    "build.sh",
    "index.ts",
    "install.sh",
    "plugin.toml",
    "server.pl",
    "test/app/hello.lock",
    "test/app/hello.txt",
  ]);
  const dir = join(env.root, "plugins", "languages", "hello");
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(join(dir, rel, ".."), { recursive: true });
    writeFileSync(join(dir, rel), text);
  }
  const E = { LIGHTJAIL_ROOT: env.root };
  const info = await lj(["plugins", "info", "hello"], E);
  expect(info.code).toBe(0);
  const b = await lj(["build", "--type", "language", "hello"], E);
  expect(b.stderr).toContain("installed hello 1.0.0");
  expect(b.code).toBe(0);
  expect((await lj(["build", "--type", "language", "hello"], E)).stderr).toContain("cache hit");
  const plan = await lj(["plan", join(dir, "test/app"), "--json"], E);
  expect(plan.code).toBe(0);
  const p = JSON.parse(plan.stdout);
  expect(p.detected[0]).toEqual({
    plugin: "hello",
    type: "language",
    reasons: ["hello.txt present", "hello.txt is not empty"],
  });
  expect(p.env).toEqual({ HELLO_PREFIX: "say:", HELLO_LINES: "1" });
  const built = await lj(["build-app", join(dir, "test/app"), "--app", "hello-test", "--json"], E);
  expect(built.code).toBe(0);
  const slug = JSON.parse(built.stdout) as Slug;
  const port = await freePort();
  const jail = runSlug(slug, "web", port);
  try {
    const res = await waitForHttp(`http://127.0.0.1:${port}/`);
    expect(await res.text()).toBe("say: HELLO, WORLD\n");
  } finally {
    jail.kill("SIGKILL");
    await jail.closed;
  }
});
