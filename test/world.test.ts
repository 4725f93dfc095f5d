import { afterEach, beforeEach, describe, expect, spyOn, test } from "bun:test";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from "node:fs";
import * as fsp from "node:fs/promises";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { runCommand } from "citty";
import * as tar from "tar-stream";
import { createWorld, debianMirror, isEtcSecret } from "../src/build/worlds.ts";
import { worldCommand } from "../src/cli/world.ts";
import { LjError } from "../src/errors.ts";
import {
  defaultWorld,
  listWorlds,
  META_FILE,
  readWorldMeta,
  removeWorld,
  setDefaultWorld,
  worldMounts,
  worldPath,
} from "../src/store/worlds.ts";
import { rootTest } from "./helpers/root.ts";

let root: string;
let scratch: string;
const savedRoot = process.env.LIGHTJAIL_ROOT;

beforeEach(async () => {
  root = await fsp.mkdtemp(join(tmpdir(), "lj-worlds-"));
  scratch = await fsp.mkdtemp(join(tmpdir(), "lj-worlds-scratch-"));
  process.env.LIGHTJAIL_ROOT = root;
});
afterEach(async () => {
  if (savedRoot === undefined) delete process.env.LIGHTJAIL_ROOT;
  else process.env.LIGHTJAIL_ROOT = savedRoot;
  await fsp.rm(root, { recursive: true, force: true });
  await fsp.rm(scratch, { recursive: true, force: true });
});

/** Await a promise (or call a function) that must fail with an LjError; return it. */
async function ljError(p: Promise<unknown> | (() => unknown)): Promise<LjError> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(LjError);
    return e as LjError;
  }
  throw new Error("expected an LjError, got success");
}

type Entry = Parameters<tar.Pack["entry"]>[0] & { body?: string };

async function tarball(entries: Entry[]): Promise<string> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const { body, ...h } of entries) {
    if (body !== undefined) pack.entry({ ...h, size: Buffer.byteLength(body) }, body);
    else pack.entry(h);
  }
  pack.finalize();
  await done;
  const file = join(scratch, `w-${Math.random().toString(36).slice(2)}.tar`);
  writeFileSync(file, Buffer.concat(chunks));
  return file;
}

const miniRootfs = () =>
  tarball([
    { name: "./", type: "directory", mode: 0o755 },
    { name: "./usr/bin/", type: "directory", mode: 0o755 },
    { name: "./usr/bin/sh", body: "#!fake\n", mode: 0o755 },
    { name: "./usr/bin/passwd", body: "suid\n", mode: 0o4755 },
    { name: "./bin", type: "symlink", linkname: "usr/bin" },
    { name: "./etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\n", mode: 0o644 },
    { name: "./dev/null", type: "character-device", mode: 0o666 },
  ]);

const worldsDirEntries = () => readdirSync(join(root, "worlds")).sort();

