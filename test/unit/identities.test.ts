import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { forgetIdentity, ID_COUNT, identityEtc, identityOf, idRegion } from "../../src/store/identities.ts";

let root: string;
const saved = process.env.LIGHTJAIL_ROOT;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "lj-ids-"));
  process.env.LIGHTJAIL_ROOT = root;
});
afterAll(() => {
  process.env.LIGHTJAIL_ROOT = saved;
  rmSync(root, { recursive: true, force: true });
});

test("each name gets its own range, the same one every time, above login users", () => {
  const a = identityOf("app", "a");
  const b = identityOf("app", "b");
  const svc = identityOf("service", "a");
  expect(new Set([a.uid, b.uid, svc.uid]).size).toBe(3);
  for (const x of [a, b, svc]) {
    expect(x.uid % ID_COUNT).toBe(0);
    expect(x.uid).toBeGreaterThanOrEqual(0x40000000);
    expect(x.uid + x.count).toBeLessThanOrEqual(0x80000000);
  }
  expect(identityOf("app", "a")).toEqual(a);
  expect(Math.abs(a.uid - b.uid)).toBeGreaterThanOrEqual(ID_COUNT);
});

test("a forgotten range is handed out again", () => {
  const c = identityOf("app", "c");
  forgetIdentity("app", "c");
  expect(identityOf("app", "d").uid).toBe(c.uid);
});

test("the region: LJ_ID_REGION, checked, else from the root's path", () => {
  expect(idRegion({ LJ_ID_REGION: "3" })).toBe(3);
  expect(() => idRegion({ LJ_ID_REGION: "99" })).toThrow("LJ_ID_REGION must be an integer from 0 to 15");
  expect(idRegion({})).toBe(idRegion({}));
});

test("the jail's passwd and group name the identity's first id", () => {
  const world = mkdtempSync(join(tmpdir(), "lj-ids-world-"));
  try {
    mkdirSync(join(world, "etc"));
    writeFileSync(join(world, "etc/passwd"), "root:x:0:0::/root:/bin/sh");
    const who = identityOf("app", "a");
    const [passwd, group] = identityEtc(world, who, "/app");
    expect(passwd?.dst).toBe("/etc/passwd");
    expect(readFileSync(passwd!.src, "utf8")).toBe(
      `root:x:0:0::/root:/bin/sh\napp:x:${who.uid}:${who.gid}::/app:/bin/sh\n`,
    );
    expect(readFileSync(group!.src, "utf8")).toBe(`app:x:${who.gid}:\n`);
  } finally {
    rmSync(world, { recursive: true, force: true });
  }
});
