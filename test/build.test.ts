/**
 * Overlay builds in real jails over a host world: Jailfiles via ljbuild, git URLs served on
 * loopback, cache hits, immutability, failures that publish nothing, a build killed midway,
 * `lj plugins add` and `lj overlays list|show|rm|gc`.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runJail } from "../src/jail/spawn.ts";
import { gitServer } from "./build-helpers.ts";
import { type JailEnv, lj, makeJailEnv, projectDir } from "./helpers/jail-env.ts";
import { rootTest } from "./helpers/root.ts";

let env: JailEnv;
let git: Awaited<ReturnType<typeof gitServer>>;
const E = () => ({ LIGHTJAIL_ROOT: env.root });
const ljbuild = (args: string[], cwd?: string) => {
  const p = Bun.spawn([process.execPath, join(projectDir, "src/cli/ljbuild.ts"), ...args], {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...E() },
  });
  return Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]).then(
    ([code, stdout, stderr]) => ({ code, stdout, stderr }),
  );
};

beforeAll(async () => {
  if (process.getuid?.() !== 0) return;
  env = await makeJailEnv();
  mkdirSync(join(env.root, "git"), { recursive: true });
  git = await gitServer(join(env.root, "git"));
});
afterAll(() => {
  git?.stop();
  env?.cleanup();
});

function recipe(dir: string, text: string, extra: Record<string, string> = {}): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "Jailfile"), text);
  for (const [f, t] of Object.entries(extra)) {
    mkdirSync(join(dir, f, ".."), { recursive: true });
    writeFileSync(join(dir, f), t);
  }
  return dir;
}

rootTest(
  "ljbuild builds a Jailfile: copy, parents in order, metadata, log kept, no script left",
  async () => {
    const base = recipe(
      join(env.root, "src", "base"),
      "name base\nversion 1.0.0\ntype tool\n#!/bin/sh\nset -e\nmkdir -p /opt/base\necho base-1 > /opt/base/v\n",
    );
    const r1 = await ljbuild(["--world", "test"], base);
    expect(r1.stderr).toContain("tool/base@1.0.0: building over world test");
    expect(r1.code).toBe(0);
    const dir = recipe(
      join(env.root, "src", "hello"),
      "# the original lightjail recipe format\nname hello\nversion 1.0.0\ntype tool\nworld test\nfrom tool/base@^1\ncopy files/greeting /etc/greeting\n#!/bin/sh\nset -e\necho building hello\ncat /opt/base/v > /opt/seen-base\necho built > /opt/hello\n",
      { "files/greeting": "hi\n" },
    );
    // Parents resolve through installed plugins: install base as a user plugin.
    mkdirSync(join(env.root, "plugins", "tools"), { recursive: true });
    await Bun.$`cp -a ${base} ${join(env.root, "plugins", "tools", "base")}`;
    const r = await ljbuild(["Jailfile"], dir);
    expect(r.stderr).toContain("[hello 0:0");
    expect(r.code).toBe(0);
    const layer = r.stdout.trim();
    expect(layer).toBe(
      join(env.root, "tools", "_local", env.root.slice(1), "src", "hello", "@test", "1.0.0", "root"),
    );
    expect(readFileSync(join(layer, "opt/hello"), "utf8")).toBe("built\n");
    expect(readFileSync(join(layer, "opt/seen-base"), "utf8")).toBe("base-1\n");
    expect(readFileSync(join(layer, "etc/greeting"), "utf8")).toBe("hi\n");
    expect(existsSync(join(layer, "opt/base"))).toBe(false); // the parent's files stay in the parent
    expect(readdirSync(layer).sort()).toEqual(["etc", "opt"]); // no script, no /tmp, no mount points
    const meta = JSON.parse(readFileSync(join(layer, "..", "meta.json"), "utf8"));
    expect(meta).toMatchObject({
      name: "hello",
      type: "tool",
      overlayVersion: "1.0.0",
      world: "test",
      source: { kind: "local" },
    });
    expect(meta.parents).toEqual([expect.objectContaining({ type: "tool", name: "base", version: "1.0.0" })]);
    expect(meta.inputsHash).toMatch(/^[0-9a-f]{64}$/);
    expect(meta.sizeBytes).toBeGreaterThan(0);
    expect(readFileSync(join(layer, "..", "build.log"), "utf8")).toBe("building hello\n");
    // Cache hit, well under a second; --force rebuilds; changed inputs need a new version.
    const t0 = performance.now();
    const hit = await ljbuild(["Jailfile"], dir);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(hit.code).toBe(0);
    expect(hit.stderr).toContain("up to date (cache hit");
    const forced = await ljbuild(["--force", "Jailfile"], dir);
    expect(forced.code).toBe(0);
    expect(forced.stderr).toContain("published");
    writeFileSync(
      join(dir, "Jailfile"),
      readFileSync(join(dir, "Jailfile"), "utf8").replace("echo built", "echo changed"),
    );
    const conflict = await ljbuild(["Jailfile"], dir);
    expect(conflict.code).toBe(73);
    expect(conflict.stderr).toContain(
      "already built from other inputs (changed: recipe, settings); versions are immutable",
    );
  },
);

rootTest("a failing install script is a clear error and publishes nothing; a missing world too", async () => {
  const dir = recipe(
    join(env.root, "src", "fails"),
    "name fails\nversion 1.0.0\ntype tool\n#!/bin/sh\necho about to fail\nexit 3\n",
  );
  const r = await ljbuild(["--world", "test", join(dir, "Jailfile")]);
  expect(r.code).toBe(70);
  expect(r.stderr).toContain(
    "tool/fails@1.0.0: the install script exited with status 3; nothing was published",
  );
  expect(r.stderr).toContain("| about to fail");
  const base = join(env.root, "tools", "_local", env.root.slice(1), "src", "fails", "@test");
  expect(readdirSync(base)).toEqual([]);
  const w = await ljbuild(["--world", "nowhere", join(dir, "Jailfile")]);
  expect(w.code).toBe(66);
  expect(w.stderr).toContain('world "nowhere" does not exist');
  const missing = await ljbuild([join(env.root, "src", "none", "Jailfile")]);
  expect(missing.code).toBe(66);
});

rootTest("a build killed midway publishes nothing, and a retry works", async () => {
  const dir = recipe(
    join(env.root, "src", "slow"),
    "name slow\nversion 1.0.0\ntype tool\n#!/bin/sh\necho started\nsleep 2\necho done > /opt-done\n",
  );
  const p = Bun.spawn(
    [process.execPath, join(projectDir, "src/cli/ljbuild.ts"), "--world", "test", join(dir, "Jailfile")],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...E() },
    },
  );
  const reader = p.stderr.getReader();
  let seen = "";
  while (!seen.includes("started")) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += new TextDecoder().decode(value);
  }
  p.kill("SIGKILL");
  await p.exited;
  const base = join(env.root, "tools", "_local", env.root.slice(1), "src", "slow", "@test");
  expect(existsSync(join(base, "1.0.0"))).toBe(false);
  expect(readdirSync(base).filter((n) => n.startsWith(".tmp-")).length).toBe(1); // leftover, not published
  const retry = await ljbuild(["--world", "test", join(dir, "Jailfile")]);
  expect(retry.code).toBe(0);
  expect(readdirSync(base)).toEqual(["1.0.0"]); // the retry cleaned the dead build's leftovers
  expect(readFileSync(join(base, "1.0.0", "root", "opt-done"), "utf8")).toBe("done\n");
});

rootTest("lj build --type TYPE URL//SUBDIR clones over loopback and stores by repo URL", async () => {
  const url = await git.repo("recipes", {
    "overlays/greeter/plugin.toml":
      'name = "greeter"\ntype = "tool"\nversion = "0.2.0"\ndescription = "says hi"\n[install]\nscript = "install.sh"\nnet = "none"\n',
    "overlays/greeter/install.sh": "#!/bin/sh\nset -e\nmkdir -p /opt/greeter\necho hi > /opt/greeter/hi\n",
  });
  const r = await lj(["build", "--type", "tool", `${url}//overlays/greeter`, "--world", "test"], E());
  expect(r.stderr).toContain("tool/greeter@0.2.0: published");
  expect(r.code).toBe(0);
  const expected = join(
    env.root,
    "tools",
    `127.0.0.1:${git.port}`,
    "recipes",
    "overlays",
    "greeter",
    "@test",
    "0.2.0",
  );
  expect(r.stdout.trim()).toBe(join(expected, "root"));
  const meta = JSON.parse(readFileSync(join(expected, "meta.json"), "utf8"));
  expect(meta.source).toMatchObject({
    kind: "git",
    url,
    subdir: "overlays/greeter",
    commit: expect.stringMatching(/^[0-9a-f]{40}$/),
  });
  expect(readdirSync(join(env.root, "tmp", "build")).filter((n) => n.startsWith("git-"))).toEqual([]); // clone removed
  const bad = await lj(["build", "--type", "tool", `${url}//overlays/nope`, "--world", "test"], E());
  expect(bad.code).toBe(66);
  const unreachable = await lj(
    ["build", "--type", "tool", "http://127.0.0.1:1/none.git", "--world", "test"],
    E(),
  );
  expect(unreachable.code).toBe(69);

  // lj plugins add installs it as a user plugin; built by name it keeps the repo's store path.
  const add = await lj(["plugins", "add", `${url}//overlays/greeter`], E());
  expect(add.code).toBe(0);
  const info = JSON.parse((await lj(["plugins", "info", "tool/greeter"], E())).stdout);
  expect(info).toMatchObject({
    origin: "user",
    store: join(env.root, "tools", `127.0.0.1:${git.port}`, "recipes", "overlays", "greeter"),
  });
  const byName = await lj(["build", "tool/greeter", "--world", "test"], E());
  expect(byName.code).toBe(0);
  expect(byName.stderr).toContain("cache hit");
});

rootTest("lj overlays list, show, rm and gc", async () => {
  const list = await lj(["overlays", "list", "--json"], E());
  expect(list.code).toBe(0);
  const all = JSON.parse(list.stdout) as { name: string; overlayVersion: string }[];
  expect(all.map((o) => o.name)).toEqual(expect.arrayContaining(["base", "hello", "greeter", "slow"]));
  const show = await lj(["overlays", "show", "tool/hello@1.0.0"], E());
  expect(show.code).toBe(0);
  expect(JSON.parse(show.stdout).name).toBe("hello");
  const ambiguous = await lj(["overlays", "rm", "tool/base"], E());
  expect(ambiguous.code).toBe(64); // built from src/base (ljbuild) and as the user plugin
  const parent = JSON.parse(show.stdout).parents[0].path as string;
  const inUse = await lj(["overlays", "rm", parent], E());
  expect(inUse.code).toBe(73);
  expect(inUse.stderr).toContain("is used by overlay tool/hello@1.0.0");
  const rm = await lj(["overlays", "rm", "tool/slow"], E());
  expect(rm.code).toBe(0);
  const dry = await lj(["overlays", "gc", "--dry-run"], E());
  expect(dry.stdout).toContain("would remove tool/greeter@0.2.0");
  const gc = await lj(["overlays", "gc"], E());
  expect(gc.code).toBe(0);
  const after = JSON.parse((await lj(["overlays", "list", "--json"], E())).stdout) as unknown[];
  expect(after).toEqual([]);
  expect((await lj(["overlays", "show", "tool/none"], E())).code).toBe(66);
});

rootTest(
  "an overlay that deletes and replaces world files hides them in every jail, as root or in a user namespace",
  async () => {
    const dir = recipe(
      join(env.root, "src", "pruner"),
      "name pruner\nversion 1.0.0\ntype tool\nworld test\n#!/bin/sh\nset -e\nrm /etc/debian_version\nrm -rf /etc/apt\nmkdir /etc/apt\necho new > /etc/apt/only\n",
    );
    const r = await ljbuild(["Jailfile"], dir);
    expect(r.code).toBe(0);
    const layer = r.stdout.trim();
    expect(existsSync(join(env.world, "etc/debian_version"))).toBe(true);
    const look = "test -e /etc/debian_version && echo still-there; ls /etc/apt";
    for (const userns of [false, { uidBase: 320000, count: 65536 }] as const) {
      const j = await runJail({
        ...env.base,
        layers: [env.world, layer],
        argv: ["/bin/sh", "-c", look],
        ...(userns ? { userns } : {}),
      });
      expect({ userns: !!userns, out: j.stdout.trim() }).toEqual({ userns: !!userns, out: "only" });
    }
  },
);