describe("host world", () => {
  test("copies /etc without secrets and borrows /usr read-only", async () => {
    const w = await createWorld("host", "host");
    const p = worldPath("host");
    expect(w.path).toBe(p);
    expect(p).toBe(join(root, "worlds", "host"));
    expect(readFileSync(join(p, "etc/passwd"), "utf8")).toBe(readFileSync("/etc/passwd", "utf8"));
    for (const secret of ["shadow", "shadow-", "gshadow", "gshadow-"]) {
      expect(existsSync(join(p, "etc", secret))).toBe(false);
    }
    if (existsSync(join(p, "etc/ssh"))) {
      expect(readdirSync(join(p, "etc/ssh")).filter((f) => f.includes("key"))).toEqual([]);
    }
    if (existsSync(join(p, "etc/sudoers.d"))) expect(readdirSync(join(p, "etc/sudoers.d"))).toEqual([]);
    if (existsSync(join(p, "etc/ssl/private"))) expect(readdirSync(join(p, "etc/ssl/private"))).toEqual([]);
    // Nothing private survives anywhere: no unreadable files, no PEM private keys.
    const walk = (d: string): void => {
      for (const e of readdirSync(d)) {
        const f = join(d, e);
        const st = lstatSync(f);
        if (st.isDirectory()) walk(f);
        else if (st.isFile()) {
          expect({ f, otherRead: (st.mode & 0o004) !== 0 }).toEqual({ f, otherRead: true });
          expect(readFileSync(f, "latin1")).not.toMatch(/PRIVATE KEY-----/);
        }
      }
    };
    walk(join(p, "etc"));
    expect(readdirSync(join(p, "root"))).toEqual([]);
    expect(readdirSync(join(p, "home"))).toEqual([]);
    expect(statSync(join(p, "root")).mode & 0o777).toBe(0o700);
    expect(statSync(join(p, "tmp")).mode & 0o7777).toBe(0o1777);
    for (const d of ["proc", "dev", "sys", "run", "var/tmp", "usr"])
      expect(statSync(join(p, d)).isDirectory()).toBe(true);
    expect(readdirSync(join(p, "usr"))).toEqual([]);
    const mounts = await worldMounts("host");
    // The host's /usr directory by directory, layered (an overlay built over the world installs
    // into itself), but /usr/local: a plain bind, since it may hold the state root.
    expect(mounts).toContainEqual({ src: "/usr/bin", dst: "/usr/bin", readonly: true, layered: true });
    expect(mounts).toContainEqual({ src: "/usr/local", dst: "/usr/local", readonly: true });
    expect(mounts.some((m) => m.dst === "/usr")).toBe(false);
    // usrmerge links mirror the host's own relative targets; real directories become mounts.
    for (const d of ["bin", "sbin", "lib", "lib64"]) {
      const host = lstatSync(`/${d}`, { throwIfNoEntry: false });
      if (host?.isSymbolicLink()) expect(readlinkSync(join(p, d))).toBe(readlinkSync(`/${d}`));
      else if (host?.isDirectory())
        expect(mounts).toContainEqual({ src: `/${d}`, dst: `/${d}`, readonly: true, layered: true });
    }
    const meta = await readWorldMeta("host");
    expect(meta?.source).toBe("host");
    expect(meta?.name).toBe("host");
    expect(worldsDirEntries()).toEqual(["host"]);
  });

  test("secret patterns", () => {
    for (const s of [
      "shadow",
      "gshadow-",
      "ssh/ssh_host_ed25519_key",
      "ssh/ssh_host_rsa_key.pub",
      "sudoers.d/90-cloud",
      "ssl/private/server.key",
      "krb5.keytab",
      "wireguard/wg0.conf",
    ]) {
      expect({ s, secret: isEtcSecret(s) }).toEqual({ s, secret: true });
    }
    for (const s of ["passwd", "group", "ssh/sshd_config", "ssl/certs/ca-certificates.crt", "sudoers.d"]) {
      expect({ s, secret: isEtcSecret(s) }).toEqual({ s, secret: false });
    }
  });
});

describe("tar world", () => {
  test("from a generated rootfs tarball", async () => {
    const file = await miniRootfs();
    const w = await createWorld("mini", `tar:${file}`);
    const p = w.path;
    expect(readlinkSync(join(p, "bin"))).toBe("usr/bin");
    expect(statSync(join(p, "usr/bin/passwd")).mode & 0o7777).toBe(0o4755);
    expect(existsSync(join(p, "dev/null"))).toBe(false);
    expect(existsSync(join(p, "dev"))).toBe(true);
    expect(w.meta?.source).toBe(`tar:${file}`);
    expect(await worldMounts("mini")).toEqual([]);
    expect(JSON.parse(readFileSync(join(p, META_FILE), "utf8")).version).toBe(1);
    expect(worldsDirEntries()).toEqual(["mini"]);
  });

  test("a hostile tarball is rejected and leaves nothing behind", async () => {
    const file = await tarball([
      { name: "etc/ok", body: "ok" },
      { name: "evil", type: "symlink", linkname: "/" },
      { name: "evil/tmp/pwned", body: "x" },
    ]);
    const err = await ljError(createWorld("bad", `tar:${file}`));
    expect(err.kind).toBe("invalid");
    expect(err.exitCode).toBe(65);
    expect(err.message).toContain("evil/tmp/pwned");
    expect(err.message).toContain("through-symlink");
    expect(worldsDirEntries()).toEqual([]);
  });

  test("an existing name is a conflict unless forced", async () => {
    const file = await miniRootfs();
    await createWorld("w", `tar:${file}`);
    const err = await ljError(createWorld("w", `tar:${file}`));
    expect(err.kind).toBe("conflict");
    expect(err.exitCode).toBe(73);
    expect(err.hint).toContain("--force");
    writeFileSync(join(root, "worlds/w/marker"), "old");
    await createWorld("w", `tar:${file}`, { force: true });
    expect(existsSync(join(root, "worlds/w/marker"))).toBe(false);
    expect(worldsDirEntries()).toEqual(["w"]);
  });
});

