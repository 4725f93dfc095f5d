/**
 * The dependency cache against a hostile app tree: symlinks its build left behind must never
 * make save read, or restore write, anything outside the app tree and the cache directory.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CacheDecision, computeKey, restore, save } from "../../src/build/cache.ts";
import { removeTree } from "../../src/store/tree.ts";

const SECRET = "host-secret-6f1c2a";

let work: string;
let app: string;
let cache: string;
let host: string;
let lines: string[];
const log = (l: string) => lines.push(l);

beforeEach(async () => {
  work = await fsp.mkdtemp(join(tmpdir(), "lj-cache-"));
  app = join(work, "app");
  cache = join(work, "cache");
  host = join(work, "host"); // stands for any host directory outside the app and the cache
  for (const d of [app, cache, host]) mkdirSync(d);
  writeFileSync(join(host, "secret"), SECRET);
  mkdirSync(join(host, "bundle"));
  writeFileSync(join(host, "bundle", "secret"), SECRET);
  lines = [];
});
afterEach(async () => {
  await removeTree(work);
});

const key = { key: "k1", lockfile: "package-lock.json", lockHash: "h1" };
const missed: () => CacheDecision = () => ({ hit: false, reason: "miss", key, dir: cache });
const hit: () => CacheDecision = () => ({ hit: true, reason: "hit", key, dir: cache });

/** Every path under `dir` (lstat, not followed) with what it is. */
function listing(dir: string, base = ""): string[] {
  const out: string[] = [];
  for (const n of readdirSync(join(dir, base))) {
    const rel = base ? `${base}/${n}` : n;
    const st = lstatSync(join(dir, rel));
    if (st.isSymbolicLink()) out.push(`${rel} -> ${readlinkSync(join(dir, rel))}`);
    else if (st.isDirectory()) out.push(`${rel}/`, ...listing(dir, rel));
    else out.push(rel);
  }
  return out;
}

/** No regular file under `dir` holds the secret. */
function holdsSecret(dir: string): boolean {
  return listing(dir).some((entry) => {
    const p = join(dir, entry.split(" -> ")[0]!);
    return lstatSync(p).isFile() && readFileSync(p, "utf8").includes(SECRET);
  });
}

describe("save", () => {
  test("a cache directory that is a symlink to a host directory is skipped, with a log line", async () => {
    symlinkSync(host, join(app, "node_modules"));
    await save(missed(), app, ["node_modules"], log);
    expect(listing(join(cache, "dirs"))).toEqual([]);
    expect(holdsSecret(cache)).toBe(false);
    expect(lines.join("\n")).toContain("not saving node_modules: node_modules is a symlink");
  });

  test("a cache directory below a symlinked directory is skipped (vendor -> host, vendor/bundle)", async () => {
    symlinkSync(host, join(app, "vendor"));
    await save(missed(), app, ["vendor/bundle"], log);
    expect(listing(join(cache, "dirs"))).toEqual([]);
    expect(holdsSecret(cache)).toBe(false);
    expect(lines.join("\n")).toContain("not saving vendor/bundle: vendor is a symlink");
  });

  test("symlinks inside a cache directory are copied as symlinks, never dereferenced", async () => {
    mkdirSync(join(app, "node_modules", "pkg"), { recursive: true });
    writeFileSync(join(app, "node_modules", "pkg", "index.js"), "module.exports = 1\n");
    symlinkSync(host, join(app, "node_modules", "leak"));
    symlinkSync(join(host, "secret"), join(app, "node_modules", "leak-file"));
    symlinkSync("pkg/index.js", join(app, "node_modules", "inside"));
    await save(missed(), app, ["node_modules"], log);
    expect(listing(join(cache, "dirs")).sort()).toEqual(
      [
        "node_modules/",
        "node_modules/pkg/",
        "node_modules/pkg/index.js",
        `node_modules/leak -> ${host}`,
        `node_modules/leak-file -> ${join(host, "secret")}`,
        "node_modules/inside -> pkg/index.js",
      ].sort(),
    );
    expect(holdsSecret(cache)).toBe(false);
    expect(lines).toEqual([]);
  });

  test("a lockfile that is a symlink to a host file is not read", () => {
    symlinkSync(join(host, "secret"), join(app, "package-lock.json"));
    const k = computeKey(app, ["package-lock.json"], "salt");
    expect(k.lockfile).toBeNull();
    expect(k.lockHash).toBeNull();
    writeFileSync(join(app, "yarn.lock"), "# yarn\n");
    expect(computeKey(app, ["package-lock.json", "yarn.lock"], "salt").lockfile).toBe("yarn.lock");
  });
});

describe("restore", () => {
  /** A cache saved from a clean app with node_modules and vendor/bundle. */
  async function seed(): Promise<void> {
    const clean = join(work, "clean");
    mkdirSync(join(clean, "node_modules"), { recursive: true });
    writeFileSync(join(clean, "node_modules", "planted"), "from the cache\n");
    mkdirSync(join(clean, "vendor", "bundle"), { recursive: true });
    writeFileSync(join(clean, "vendor", "bundle", "planted"), "from the cache\n");
    await save(missed(), clean, ["node_modules", "vendor/bundle"], log);
  }

  test("nothing is written through a directory symlink planted in the app tree (vendor -> host)", async () => {
    await seed();
    mkdirSync(join(host, "empty"));
    symlinkSync(join(host, "empty"), join(app, "vendor"));
    const before = listing(host);
    const restored = await restore(hit(), app, ["vendor/bundle"], log);
    expect(restored).toEqual([]);
    expect(listing(host)).toEqual(before);
    expect(lines.join("\n")).toContain("not restoring vendor/bundle: in the app, vendor is a symlink");
  });

  test("a cache directory that is a dangling symlink in the app is left alone", async () => {
    await seed();
    symlinkSync(join(host, "nm"), join(app, "node_modules"));
    const before = listing(host);
    const restored = await restore(hit(), app, ["node_modules"], log);
    expect(restored).toEqual([]);
    expect(listing(host)).toEqual(before);
    expect(readlinkSync(join(app, "node_modules"))).toBe(join(host, "nm"));
    expect(lines.join("\n")).toContain("not restoring node_modules: in the app, node_modules is a symlink");
  });

  test("a clean app gets its directories back, missing parents created", async () => {
    await seed();
    const restored = await restore(hit(), app, ["node_modules", "vendor/bundle"], log);
    expect(restored).toEqual(["node_modules", "vendor/bundle"]);
    expect(readFileSync(join(app, "vendor", "bundle", "planted"), "utf8")).toBe("from the cache\n");
    expect(lstatSync(join(app, "vendor")).isDirectory()).toBe(true);
    expect(lines).toEqual([]);
  });

  test("a cached copy that is a symlink is not followed (a cache written before this check)", async () => {
    mkdirSync(join(cache, "dirs"), { recursive: true });
    symlinkSync(host, join(cache, "dirs", "node_modules"));
    const restored = await restore(hit(), app, ["node_modules"], log);
    expect(restored).toEqual([]);
    expect(existsSync(join(app, "node_modules"))).toBe(false);
    expect(lines.join("\n")).toContain("in the cache, node_modules is a symlink");
  });
});
