/**
 * User-namespaced jails over root-owned layers: the world and overlays (and read-only binds
 * marked `idmap`) are seen idmapped, so root inside owns root's files, may change them (the
 * changes land in the upper layer, owned by the mapped ids on the host) and a package manager
 * works; the layers on the host never change. Real jails, as root.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { procStat } from "../src/jail/owner.ts";
import { runJail } from "../src/jail/spawn.ts";
import { BUILD_CAPS, type JailSpec } from "../src/jail/spec.ts";
import { type JailEnv, makeJailEnv } from "./helpers/jail-env.ts";
import { isRoot, rootTest } from "./helpers/root.ts";

/** This file's id range: host ids 300000.. are root and the rest inside. */
const BASE = 300000;
const COUNT = 65536;
/** A host id outside the range: nobody inside. */
const OUTSIDE = 5000000;
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

let env: JailEnv;
/** A second layer over the world: root-owned, with a file owned by an id outside the range. */
let layer: string;
let uppers = 0;

beforeAll(async () => {
  if (!isRoot()) return;
  env = await makeJailEnv();
  chmodSync(env.root, 0o755); // the stage and the uppers are reached as BASE
  layer = join(env.root, "layer");
  for (const d of [
    "var/lib/dpkg/info",
    "var/lib/dpkg/updates",
    "var/lib/dpkg/triggers",
    "pkg",
    "srv/owned",
  ]) {
    mkdirSync(join(layer, d), { recursive: true });
  }
  writeFileSync(join(layer, "var/lib/dpkg/status"), "");
  writeFileSync(join(layer, "var/lib/dpkg/available"), "");
  writeFileSync(join(layer, "outside"), "x");
  chownSync(join(layer, "outside"), OUTSIDE, OUTSIDE);
  writeFileSync(join(layer, "srv/owned/data"), "by uid 100\n");
  chownSync(join(layer, "srv/owned"), 100, 100);
  chownSync(join(layer, "srv/owned/data"), 100, 100);
});
afterAll(() => env?.cleanup());

/** A fresh upper directory (spawnJail hands it to BASE). */
function freshUpper(): string {
  return join(env.root, `upper-${++uppers}`);
}

/** Runs `script` as root in a user-namespaced jail over the world and the test layer. */
function inJail(script: string, extra: Partial<JailSpec> = {}) {
  return runJail({
    layers: [env.world, layer],
    mounts: (env.base.mounts ?? []).map((m) => ({ ...m, idmap: true })),
    userns: { uidBase: BASE, count: COUNT },
    caps: BUILD_CAPS,
    env: { PATH },
    argv: ["/bin/sh", "-c", script],
    ...extra,
  });
}

const lines = (s: string) => s.split("\n").filter(Boolean);

