import { afterAll, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { copySanitised, escapesTree, ownedBy, shiftedFrom } from "../../src/build/sanitise.ts";
import { getXattr, makeWhiteout, setXattr } from "../../src/jail/ffi.ts";
import { rootTest } from "../helpers/root.ts";

const dirs: string[] = [];
const fresh = () => {
  const d = mkdtempSync(join(tmpdir(), "lj-sanitise-"));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test("symlinks that climb out of the tree are told apart from those that stay in it", () => {
  expect(escapesTree("a/link", "../b")).toBe(false);
  expect(escapesTree("a/link", "../../b")).toBe(true);
  expect(escapesTree("link", "..")).toBe(true);
  expect(escapesTree("a/b/link", "../../c/../d")).toBe(false);
  expect(escapesTree("a/link", "/etc/passwd")).toBe(false);
});

test("owners: a slug's are the app's; an overlay's shift back from the builder's range", () => {
  expect(ownedBy(7, 8)()).toEqual([7, 8]);
  const shift = shiftedFrom(100000, 65536);
  expect(shift(100000, 100005)).toEqual([0, 5]);
  expect(shift(0, 42)).toEqual([0, 0]);
  expect(shift(200000, 100000 + 65536)).toEqual([0, 0]);
});

test("the copy strips special bits, drops special files, sets owners and never follows a link", () => {
  const src = fresh();
  const outside = fresh();
  writeFileSync(join(outside, "secret"), "host secret");
  writeFileSync(join(src, "suid"), "#!/bin/sh\n");
  chmodSync(join(src, "suid"), 0o4755);
  mkdirSync(join(src, "sgid-dir"));
  chmodSync(join(src, "sgid-dir"), 0o2775);
  writeFileSync(join(src, "sgid-dir", "f"), "x");
  symlinkSync(outside, join(src, "abs-link"));
  symlinkSync("sgid-dir/f", join(src, "rel-link"));
  expect(spawnSync("mkfifo", [join(src, "fifo")]).status).toBe(0);
  const dst = join(fresh(), "out");
  const uid = process.getuid?.() === 0 ? 12345 : (process.getuid?.() ?? 0);
  const r = copySanitised(src, dst, { owner: ownedBy(uid, uid) });
  expect(lstatSync(join(dst, "suid")).mode & 0o7777).toBe(0o755);
  expect(lstatSync(join(dst, "sgid-dir")).mode & 0o7777).toBe(0o775);
  expect(r.stripped.sort()).toEqual(["sgid-dir", "suid"]);
  expect(r.dropped).toEqual(["fifo"]);
  expect(existsSync(join(dst, "fifo"))).toBe(false);
  // Links stay links, verbatim; the absolute one still names the outside, but nothing of it was copied.
  expect(readlinkSync(join(dst, "abs-link"))).toBe(outside);
  expect(lstatSync(join(dst, "abs-link")).isSymbolicLink()).toBe(true);
  expect(readlinkSync(join(dst, "rel-link"))).toBe("sgid-dir/f");
  expect(readFileSync(join(dst, "sgid-dir", "f"), "utf8")).toBe("x");
  for (const p of ["suid", "sgid-dir", "sgid-dir/f", "abs-link", "."]) {
    expect({ p, uid: lstatSync(join(dst, p)).uid }).toEqual({ p, uid });
  }
});

test("a link climbing out of the tree is refused, naming it", () => {
  const src = fresh();
  mkdirSync(join(src, "a"));
  symlinkSync("../../etc/shadow", join(src, "a", "bad"));
  expect(() => copySanitised(src, join(fresh(), "out"), { owner: ownedBy(0, 0) })).toThrow(
    'the build\'s output has a symlink that leaves its tree: "a/bad" -> "../../etc/shadow"',
  );
});

// mknod and trusted.* attributes need root.
rootTest("an overlay layer keeps its whiteouts and opaque directories, under both names", () => {
  const src = fresh();
  makeWhiteout(join(src, "deleted"));
  mkdirSync(join(src, "replaced"));
  setXattr(join(src, "replaced"), "user.overlay.opaque", "y");
  const dst = join(fresh(), "out");
  const r = copySanitised(src, dst, { owner: ownedBy(0, 0), overlayMarks: true });
  expect(r.dropped).toEqual([]);
  const wh = lstatSync(join(dst, "deleted"));
  expect(wh.isCharacterDevice()).toBe(true);
  expect(wh.rdev).toBe(0);
  expect(getXattr(join(dst, "replaced"), "user.overlay.opaque")?.toString()).toBe("y");
  expect(getXattr(join(dst, "replaced"), "trusted.overlay.opaque")?.toString()).toBe("y");
  // A slug keeps no such thing: a device node is left out.
  const slug = copySanitised(src, join(fresh(), "slug"), { owner: ownedBy(0, 0) });
  expect(slug.dropped).toEqual(["deleted"]);
});