describe("list, default, rm", () => {
  test("the only world is the default; several need an explicit one", async () => {
    expect(await listWorlds()).toEqual([]);
    let err = await ljError(defaultWorld());
    expect(err.kind).toBe("not-found");
    expect(err.hint).toContain("lj world create");

    const file = await miniRootfs();
    await createWorld("a", `tar:${file}`);
    expect(await defaultWorld()).toBe("a");
    expect((await listWorlds()).map((w) => [w.name, w.isDefault])).toEqual([["a", true]]);

    await createWorld("b", `tar:${file}`);
    err = await ljError(defaultWorld());
    expect(err.kind).toBe("usage");
    expect(err.hint).toContain("lj world default");
    expect((await listWorlds()).map((w) => [w.name, w.isDefault])).toEqual([
      ["a", false],
      ["b", false],
    ]);

    await setDefaultWorld("b");
    expect(await defaultWorld()).toBe("b");
    expect((await listWorlds()).map((w) => [w.name, w.isDefault])).toEqual([
      ["a", false],
      ["b", true],
    ]);

    err = await ljError(removeWorld("b"));
    expect(err.kind).toBe("conflict");
    expect(err.message).toContain("default");
    expect(existsSync(join(root, "worlds/b"))).toBe(true);

    await removeWorld("b", { force: true });
    expect(existsSync(join(root, "worlds/b"))).toBe(false);
    expect(await defaultWorld()).toBe("a");
    await removeWorld("a");
    expect(worldsDirEntries()).toEqual([]);

    err = await ljError(removeWorld("a"));
    expect(err.kind).toBe("not-found");
    err = await ljError(setDefaultWorld("nope"));
    expect(err.kind).toBe("not-found");
  });

  test("worldPath of a missing world hints at lj world create", async () => {
    const err = await ljError(() => worldPath("missing"));
    expect(err.kind).toBe("not-found");
    expect(err.exitCode).toBe(66);
    expect(err.message).toContain('"missing"');
    expect(err.hint).toContain("lj world create missing");
  });

  test("FreeBSD: the default world is named after uname -r", async () => {
    const err = await ljError(defaultWorld({ platform: "freebsd" }));
    expect(err.kind).toBe("not-found");
    expect(err.hint).toContain(`freebsd:${release()}`);
    mkdirSync(join(root, "worlds", release()), { recursive: true });
    mkdirSync(join(root, "worlds", "other"));
    expect(await defaultWorld({ platform: "freebsd" })).toBe(release());
  });

  test("hand-made worlds without metadata are listed", async () => {
    mkdirSync(join(root, "worlds", "manual", "etc"), { recursive: true });
    mkdirSync(join(root, "worlds", ".tmp-x-123"));
    const ws = await listWorlds();
    expect(ws.map((w) => [w.name, w.meta])).toEqual([["manual", null]]);
    expect(await worldMounts("manual")).toEqual([]);
  });
});

describe("bad input", () => {
  test("invalid names", async () => {
    for (const name of ["", "a/b", ".hidden", "..", "-flag", "a b", "ü", "x".repeat(65)]) {
      const err = await ljError(createWorld(name, "host"));
      expect({ name, kind: err.kind, exit: err.exitCode }).toEqual({ name, kind: "usage", exit: 64 });
      expect(err.message).toContain("invalid world name");
      expect(err.code).toBe("invalid-world-name");
    }
    expect((await ljError(() => worldPath("a/b"))).message).toContain("slash");
    expect((await ljError(() => worldPath(".x"))).message).toContain("starts with a dot");
    expect(existsSync(join(root, "worlds"))).toBe(false);
  });

  test("unknown and malformed sources", async () => {
    let err = await ljError(createWorld("w", "docker:alpine"));
    expect(err.kind).toBe("usage");
    expect(err.message).toContain("unknown world source");
    expect(err.hint).toContain("debootstrap");
    err = await ljError(createWorld("w", "debootstrap:Bad!"));
    expect(err.kind).toBe("usage");
    err = await ljError(createWorld("w", "tar:"));
    expect(err.kind).toBe("usage");
    err = await ljError(createWorld("w", `tar:${join(scratch, "nope.tar")}`));
    expect(err.kind).toBe("not-found");
    err = await ljError(createWorld("w", "freebsd:latest"));
    expect(err.kind).toBe("usage");
    if (process.platform !== "freebsd") {
      err = await ljError(createWorld("w", "freebsd:14.1-RELEASE"));
      expect(err.kind).toBe("unavailable");
      expect(err.message).toContain("only be created on FreeBSD");
    }
    expect(existsSync(join(root, "worlds", "w"))).toBe(false);
  });
});