describe("idmapped layers", () => {
  rootTest(
    "root inside owns root's layer files; its changes land in the upper, as the mapped ids",
    async () => {
      const passwd = join(env.world, "etc/passwd");
      const before = { text: readFileSync(passwd, "utf8"), st: statSync(passwd) };
      const upper = freshUpper();
      const r = await inJail(
        [
          "id -u",
          "stat -c %u:%g /etc/passwd /etc /outside /srv/owned/data",
          "echo lj-added >> /etc/passwd && echo appended",
          "echo new > /etc/lj-new && echo created",
          "mkdir /var/lib/lj-pkg && touch /var/lib/lj-pkg/f && chown 100:100 /var/lib/lj-pkg/f && echo chowned",
          "echo more >> /srv/owned/data && echo owned-appended",
        ].join("; "),
        { upper },
      );
      expect(r).toMatchObject({ status: 0, stderr: "" });
      expect(lines(r.stdout)).toEqual([
        "0",
        "0:0",
        "0:0",
        "65534:65534", // a host id outside the range is nobody inside
        "100:100",
        "appended",
        "created",
        "chowned",
        "owned-appended",
      ]);
      // The copy-up and new files belong to the mapped ids on the host.
      const copied = statSync(join(upper, "etc/passwd"));
      expect([copied.uid, copied.gid]).toEqual([BASE, BASE]);
      expect(readFileSync(join(upper, "etc/passwd"), "utf8")).toBe(`${before.text}lj-added\n`);
      expect(statSync(join(upper, "etc/lj-new")).uid).toBe(BASE);
      expect(statSync(join(upper, "var/lib/lj-pkg")).uid).toBe(BASE);
      const chowned = statSync(join(upper, "var/lib/lj-pkg/f"));
      expect([chowned.uid, chowned.gid]).toEqual([BASE + 100, BASE + 100]);
      expect(statSync(join(upper, "srv/owned/data")).uid).toBe(BASE + 100);
      // The layers on the host are untouched.
      const after = statSync(passwd);
      expect(readFileSync(passwd, "utf8")).toBe(before.text);
      expect([after.uid, after.mtimeMs, after.ino]).toEqual([0, before.st.mtimeMs, before.st.ino]);
      expect(readFileSync(join(layer, "srv/owned/data"), "utf8")).toBe("by uid 100\n");
      expect(statSync(join(layer, "outside")).uid).toBe(OUTSIDE);
    },
  );

  rootTest(
    "a read-only bind marked idmap shows root's files as root's, an unmarked one as nobody's",
    async () => {
      const usr = (idmap: boolean) => [{ src: "/usr", dst: "/usr", readonly: true, idmap }];
      const marked = await inJail("stat -c %u:%g /usr/bin/env; touch /usr/lj-probe 2>&1; echo done", {
        mounts: usr(true),
      });
      expect(marked.status).toBe(0);
      const [owner, touched, done] = lines(marked.stdout);
      expect(owner).toBe("0:0");
      expect(touched).toContain("Read-only file system");
      expect(done).toBe("done");
      const plain = await inJail("stat -c %u:%g /usr/bin/env", { mounts: usr(false) });
      expect(plain).toMatchObject({ status: 0, stdout: "65534:65534\n" });
    },
  );

  rootTest("dpkg installs a package over root-owned layers, file owners mapped", async () => {
    const src = join(env.root, "debsrc");
    mkdirSync(join(src, "DEBIAN"), { recursive: true });
    mkdirSync(join(src, "opt/ljtest"), { recursive: true });
    writeFileSync(
      join(src, "DEBIAN/control"),
      "Package: ljtest\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: test\n",
    );
    writeFileSync(join(src, "opt/ljtest/hello"), "hello\n");
    writeFileSync(join(src, "opt/ljtest/owned"), "owned\n");
    chownSync(join(src, "opt/ljtest/owned"), 100, 100);
    const deb = Bun.spawnSync(["dpkg-deb", "--build", src, join(layer, "pkg/ljtest.deb")]);
    expect(deb.exitCode).toBe(0);
    const upper = freshUpper();
    const r = await inJail(
      "dpkg -i /pkg/ljtest.deb >/dev/null && stat -c '%u %n' /opt/ljtest/hello /opt/ljtest/owned && dpkg -s ljtest | grep Status",
      { upper },
    );
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(lines(r.stdout)).toEqual([
      "0 /opt/ljtest/hello",
      "100 /opt/ljtest/owned",
      "Status: install ok installed",
    ]);
    expect(statSync(join(upper, "opt/ljtest/hello")).uid).toBe(BASE);
    expect(statSync(join(upper, "opt/ljtest/owned")).uid).toBe(BASE + 100);
    expect(readFileSync(join(upper, "var/lib/dpkg/status"), "utf8")).toContain("Package: ljtest");
    expect(statSync(join(upper, "var/lib/dpkg/status")).uid).toBe(BASE);
    expect(readFileSync(join(layer, "var/lib/dpkg/status"), "utf8")).toBe("");
    rmSync(src, { recursive: true, force: true });
  });

  rootTest("the owner keeps one namespace per mapping and no copy of a jail's layers", async () => {
    // A user namespace's descriptor reads as user:[inode], a detached mount's as "/".
    const held = (what: (link: string) => boolean) =>
      readdirSync("/proc/self/fd").filter((fd) => {
        try {
          return what(readlinkSync(`/proc/self/fd/${fd}`));
        } catch {
          return false;
        }
      }).length;
    const namespaces = () => held((l) => l.startsWith("user:["));
    const trees = () => held((l) => l === "/");
    const treesBefore = trees();
    const kids = () =>
      readdirSync("/proc").filter((d) => {
        if (!/^\d+$/.test(d)) return false;
        const st = procStat(Number(d));
        return !!st && st.comm !== "memfd:lj-keeper" && st.ppid === process.pid;
      });
    const kidsBefore = kids();
    const other = { uidBase: BASE + COUNT, count: COUNT };
    expect((await inJail("true", { userns: other })).status).toBe(0);
    const warm = namespaces();
    for (let i = 0; i < 3; i++) expect((await inJail("true", { userns: other })).status).toBe(0);
    expect(namespaces()).toBe(warm);
    expect(trees()).toBe(treesBefore);
    // No helper left unreaped (a finished jail's keeper may still be going away, and the
    // helpers' own exits take a moment on a slow machine: the cgroup v2 guest's emulation);
    // children this process had before (other tests' jails) do not count.
    const children = () => kids().filter((pid) => !kidsBefore.includes(pid));
    for (let i = 0; i < 100 && children().length > 0; i++) await Bun.sleep(100);
    // A leftover shows as "pid (comm) state ... flags": enough to tell which helper it was.
    const describe = (pid: string) => {
      try {
        return readFileSync(`/proc/${pid}/stat`, "utf8").split(" ").slice(0, 9).join(" ");
      } catch {
        return `${pid} gone`;
      }
    };
    expect(children().map(describe)).toEqual([]);
  });

  rootTest("a layer on a filesystem without idmapped mounts fails with a clear error", async () => {
    const ram = join(env.root, "ramfs-layer");
    mkdirSync(ram);
    expect(Bun.spawnSync(["mount", "-t", "ramfs", "lj-test-ramfs", ram]).exitCode).toBe(0);
    try {
      let text = "no error";
      await inJail("true", { layers: [env.world, ram] }).catch((e: Error) => {
        text = e.message;
      });
      expect(text).toContain(`make an idmapped copy of layer ${ram} for the user namespace`);
      expect(text).toContain("idmapped mounts need Linux 5.12+");
      expect(text).toMatch(/: EINVAL$/);
    } finally {
      Bun.spawnSync(["umount", ram]);
    }
  });
});
