/**
 * Plugins without jails: manifest and Jailfile parsing (valid and invalid), discovery
 * (built-in, user, a new type), the seed's storage path mapping, detection and plans.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { planApp } from "../src/build/app.ts";
import { resolveChain } from "../src/build/overlays.ts";
import type { LjError } from "../src/errors.ts";
import { parseJailfile } from "../src/plugins/jailfile.ts";
import { isValidRange, parseManifest } from "../src/plugins/manifest.ts";
import { discover, findPlugin, sourceKey, splitUrl } from "../src/plugins/registry.ts";
import { lj, projectDir } from "./helpers/jail-env.ts";

const apps = join(projectDir, "test/fixtures/apps");
let root: string;
const env = () => ({ LIGHTJAIL_ROOT: root });

function userPlugin(type: string, name: string, toml: string, files: Record<string, string> = {}): string {
  const dir = join(root, "plugins", `${type}s`, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "plugin.toml"), toml);
  for (const [f, t] of Object.entries(files)) {
    mkdirSync(join(dir, f, ".."), { recursive: true });
    writeFileSync(join(dir, f), t);
  }
  return dir;
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "lj-plugins-"));
  process.env.LIGHTJAIL_ROOT = root;
  // A world directory is enough for planning (no jail runs here).
  mkdirSync(join(root, "worlds", "test"), { recursive: true });
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const bad = (text: string): LjError => {
  try {
    parseManifest(text, "/p/plugin.toml", "/p");
  } catch (e) {
    return e as LjError;
  }
  throw new Error("expected an error");
};

describe("plugin.toml", () => {
  test("a complete manifest parses into every section", () => {
    const m = parseManifest(
      `name = "pg"\ntype = "service"\nversion = "1.2.0"\ndescription = "d"\nfrom = ["tool/base@^1", "other"]\n` +
        `[install]\nscript = "i.sh"\nnet = "none"\nmemory_mb = 100\n[install.env]\nA = "1"\n` +
        `[detect]\nfiles = ["*.sql"]\npriority = 3\n[detect.contains]\n"x.txt" = "^pg"\n` +
        `[build]\nscript = "b.sh"\ncache = ["vendor"]\nlockfiles = ["x.lock"]\n` +
        `[processes]\nweb = "run"\n[env]\nK = "v"\n` +
        `[service]\nstart = "go"\nport = 5432\ndata_dir = "/data"\n[service.health]\ncommand = "ok"\n[service.env]\nURL = "pg://\${HOST}:\${PORT}"\n`,
      "/p/plugin.toml",
      "/p",
    );
    expect(m.from).toEqual([
      { type: "tool", name: "base", constraint: "^1" },
      { type: "service", name: "other", constraint: "*" },
    ]);
    expect(m.install).toMatchObject({ script: "i.sh", net: "none", memoryMb: 100, cpus: 2, env: { A: "1" } });
    expect(m.detect).toEqual({ files: ["*.sql"], contains: { "x.txt": "^pg" }, priority: 3 });
    expect(m.build?.cache).toEqual(["vendor"]);
    expect(m.service).toMatchObject({
      port: 5432,
      dataDir: "/data",
      health: { command: "ok" },
      env: { URL: "pg://${HOST}:${PORT}" },
    });
  });

  test("errors name the file, the line, the key and what was expected", () => {
    let e = bad(`name = "x"\ntype = "language"\nversion = 3\n`);
    expect(e.exitCode).toBe(78);
    expect(e.message).toBe(
      '/p/plugin.toml:3: key "version": expected a semantic version like 1.0.0 (MAJOR.MINOR.PATCH), got number 3',
    );
    e = bad(`name = "x"\ntype = "language"\nversion = "1.0.0"\n\n[install]\nscirpt = "a.sh"\n`);
    expect(e.message).toContain(
      '/p/plugin.toml:6: key "install.scirpt": expected one of the known keys (script,',
    );
    e = bad(`type = "language"\nversion = "1.0.0"\n`);
    expect(e.message).toContain('key "name": expected a lowercase name');
    e = bad(`name = "x"\ntype = "language"\nversion = "1.0.0"\nfrom = ["language/ruby@not a range!"]\n`);
    expect(e.message).toMatch(/plugin.toml:4: key "from": expected a semver range/);
    e = bad(`name = "x"\ntype = "service"\nversion = "1.0.0"\n`);
    expect(e.message).toContain('key "service": expected a [service] table');
    e = bad(
      `name = "x"\ntype = "language"\nversion = "1.0.0"\n[service]\nstart = "s"\nport = 99999\ndata_dir = "/d"\n[service.health]\ncommand = "c"\n`,
    );
    expect(e.message).toMatch(/:6: key "service.port": expected a port number/);
    e = bad(`name = "x"\ntype = "language"\nversion = "1.0.0"\n[detect]\nfiles = "package.json"\n`);
    expect(e.message).toMatch(/:5: key "detect.files": expected an array of strings/);
  });

  test("versions are semantic versions and parents' ranges are ranges (exit 78)", () => {
    let e = bad(`name = "x"\ntype = "language"\nversion = "banana"\n`);
    expect(e.exitCode).toBe(78);
    expect(e.message).toContain('key "version": expected a semantic version like 1.0.0');
    e = bad(`name = "x"\ntype = "language"\nversion = "1.0"\n`);
    expect(e.message).toContain('key "version"');
    e = bad(`name = "x"\ntype = "language"\nversion = "1.0.0"\nfrom = ["language/ruby@lolwut"]\n`);
    expect(e.exitCode).toBe(78);
    expect(e.message).toContain('a semver range after @ (e.g. ^1, >=2.0, *), not "lolwut"');
    for (const ok of ["^1", ">=1.2 <2", "1.x", "1.0 - 2.0", "~1.2.3", "^1 || ^2.1.0-rc.1"]) {
      expect(isValidRange(ok)).toBe(true);
    }
    for (const no of ["lolwut", "1.2.3.4", "^", ">=1.2 banana", "1 -"]) expect(isValidRange(no)).toBe(false);
  });

  test("invalid TOML reports line and column", () => {
    const e = bad(`name = "x"\ntype = [1,\n`);
    expect(e.code).toBe("invalid-toml");
    expect(e.message).toMatch(/^\/p\/plugin.toml:\d+:\d+: invalid TOML: /);
  });
});

describe("Jailfile", () => {
  test("directives, then the script from its #! line", () => {
    const j = parseJailfile(
      "# a comment\nname ruby\nversion 3.1.0\nworld bookworm\nfrom language/base@^1\ncopy files/gemrc /etc/gemrc\n#!/bin/sh\nset -e\necho hi\n",
      "/r/Jailfile",
    );
    expect(j).toMatchObject({ name: "ruby", version: "3.1.0", type: "language", world: "bookworm" });
    expect(j.from).toEqual([{ type: "language", name: "base", constraint: "^1" }]);
    expect(j.copy).toEqual([{ src: "files/gemrc", dst: "/etc/gemrc" }]);
    expect(j.inlineScript).toBe("#!/bin/sh\nset -e\necho hi\n");
  });

  test("bad Jailfiles name the line and what was expected", () => {
    const err = (t: string) => {
      try {
        parseJailfile(t, "/r/Jailfile");
      } catch (e) {
        return (e as LjError).message;
      }
      return "";
    };
    expect(err("name x\nversion 1.0.0\nfrum y\n#!/bin/sh\n")).toStartWith(
      '/r/Jailfile:3: unknown directive "frum"',
    );
    expect(err("name x\nversion 1.0.0\n")).toContain("no install script: expected a line starting with #!");
    expect(err("version 1\n#!/bin/sh\n")).toContain('missing directive "name"');
    expect(err("name x\nname y\nversion 1\n#!/bin/sh\n")).toStartWith(
      '/r/Jailfile:2: directive "name" given twice',
    );
    expect(err("name x\nversion 1.0.0\ncopy ../etc/passwd /x\n#!/bin/sh\n")).toContain(
      "copy: the source must be inside",
    );
  });
});

describe("storage paths (seed layout)", () => {
  test("repo URL and subdirectory map to <type>s/<repo url>/<subdir>", () => {
    expect(sourceKey("https://github.com/myfreeweb/lightjail.git", "overlays/ruby")).toBe(
      "github.com/myfreeweb/lightjail/overlays/ruby",
    );
    expect(sourceKey("git@github.com:myfreeweb/lightjail.git", "overlays/ruby")).toBe(
      "github.com/myfreeweb/lightjail/overlays/ruby",
    );
    expect(sourceKey("http://user@127.0.0.1:8080/repo.git")).toBe("127.0.0.1:8080/repo");
    expect(sourceKey("/srv/git/x")).toBe("_local/srv/git/x");
    expect(splitUrl("https://github.com/myfreeweb/lightjail//overlays/ruby")).toEqual({
      url: "https://github.com/myfreeweb/lightjail",
      subdir: "overlays/ruby",
    });
    expect(splitUrl("https://h/x.git")).toEqual({ url: "https://h/x.git" });
    expect(() => sourceKey("https://h/x", "a/../b")).toThrow(/not allowed/);
    expect(() => sourceKey("https://h/x", "@bookworm")).toThrow(/"@bookworm" is not allowed/);
  });

  test("built-ins live under _builtin (never a DNS host)", () => {
    const ruby = findPlugin(discover(), { type: "language", name: "ruby" });
    expect(ruby.storeKey).toBe("_builtin/ruby");
    expect(ruby.origin).toBe("builtin");
  });
});

describe("discovery", () => {
  test("built-in languages and services, user plugins and a new type folder", () => {
    userPlugin(
      "tool",
      "hello",
      `name = "hello"\ntype = "tool"\nversion = "0.1.0"\ndescription = "a tool"\n[install]\nscript = "i.sh"\n`,
      { "i.sh": "echo hi\n" },
    );
    const d = discover();
    const names = d.plugins.map((p) => `${p.origin}:${p.manifest.type}/${p.manifest.name}`);
    for (const n of ["node", "python", "ruby", "static"]) expect(names).toContain(`builtin:language/${n}`);
    for (const n of ["postgres", "redis"]) expect(names).toContain(`builtin:service/${n}`);
    expect(names).toContain("user:tool/hello");
    expect(d.types).toEqual(expect.arrayContaining(["language", "service", "tool"]));
  });

  test("version constraints pick the highest matching version", () => {
    userPlugin("language", "ruby", `name = "ruby"\ntype = "language"\nversion = "2.0.0"\n`);
    const d = discover();
    expect(findPlugin(d, { type: "language", name: "ruby" }).manifest.version).toBe("2.0.0");
    expect(findPlugin(d, { type: "language", name: "ruby", constraint: "^1" }).manifest.version).toBe(
      "1.0.0",
    );
    expect(() => findPlugin(d, { type: "language", name: "ruby", constraint: "^9" })).toThrow(
      /no version of language\/ruby satisfies \^9/,
    );
    rmSync(join(root, "plugins", "languages", "ruby"), { recursive: true });
  });

  test("CLI: list, info, unknown type and broken manifests with their exit codes", async () => {
    let r = await lj(["plugins", "list"], env());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/tool\s+hello\s+0\.1\.0\s+user/);
    r = await lj(["plugins", "info", "language/node"], env());
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      name: "node",
      origin: "builtin",
      store: join(root, "languages", "_builtin", "node"),
    });
    r = await lj(["build", "--type", "gadget", "x"], env());
    expect(r.code).toBe(66);
    expect(r.stderr).toContain('unknown overlay type "gadget"');
    userPlugin(
      "tool",
      "broken",
      `name = "broken"\ntype = "tool"\nversion = "1.0.0"\n[install]\nscript = 5\n`,
    );
    r = await lj(["plugins", "info", "tool/broken"], env());
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(
      `${join(root, "plugins/tools/broken/plugin.toml")}:5: key "install.script": expected a script path`,
    );
    r = await lj(["plugins", "list"], env());
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("broken plugin");
    rmSync(join(root, "plugins", "tools", "broken"), { recursive: true });
    mkdirSync(join(root, "plugins", "tools", "empty"), { recursive: true });
    r = await lj(["plugins", "info", "tool/empty"], env());
    expect(r.code).toBe(66);
    expect(r.stderr).toContain("plugin.toml does not exist");
    rmSync(join(root, "plugins", "tools", "empty"), { recursive: true });
    r = await lj(["plugins", "info", "nope"], env());
    expect(r.code).toBe(66);
  });

  test("a cycle in from is a config error naming the chain", async () => {
    userPlugin("tool", "a", `name = "a"\ntype = "tool"\nversion = "1.0.0"\nfrom = ["tool/b"]\n`);
    userPlugin("tool", "b", `name = "b"\ntype = "tool"\nversion = "1.0.0"\nfrom = ["tool/a"]\n`);
    expect(() => resolveChain(findPlugin(discover(), { type: "tool", name: "a" }), discover())).toThrow(
      'cycle in "from": tool/a -> tool/b -> tool/a',
    );
    const r = await lj(["build", "tool/a", "--world", "test"], env());
    expect(r.code).toBe(78);
    expect(r.stderr).toContain("cycle");
    rmSync(join(root, "plugins", "tools", "a"), { recursive: true });
    rmSync(join(root, "plugins", "tools", "b"), { recursive: true });
  });
});

describe("plans", () => {
  test("each sample app is detected by its plugin, with reasons", async () => {
    const cases: [string, string, string][] = [
      ["node-ms", "node", "package.json present"],
      ["python-six", "python", "requirements.txt present"],
      ["ruby-plain", "ruby", "Gemfile present"],
      ["static-site", "static", "public/index.html present"],
    ];
    for (const [app, plugin, reason] of cases) {
      const p = await planApp(join(apps, app), { world: "test" });
      expect(p.detected[0]).toEqual({ plugin, type: "language", reasons: [reason] });
      expect(p.overlays).toEqual([{ type: "language", name: plugin, version: "1.0.0" }]);
    }
    const node = await planApp(join(apps, "node-ms"), { world: "test" });
    expect(node.processes.web).toEqual({ command: "node server.js" });
    expect(node.build.cacheDirs).toEqual(["node_modules"]);
    expect(node.env.NODE_ENV).toBe("production");
  });

  test("lj.toml overrides detection; a Procfile defines processes", async () => {
    const dir = join(root, "app1");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "package.json"), "{}");
    writeFileSync(join(dir, "Procfile"), "web: node web.js\nworker: node worker.js\n");
    writeFileSync(
      join(dir, "lj.toml"),
      `plugin = "static"\n[env]\nA = "1"\n[limits]\nmemory_mb = 256\n[processes]\nclock = "node clock.js"\n`,
    );
    const p = await planApp(dir, { world: "test" });
    expect(p.detected).toEqual([
      { plugin: "static", type: "language", reasons: ['lj.toml sets plugin = "static"'] },
    ]);
    expect(p.processes).toEqual({
      web: { command: "node web.js" },
      worker: { command: "node worker.js" },
      clock: { command: "node clock.js" },
    });
    expect(p.env.A).toBe("1");
    expect(p.limits.memoryMb).toBe(256);
    const r = await lj(["plan", dir, "--json", "--world", "test"], env());
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).overlays).toEqual([{ type: "language", name: "static", version: "1.0.0" }]);
    writeFileSync(join(dir, "lj.toml"), `plugn = "static"\n`);
    const bad = await lj(["plan", dir], env());
    expect(bad.code).toBe(78);
    expect(bad.stderr).toContain(`${join(dir, "lj.toml")}:1: key "plugn": expected one of the known keys`);
  });

  test("an app no plugin detects is a clear data error", async () => {
    const dir = join(root, "nothing");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "README"), "hi");
    const r = await lj(["plan", dir, "--world", "test"], env());
    expect(r.code).toBe(65);
    expect(r.stderr).toContain(`no plugin detects the app in ${dir}`);
    const missing = await lj(["plan", join(root, "missing")], env());
    expect(missing.code).toBe(66);
  });

  test("human plan output lists detection, chain, commands, cache and limits", async () => {
    const r = await lj(["plan", join(apps, "node-ms"), "--world", "test"], env());
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("* language/node: package.json present  (builds the app)");
    expect(r.stdout).toContain("overlays:  language/node@1.0.0");
    expect(r.stdout).toContain("build:     /bin/sh -e /tmp/lj/plugin/build.sh  (net egress)");
    expect(r.stdout).toContain(
      "cache:     node_modules  (keyed by package-lock.json | npm-shrinkwrap.json | yarn.lock | pnpm-lock.yaml)",
    );
    expect(r.stdout).toContain("web: node server.js");
    expect(r.stdout).toContain("limits:    memory 512 MB, pids 256");
  });

  test("plugins new scaffolds a plugin whose test app plans at once", async () => {
    const r = await lj(["plugins", "new", "--type", "language", "hello"], env());
    expect(r.code).toBe(0);
    const dir = r.stdout.trim();
    expect(dir).toBe(join(root, "plugins", "languages", "hello"));
    const p = await lj(["plan", join(dir, "test/app"), "--json", "--world", "test"], env());
    expect(p.code).toBe(0);
    const plan = JSON.parse(p.stdout);
    expect(plan.detected[0]).toEqual({
      plugin: "hello",
      type: "language",
      reasons: ["hello.txt present", "hello scaffold"],
    });
    expect(plan.env.GREETING).toBe("hello from the test app");
    const again = await lj(["plugins", "new", "--type", "language", "hello"], env());
    expect(again.code).toBe(73);
    const svc = await lj(["plugins", "new", "--type", "service", "cache"], env());
    expect(svc.code).toBe(0);
    expect((await lj(["plugins", "info", "service/cache"], env())).code).toBe(0);
    rmSync(join(root, "plugins", "services", "cache"), { recursive: true });
  });
});