describe("debootstrap", () => {
  test("the mirror comes from the host's apt sources", () => {
    const apt = join(scratch, "apt");
    mkdirSync(join(apt, "sources.list.d"), { recursive: true });
    writeFileSync(
      join(apt, "sources.list.d", "debian.sources"),
      [
        "Types: deb",
        "URIs: http://mirror.example/debian-security",
        "Suites: bookworm-security",
        "Components: main",
        "",
        "Types: deb",
        "URIs: http://mirror.example/debian/",
        "Suites: bookworm bookworm-updates",
        "Components: main",
        "",
      ].join("\n"),
    );
    writeFileSync(
      join(apt, "sources.list.d", "other.list"),
      "deb [arch=amd64] https://vendor.example/apt stable main\n",
    );
    expect(debianMirror("bookworm", apt)).toBe("http://mirror.example/debian");
    expect(debianMirror("trixie", apt)).toBe("http://mirror.example/debian");
    expect(debianMirror("bookworm", join(scratch, "none"))).toBe("http://deb.debian.org/debian");
    writeFileSync(join(apt, "sources.list"), "# old style\ndeb http://old.example/debian trixie main\n");
    expect(debianMirror("trixie", apt)).toBe("http://old.example/debian");
  });

  rootTest(
    "a real minbase Debian world from the mirror",
    async () => {
      const lines: string[] = [];
      const w = await createWorld("deb", "debootstrap", { onProgress: (l) => lines.push(l) });
      expect(lines.length).toBeGreaterThan(5);
      expect(existsSync(join(w.path, "etc/debian_version"))).toBe(true);
      expect(existsSync(join(w.path, "usr/bin/apt-get"))).toBe(true);
      expect(w.meta?.source).toBe("debootstrap:bookworm");
      expect(await worldMounts("deb")).toEqual([]);
      expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(root);
      expect(worldsDirEntries()).toEqual(["deb"]);
    },
    15 * 60_000,
  );
});

describe("lj world (CLI)", () => {
  async function cli(args: string[]): Promise<string> {
    let stdout = "";
    const spy = spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      stdout += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString();
      return true;
    });
    try {
      await runCommand(worldCommand, { rawArgs: args });
    } finally {
      spy.mockRestore();
    }
    return stdout;
  }

  test("create, list --json, default, rm", async () => {
    const file = await miniRootfs();
    expect(await cli(["create", "one", "--from", `tar:${file}`])).toBe("one\n");
    const listed = JSON.parse(await cli(["list", "--json"]));
    expect(listed).toEqual([
      expect.objectContaining({ name: "one", default: true, source: `tar:${file}`, mounts: [] }),
    ]);
    expect(await cli(["list"])).toMatch(/^NAME\s+DEFAULT\s+SOURCE\s+CREATED\none\s+\*\s+tar:/);
    expect(await cli(["default"])).toBe("one\n");
    await cli(["default", "one"]);
    const unconfirmed = await ljError(cli(["rm", "one"]));
    expect(unconfirmed.code).toBe("confirm-needed");
    const err = await ljError(cli(["rm", "one", "--confirm", "one"]));
    expect(err.kind).toBe("conflict");
    await cli(["rm", "one", "--force", "--confirm", "one"]);
    expect(await listWorlds()).toEqual([]);
    const bad = await ljError(cli(["create", "x/y", "--from", "host"]));
    expect(bad.exitCode).toBe(64);
  });
});
